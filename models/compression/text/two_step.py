"""Tokens coded in two steps: "one of the tokens this text has used" or "a new one", then which new one.

Why: the range coder quantises each distribution to a grid of 2^24 units, and its leaky quantisation gives
every symbol at least one unit, so that a token the model thought impossible can still be coded. Over a
vocabulary of V tokens that floor takes V / 2^24 of the probability away from the token that comes:
-log2(1 - V / 2^24) bits a token. Gemma 3 has 262,144 tokens: 1/64 of the grid, 0.023 bits a token, about
100 bytes of a 19 kB file of alice29 (SmolLM2, 49,152 tokens: 0.004 bits). A text uses a few thousand
distinct tokens; coding "which of those, or a new one" first leaves a floor of (k + 1) / 2^24, and only
the first occurrence of each token pays the full vocabulary's floor once more. The cross-entropy is the
same: p(token) = p(seen part) * p(token | seen part) whichever way it is split. (ts_zip and Nacrith code
over the whole vocabulary in one step.)

Both sides keep the same set of tokens seen so far, in the order they first came, and add a step's tokens
after all of its lanes were coded; every number given to the coder is computed from the same float32
probabilities in the same order (float64 sums), so the decoder's distributions are bit-identical.

Order of the symbols in the range coder's queue, per step: the first step of every lane (one ``encode`` of
the batch), then the second step of each lane that coded a new token, lane by lane.
"""

from __future__ import annotations

import numpy as np


class TwoStepCoder:
    """The seen-token set of one file and the two coding steps. ``family`` is the range coder's
    categorical family (``constriction.stream.model.Categorical(perfect=False)``)."""

    def __init__(self, vocab: int, family) -> None:
        self.vocab = vocab
        self.family = family
        self.index = np.full(vocab, -1, dtype=np.int64)  # token -> its place among the seen tokens, -1 if unseen
        self.seen = np.zeros(0, dtype=np.int64)  # the seen tokens in the order they first came

    def _first(self, probs: np.ndarray) -> np.ndarray:
        """(lanes, k + 1) float64: the seen tokens' probabilities and, last, the rest's ("a new token")."""
        sub = probs[:, self.seen].astype(np.float64)
        rest = probs.sum(axis=1, dtype=np.float64) - sub.sum(axis=1)
        table = np.concatenate([sub, np.maximum(rest, 0.0)[:, None]], axis=1)
        table[~(table.sum(axis=1) > 0)] = 1.0  # never happens with a softmax; the coder needs a positive sum
        # constriction 0.5.0 reads the array's memory row by row whatever its strides, and the gather above
        # yields a column-major array: without this copy it codes (and decodes) other probabilities
        return np.ascontiguousarray(table)

    @staticmethod
    def _second(row: np.ndarray, unseen: np.ndarray) -> np.ndarray:
        """(1, V - k) float64: a lane's probabilities of the tokens not seen yet."""
        rest = row[unseen].astype(np.float64)
        if not rest.sum() > 0:
            rest[:] = 1.0
        return rest[None, :]

    def encode(self, encoder, probs: np.ndarray, symbols: np.ndarray) -> None:
        """Queue ``symbols`` (lanes,) under ``probs`` (lanes, vocab) float32 onto ``encoder``."""
        symbols = np.asarray(symbols, dtype=np.int64)
        places = self.index[symbols]
        new = np.flatnonzero(places < 0)
        if len(self.seen):
            first = np.where(places < 0, len(self.seen), places).astype(np.int32)
            encoder.encode(first, self.family, self._first(probs))
        if len(new):
            unseen = np.flatnonzero(self.index < 0)
            for lane in new:
                place = np.searchsorted(unseen, symbols[lane])
                encoder.encode(np.array([place], dtype=np.int32), self.family, self._second(probs[lane], unseen))
        self._learn(symbols)

    def decode(self, decoder, probs: np.ndarray) -> np.ndarray:
        """The next symbols (lanes,) int64 from ``decoder`` under ``probs`` (lanes, vocab) float32."""
        k = len(self.seen)
        symbols = np.full(probs.shape[0], -1, dtype=np.int64)
        if k:
            first = np.asarray(decoder.decode(self.family, self._first(probs)), dtype=np.int64)
            old = first < k
            symbols[old] = self.seen[first[old]]
        new = np.flatnonzero(symbols < 0)
        if len(new):
            unseen = np.flatnonzero(self.index < 0)
            for lane in new:
                place = int(np.asarray(decoder.decode(self.family, self._second(probs[lane], unseen)))[0])
                symbols[lane] = unseen[place]
        self._learn(symbols)
        return symbols

    def _learn(self, symbols: np.ndarray) -> None:
        """Add a step's new tokens, in lane order (a token new to two lanes at once enters once)."""
        for token in symbols:
            if self.index[token] < 0:
                self.index[token] = len(self.seen)
                self.seen = np.append(self.seen, token)

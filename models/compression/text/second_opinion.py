"""A second model's next-token distribution over the first model's tokens: two models in one coder.

The coder codes the first model's tokens. The second model reads the same bytes through its own tokenizer,
lane by lane, and its next-token distribution is folded onto the first model's vocabulary: each of its
tokens counts for the longest first-model token its bytes begin with (``fold_map``). Mixed linearly with the
first model's distribution (``mix``), that is one distribution over the first model's tokens, which the
mixing coder and the range coder take as they take one model's. Measured before it was built
(``benchmarks/model_ensemble.py``, docs/BENCHMARKS.md): Gemma 3 270M with SmolLM2-135M, alice29, -2.1 %.

How a lane's second-model tokens follow the text: after each coded token its bytes are appended, and the
lane's last second-model token and the new bytes are tokenized again (a word's tokens change as it grows:
" Din" + "ah" -> " Dinah"). Tokens that changed are taken out of the key/value cache by masking their
positions, the new ones appended. Lanes append different numbers of tokens a step, so a step's batch is
padded and the pads masked too. Encoder and decoder feed the same bytes in the same order, so they run the
same computation.

Two folds (``SecondOpinion.shared``, recorded in the file):
- longest (the first files of the ``two-models`` preset): each second-model token counts for the longest
  first-model token its bytes begin with. Where the first model's token is the coarser ("Alice's" against the
  second model's "Alice" + "'s"), the second model gives the token the first model codes no probability.
- shared (the ``two-models-shared`` rule): each second-model token's probability is shared among the
  first-model tokens that begin with its bytes, and the longest one its bytes begin with, in proportion to the
  first model's probabilities of them: the second model says how the next bytes begin, the first model how
  they go on. Measured: docs/BENCHMARKS.md, "the shared fold".

The first model's share in the mixture is fixed (``weight``), or, with ``learn`` (the ``two-models-learned``
rule), learned online per context: which band the first model's and the second model's largest probabilities
fall in, and whether the lane's text ends in a letter (a word that may go on, where the second model's last
token may be a piece of a longer one). After each token, the context's weight takes one gradient step on
the bits that token cost (as the mixer's weights do, ``mixing.py``). Measured on a recording of alice29:
docs/BENCHMARKS.md, "learned weights".

With ``geometric`` (the ``two-models-geometric`` rule) the coder's distribution is half that linear mixture and
half a **geometric mixture**, g(x) proportional to f(x)^a q(x)^b (``GeometricWeights``: geometric mixing,
Mattern 2012, of which PAQ's logistic mixing is the two-symbol case; a product of experts, Hinton 2002), its
exponents learned per context the same way. The linear mixture is right where one model knows and the other
does not (a sum keeps the larger); the geometric one where both know a little (a product sharpens where they
agree), and its learned exponents (mostly summing to less than 1) also flatten what two 4-bit models are too
sure of. Measured: docs/BENCHMARKS.md, "geometric mixing".
"""

from __future__ import annotations

import bisect
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from models.core.errors import InputError
from models.engines import kv_cache


def token_bytes(tokenizer, pieces_table: list[bytes] | None) -> list[bytes | None]:
    """The bytes of every token id (None for special, control and unused tokens): ``pieces_table`` (a
    byte-level BPE's, from ``lm_codec.TokenMap``) or a SentencePiece vocabulary's pieces, "▁" read as a
    space and "<0xNN>" as that byte."""
    special = set(tokenizer.all_special_ids)
    if pieces_table is not None:
        return [None if i in special or not b else b for i, b in enumerate(pieces_table)]
    out: list[bytes | None] = []
    for i, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if piece is None or i in special:
            out.append(None)
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            out.append(bytes([int(piece[3:5], 16)]))
        elif piece.startswith("<") and piece.endswith(">"):
            out.append(None)
        else:
            out.append(piece.replace("\u2581", " ").encode("utf-8"))
    return out


def fold_map(second: list[bytes | None], first: list[bytes | None]) -> np.ndarray:
    """For every token of the second vocabulary, the first vocabulary's longest token its bytes begin with,
    or len(first) where there is none: (len(second),) int64."""
    index = {b: i for i, b in enumerate(first) if b}
    out = np.full(len(second), len(first), dtype=np.int64)
    for u, b in enumerate(second):
        for k in range(len(b or b""), 0, -1):
            if b[:k] in index:
                out[u] = index[b[:k]]
                break
    return out


def share_pairs(second: list[bytes | None], first: list[bytes | None], fold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The shared fold's (second token, first token) pairs: every first-model token whose bytes begin with a
    second-model token's, and that token's ``fold`` (the longest first token its bytes begin with): two
    (pairs,) int64 arrays, the second tokens' ids ascending."""
    ordered = sorted((b, g) for g, b in enumerate(first) if b)
    keys = [b for b, _ in ordered]
    rows, cols = [], []
    for u, b in enumerate(second):
        if not b:
            continue
        found = []
        at = bisect.bisect_left(keys, b)
        while at < len(keys) and keys[at].startswith(b):
            found.append(ordered[at][1])
            at += 1
        if fold[u] < len(first) and fold[u] not in found:
            found.append(int(fold[u]))
        rows += [u] * len(found)
        cols += found
    return np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64)


def pair_matrices(rows: np.ndarray, cols: np.ndarray, second_vocab: int, first_vocab: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``share_pairs`` as two sparse 0/1 matrices (CSR, float32): (second vocab, first vocab) and its transpose.
    Two sparse products a step cost a quarter of gathering and scattering the pairs (measured: 8 against 31 ms
    for six lanes)."""

    def csr(r: np.ndarray, c: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
        order = np.argsort(r, kind="stable")
        crow = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=shape[0]))])
        with warnings.catch_warnings():  # torch calls all of CSR "beta"; sparse @ dense is all this uses
            warnings.simplefilter("ignore")
            return torch.sparse_csr_tensor(torch.from_numpy(crow), torch.from_numpy(c[order]),
                                           torch.ones(len(r)), shape)

    return csr(rows, cols, (second_vocab, first_vocab)), csr(cols, rows, (first_vocab, second_vocab))


def mix(first: np.ndarray, second: np.ndarray, weight: float | np.ndarray) -> np.ndarray:
    """weight * first + (1 - weight) * second, row by row: (lanes, vocab) float32; ``weight`` a number or
    (lanes, 1) float64, one per row."""
    return (weight * first + (1.0 - weight) * second).astype(np.float32)


BANDS = (0.2, 0.4, 0.6, 0.8, 0.95)  # the learned weights' context: a model's largest probability falls in one
MAX_LOGIT = 8.0  # |logit| bound of a learned weight: the first model's share stays within 0.0003 and 0.9997


class LearnedWeights:
    """The first model's share per context, learned online (``SecondOpinion`` with ``learn``).

    A context is (band of the first model's largest probability, band of the second model's, whether the
    lane's text ends in an ASCII letter); its share is sigmoid(theta), theta starting at logit(``start``). After
    each token: theta += rate * w (1 - w) (f(x) - q(x)) / p(x), the gradient of -ln p(x) for the mixture
    p = w f + (1 - w) q (Python floats, in row order, so that encoder and decoder agree exactly)."""

    def __init__(self, start: float, rate: float) -> None:
        self.start, self.rate = math.log(start / (1.0 - start)), rate
        self.theta: dict[tuple[int, int, int], float] = {}

    @staticmethod
    def context(first_top: float, second_top: float, in_word: bool) -> tuple[int, int, int]:
        return bisect.bisect_left(BANDS, first_top), bisect.bisect_left(BANDS, second_top), int(in_word)

    def share(self, key: tuple[int, int, int]) -> float:
        return 1.0 / (1.0 + math.exp(-self.theta.get(key, self.start)))

    def update(self, key: tuple[int, int, int], fx: float, qx: float) -> None:
        t, w = self.theta.get(key, self.start), self.share(key)
        p = w * fx + (1.0 - w) * qx
        if p > 0.0:
            self.theta[key] = min(MAX_LOGIT, max(-MAX_LOGIT, t + self.rate * w * (1.0 - w) * (fx - qx) / p))


GEOMETRIC_START = (0.7, 0.25)  # the exponents (first model, second model) before any learning
GEOMETRIC_SHARE = 0.5  # the geometric mixture's share of the coder's distribution; the linear mixture has the rest
GEOMETRIC_BOUND = 2.0  # each exponent stays within 0 and this
TINY = 1e-30  # a probability of 0 counts as this in a logarithm


@dataclass
class _Row:
    """What a mixed row's learning needs once its token is known (``SecondOpinion.learn``)."""
    lane: int
    key: tuple[int, int, int]
    first: np.ndarray
    second: np.ndarray
    weight: float  # the first model's share in the linear mixture
    geometric: np.ndarray | None = None
    mean_lf: float = 0.0
    mean_lq: float = 0.0


def blend(linear: np.ndarray, geometric: np.ndarray) -> np.ndarray:
    """The coder's row with the geometric mixture on: its share of ``geometric``, the rest ``linear``."""
    return (1.0 - GEOMETRIC_SHARE) * linear + GEOMETRIC_SHARE * geometric


def blended_probability(weight: float, fx: float, qx: float, gx: float) -> float:
    """A token's probability in ``blend`` of the linear mixture (first model's share ``weight``) and g."""
    return (1.0 - GEOMETRIC_SHARE) * (weight * fx + (1.0 - weight) * qx) + GEOMETRIC_SHARE * gx


class GeometricWeights:
    """The geometric mixture's exponents per context (``LearnedWeights.context``), learned online.

    g(x) = f(x)^a q(x)^b / Z over the vocabulary (``mixture``); the coder codes with
    p = (1 - GEOMETRIC_SHARE) * linear + GEOMETRIC_SHARE * g. After each token, (a, b) take one gradient step
    on -ln p(x): a += rate * s * (ln f(x) - E_g[ln f]), likewise b with q, where s = GEOMETRIC_SHARE * g(x) / p(x)
    (Mattern, "Mixing strategies in data compression", DCC 2012). Python floats, in row order."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.exponents: dict[tuple[int, int, int], tuple[float, float]] = {}

    def get(self, key: tuple[int, int, int]) -> tuple[float, float]:
        return self.exponents.get(key, GEOMETRIC_START)

    @staticmethod
    def mixture(first: np.ndarray, second: np.ndarray, exponents: tuple[float, float]
                ) -> tuple[np.ndarray, float, float]:
        """One row: g (vocab,) float32 for ``first`` and ``second`` (vocab,) probabilities, and E_g[ln f], E_g[ln q]."""
        lf = np.log(np.maximum(first, TINY, dtype=np.float32))
        lq = np.log(np.maximum(second, TINY, dtype=np.float32))
        z = np.float32(exponents[0]) * lf + np.float32(exponents[1]) * lq
        z -= z.max()
        g = np.exp(z)
        g /= g.sum(dtype=np.float64)
        # numpy's own sums, not a BLAS dot (whose threads could order the sum differently in the decoder)
        return g, float(np.sum(g * lf, dtype=np.float64)), float(np.sum(g * lq, dtype=np.float64))

    def update(self, key: tuple[int, int, int], fx: float, qx: float, gx: float, px: float,
               mean_lf: float, mean_lq: float) -> None:
        """The step for the token that came: its probabilities under f, q, g and the coded mixture p."""
        if px <= 0.0:
            return
        a, b = self.get(key)
        s = self.rate * GEOMETRIC_SHARE * gx / px
        lf, lq = math.log(max(fx, TINY)), math.log(max(qx, TINY))
        self.exponents[key] = (min(GEOMETRIC_BOUND, max(0.0, a + s * (lf - mean_lf))),
                               min(GEOMETRIC_BOUND, max(0.0, b + s * (lq - mean_lq))))


class SecondOpinion:
    """The second model over all lanes, in lock-step with the coder.

    ``runner``: the second model's ``lm_codec._Runner``; ``encode``: bytes -> its token ids, or None when
    the bytes do not end on a whole character (the lane then waits for the rest); ``fold``: ``fold_map``;
    ``first_pieces``: the first model's token bytes (``token_bytes``), to read what the coder coded;
    ``limit``: the most tokens a lane keeps in view (the second model's context); ``start_id``: its start
    token; ``weight``: the first model's share in the mixture (0 < weight < 1); ``shared``: the shared fold's
    ``share_pairs`` (None: the longest fold); ``learn``: the learning rate of ``LearnedWeights`` starting at
    ``weight`` (0: the share stays ``weight``); ``geometric``: the learning rate of ``GeometricWeights``
    (0: the linear mixture alone)."""

    def __init__(self, runner, encode, pieces: list[bytes | None], fold: np.ndarray,
                 first_pieces: list[bytes | None], limit: int, start_id: int, weight: float,
                 shared: tuple[np.ndarray, np.ndarray] | None = None, learn: float = 0.0,
                 geometric: float = 0.0) -> None:
        if limit < 8:
            raise InputError("the second model's context is too short")
        if not 0.0 < weight < 1.0:
            raise InputError(f"the first model's weight must be between 0 and 1 (got {weight})")
        self.runner, self.encode, self.pieces = runner, encode, pieces
        self.fold = torch.from_numpy(fold)
        self.first_pieces = [b or b"" for b in first_pieces]
        self.first_vocab, self.limit, self.start_id, self.weight = len(first_pieces), limit, start_id, weight
        self.shared = None if shared is None else pair_matrices(*shared, len(pieces), len(first_pieces))
        self.learned = LearnedWeights(weight, learn) if learn else None
        self.geometric = GeometricWeights(geometric) if geometric else None
        self._pending: list[_Row] = []

    def start_ids(self, lanes: int, prefix: list[int]) -> None:
        """``start`` from the first model's tokens."""
        self.start(lanes, b"".join(self.first_pieces[t] for t in prefix))

    def advance_ids(self, coded: dict[int, int]) -> None:
        """``advance`` by the first model's token each lane just coded (the learned weights learn first)."""
        self.learn(coded)
        self.advance({lane: self.first_pieces[t] for lane, t in coded.items()})

    def learn(self, coded: dict[int, int]) -> None:
        """The steps of the learned share and the geometric exponents for the rows the last ``mixed`` mixed, by
        the tokens that came."""
        for row in self._pending:
            x = coded[row.lane]
            fx, qx = float(row.first[x]), float(row.second[x])
            if self.geometric is not None:
                gx = float(row.geometric[x])
                self.geometric.update(row.key, fx, qx, gx, blended_probability(row.weight, fx, qx, gx),
                                      row.mean_lf, row.mean_lq)
            if self.learned is not None:
                self.learned.update(row.key, fx, qx)
        self._pending = []

    def start(self, lanes: int, prefix: bytes) -> None:
        """Every lane reads ``prefix`` (the bytes the first model read after its start token)."""
        self.text = [bytearray(prefix) for _ in range(lanes)]
        self.done = [0] * lanes  # bytes of each lane's text its tokens cover
        self._rebuild()

    def _rebuild(self) -> None:
        """All lanes anew (the cache is shared): each lane's last ``limit // 2`` tokens' worth of text."""
        n = len(self.text)
        self.tokens: list[list[int]] = [[] for _ in range(n)]
        self.starts: list[list[int]] = [[] for _ in range(n)]  # byte offset where each token starts
        rows = []
        for lane in range(n):
            ids, offsets = self._tail_tokens(lane)
            self.tokens[lane], self.starts[lane] = ids, offsets
            rows.append([self.start_id] + ids)
        width = max(len(r) for r in rows)
        # positions in memory, masked ones included: when they run out, the lanes are read anew (this)
        self.cache = kv_cache.preallocated(self.runner.config, self.limit)
        self.live = torch.zeros(n, 0, dtype=torch.bool)
        self.count = [0] * n
        self.probs = self._forward(rows, width)

    def _tail_tokens(self, lane: int) -> tuple[list[int], list[int]]:
        text = bytes(self.text[lane])
        ids = self.encode(text)
        cut = 0
        while ids is None and cut < min(4, len(text)):  # an unfinished character at the end waits
            cut += 1
            ids = self.encode(text[:len(text) - cut])
        ids = ids or []
        offsets, at = [], 0
        for t in ids:
            offsets.append(at)
            at += len(self.pieces[t] or b"")
        keep = self.limit // 2
        if len(ids) > keep:
            ids, offsets = ids[-keep:], offsets[-keep:]
        self.done[lane] = at
        return ids, offsets

    def _forward(self, rows: list[list[int] | None], width: int) -> torch.Tensor:
        """Append each lane's ``rows[lane]`` (None or []: nothing) as one padded step; the next-token
        distributions (lanes, second vocab) after each lane's last token (zeros for lanes fed nothing)."""
        n = len(rows)
        feed = torch.zeros(n, width, dtype=torch.long)
        new_live = torch.zeros(n, width, dtype=torch.bool)
        positions = torch.zeros(n, width, dtype=torch.long)
        last = torch.zeros(n, dtype=torch.long)
        for lane, row in enumerate(rows):
            row = row or []
            feed[lane, :len(row)] = torch.tensor(row, dtype=torch.long)
            new_live[lane, :len(row)] = True
            positions[lane] = self.count[lane] + torch.arange(width).clamp(max=max(len(row) - 1, 0))
            last[lane] = max(len(row) - 1, 0)
            self.count[lane] += len(row)
        self.live = torch.cat([self.live, new_live], dim=1)
        mask = self.live.long()
        with torch.inference_mode():
            out = self.runner.body(input_ids=feed, attention_mask=mask, position_ids=positions, cache=self.cache,
                                   use_cache=True)
            self.cache = out.cache
            hidden = out.last_hidden_state[torch.arange(n), last]
            probs = torch.softmax(self.runner.logits(hidden), dim=-1)
        fed = torch.tensor([bool(r) for r in rows])
        return probs * fed[:, None]

    def mixed(self, active: list[int], first: np.ndarray) -> np.ndarray:
        """``first`` (len(active), first vocab) mixed with the second model's distribution folded onto the
        first model's tokens, ``self.weight`` for the first: float32. A lane the second model has no opinion for
        this step (it waits for the rest of a character) keeps the first model's row."""
        p = self.probs[active]
        if self.shared is None:
            folded = torch.zeros(len(active), self.first_vocab + 1).index_add_(1, self.fold, p)[:, :self.first_vocab]
        else:
            folded = self._shared(p, torch.from_numpy(np.ascontiguousarray(first, dtype=np.float32)))
        total = folded.sum(-1, keepdim=True)
        has = (total[:, 0] > 0).numpy()
        out = first.astype(np.float32, copy=True)
        self._pending = []
        if has.any():
            q = (folded[has] / total[has]).numpy()
            firsts = first[has]  # a copy of each row (Gemma: 262,144 floats a lane): taken once
            weight: float | np.ndarray = self.weight
            if self.learned is None and self.geometric is None:
                out[has] = mix(firsts, q, weight)
                return out
            lanes = [lane for lane, h in zip(active, has, strict=True) if h]
            keys = [LearnedWeights.context(float(f.max()), float(r.max()), bytes(self.text[lane][-1:]).isalpha())
                    for lane, f, r in zip(lanes, firsts, q, strict=True)]
            if self.learned is not None:
                weight = np.array([[self.learned.share(k)] for k in keys])
            linear = mix(firsts, q, weight)
            shares = np.broadcast_to(np.asarray(weight, dtype=np.float64).reshape(-1, 1), (len(lanes), 1))
            for i, (lane, key) in enumerate(zip(lanes, keys, strict=True)):
                row = _Row(lane, key, firsts[i], q[i], float(shares[i, 0]))
                if self.geometric is not None:
                    row.geometric, row.mean_lf, row.mean_lq = self.geometric.mixture(firsts[i], q[i],
                                                                                     self.geometric.get(key))
                    linear[i] = blend(linear[i], row.geometric)
                self._pending.append(row)
            out[has] = linear
        return out

    def _shared(self, p: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """The shared fold of ``p`` (rows, second vocab) given the first model's ``first`` (rows, first vocab):
        q[g] = sum over pairs (u, g) of p[u] * first[g] / (sum of first over u's pairs): (rows, first vocab)."""
        pairs, pairs_t = self.shared
        z = (pairs @ first.T.contiguous()).T
        ratio = torch.where(z > 0, p / z.clamp_min(1e-30), torch.zeros_like(p))
        return (pairs_t @ ratio.T.contiguous()).T * first

    def advance(self, appended: dict[int, bytes]) -> None:
        """Each lane in ``appended`` reads those bytes (the token the coder just coded)."""
        rows: list[list[int] | None] = [None] * len(self.text)
        for lane, data in appended.items():
            self.text[lane] += data
            tokens, starts = self.tokens[lane], self.starts[lane]
            redo_from = starts[-1] if tokens else self.done[lane]  # the last token may grow into the new bytes
            ids = self.encode(bytes(self.text[lane][redo_from:]))
            if ids is None:  # an unfinished character: wait for the rest
                continue
            if tokens and ids and ids[0] == tokens[-1]:
                ids = ids[1:]
                redo_from = self.done[lane]
            elif tokens:  # the last token changed: take it out of view
                live = torch.nonzero(self.live[lane]).flatten()
                self.live[lane, live[-1]] = False
                self.count[lane] -= 1
                tokens.pop()
                starts.pop()
            at = redo_from
            for t in ids:
                tokens.append(t)
                starts.append(at)
                at += len(self.pieces[t] or b"")
            self.done[lane] = at
            rows[lane] = ids
        if not any(rows):
            self.probs = torch.zeros_like(self.probs)
            return
        if self.live.shape[1] + max(len(r or []) for r in rows) > self.limit:  # no room left: read anew
            self._rebuild()
            return
        self.probs = self._forward(rows, max(len(r or []) for r in rows))

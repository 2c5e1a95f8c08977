"""An online token n-gram model: counts of what followed each short context in the text coded so far.

The counts start empty and grow as tokens are coded, so the encoder and the decoder, which see the
same tokens in the same order, hold the same table at every step. It predicts only tokens it has
seen after the current context (a sparse distribution); the mixer supplies the rest from the
language model. That is the PPM idea (Cleary and Witten 1984) with the network as the fallback,
and what catches a text's own habits: a name coined in chapter one, a phrase the author repeats.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class TokenNGram:
    """Follower counts for contexts of each length in ``orders`` (tokens), shared by all lanes.

    ``predict(history)`` -> for each order, ``(token ids int64, probabilities float64)`` of the tokens
    seen after the last ``order`` tokens of ``history``, or None where that context is new.
    ``update(history, token)`` counts ``token`` after each of those contexts.
    """

    def __init__(self, orders: Sequence[int]) -> None:
        if not orders or any(o < 1 for o in orders):
            raise ValueError("n-gram orders are context lengths >= 1")
        self.orders = tuple(orders)
        self.tables: list[dict[tuple[int, ...], dict[int, int]]] = [{} for _ in self.orders]

    def counts(self, history: Sequence[int], k: int) -> dict[int, int] | None:
        order = self.orders[k]
        if len(history) < order:
            return None
        return self.tables[k].get(tuple(history[-order:]))

    def followers(self, history: Sequence[int]) -> list[dict[int, int] | None]:
        """For each order, the follower counts of the context ending ``history`` (None or {} where new)."""
        return [self.counts(history, k) for k in range(len(self.orders))]

    def predict(self, history: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray] | None]:
        out: list[tuple[np.ndarray, np.ndarray] | None] = []
        for k in range(len(self.orders)):
            followers = self.counts(history, k)
            if not followers:
                out.append(None)
                continue
            tokens = np.fromiter(followers.keys(), dtype=np.int64, count=len(followers))
            counts = np.fromiter(followers.values(), dtype=np.float64, count=len(followers))
            out.append((tokens, counts / counts.sum()))
        return out

    def update(self, history: Sequence[int], token: int) -> None:
        """Count ``token`` after the contexts ending at ``history``'s last token (before ``token``)."""
        for k, order in enumerate(self.orders):
            if len(history) < order:
                continue
            followers = self.tables[k].setdefault(tuple(history[-order:]), {})
            followers[token] = followers.get(token, 0) + 1

    def size(self) -> int:
        """Contexts held, over all orders (memory grows with the text: bounded by a record's tokens)."""
        return sum(len(t) for t in self.tables)

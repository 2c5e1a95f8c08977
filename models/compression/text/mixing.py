"""The mixing coder: the language model's next-token distribution mixed, token by token, with cheap
predictors that learn from the text being coded.

A 135M-parameter network knows English, but not *this* text: the names coined in chapter one, the
phrases its author repeats, the passage quoted twice. Two classic predictors know exactly that:
an online token n-gram model (``ngram.py``, what followed the last 1-4 tokens so far) and a match
model (``match_model.py``, what followed the last time these tokens occurred). Their predictions
are sparse (a handful of tokens); the model's covers the whole vocabulary. The mixer combines them
linearly,

    p(x) = w_model * p_model(x) + sum_j w_j * q_j(x),    w = softmax(theta[context]),

where only the predictors that have something to say take part, and ``theta`` is chosen by a small
context (how long the current match is, the longest n-gram context seen before and how often), so
the mixer learns, for example, that a 30-token match is almost never wrong while a 4-token one
often is. After each token every weight vector that was used takes one gradient step on the bits
that token cost (d(-ln p(x))/d theta_j = -w_j (q_j(x)/p(x) - 1)): the online mixing of PAQ
(Mahoney 2005) and cmix, over tokens rather than bits, in the probability domain like Nacrith's
mixer (logistic mixing in the stretched domain is PAQ's answer for binary alphabets).

Determinism: the encoder and the decoder run exactly the same calls in the same order
(``predict`` for all active lanes of a step, then ``update`` with their tokens), and every
number the mixer computes comes from the tokens coded so far and the model's probabilities,
which the codec already makes identical on both sides. The weights use Python floats (IEEE
double, ``math.exp``); the mixed distribution only multiplies and adds in float32.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from models.compression.text.match_model import MatchModel
from models.compression.text.ngram import TokenNGram
from models.core.errors import InputError

ALGORITHM = "mix-1"
MATCH_BUCKETS = (1, 8, 16, 32)  # a match of length >= each bound falls in the next bucket
COUNT_BUCKETS = (2, 4, 16)  # how often the longest n-gram context was seen before


@dataclass(frozen=True)
class MixerSettings:
    """Everything the mixed probabilities depend on besides the model; recorded in the file."""
    orders: tuple[int, ...] = field(default=(1, 2, 3, 4), metadata={"help": "n-gram context lengths in tokens "
                                                                            "(empty: no n-gram model)"})
    match_min: int = field(default=4, metadata={"help": "tokens that must repeat before the match model predicts "
                                                        "(0: no match model)"})
    contexts: bool = field(default=True, metadata={"help": "a weight vector per confidence context (match length, "
                                                           "n-gram counts); False: one vector for all tokens"})
    rate: float = field(default=0.1, metadata={"help": "the mixer's learning rate"})
    start: float = field(default=-3.0, metadata={"help": "initial weight (before the softmax) of each predictor "
                                                         "against the model's 0"})
    algorithm: str = ALGORITHM

    def check(self) -> None:
        if self.algorithm != ALGORITHM:
            raise InputError(f"mixer {self.algorithm!r} is not known here (this build mixes with {ALGORITHM!r})")
        if len(self.orders) > 8 or any(not isinstance(o, int) or not 1 <= o <= 16 for o in self.orders) \
                or len(set(self.orders)) != len(self.orders):
            raise InputError("n-gram orders must be distinct context lengths between 1 and 16 (at most 8)")
        if not isinstance(self.match_min, int) or not 0 <= self.match_min <= 64:
            raise InputError("the match model's minimum length must be between 0 (off) and 64 tokens")
        if not (isinstance(self.rate, float) and 0.0 <= self.rate <= 1.0 and isinstance(self.start, float)
                and -30.0 <= self.start <= 30.0):
            raise InputError("the mixer's rate must lie in [0, 1] and its start weight in [-30, 30]")

    def to_header(self) -> dict:
        return {**asdict(self), "orders": list(self.orders), "numpy": np.__version__}

    @classmethod
    def from_header(cls, d: object) -> MixerSettings:
        """The settings a file records; InputError if malformed, unknown or made with another numpy."""
        if not isinstance(d, dict):
            raise InputError("the file's mixer settings are malformed")
        d = dict(d)
        if d.pop("numpy", None) != np.__version__:
            raise InputError(f"the file was mixed with another numpy version (here {np.__version__})")
        try:
            s = cls(**{**d, "orders": tuple(d.get("orders", ()))})
        except TypeError as exc:
            raise InputError(f"the file's mixer settings are not known here ({exc})") from None
        s.check()
        return s

    @property
    def experts(self) -> list[str]:
        """Names of the mixed predictors, the model first."""
        return ["model"] + [f"{o}-gram" for o in self.orders] + (["match"] if self.match_min else [])


DEFAULT = MixerSettings()


def _bucket(value: int, bounds: tuple[int, ...]) -> int:
    return sum(value >= b for b in bounds)


@dataclass
class TokenTrace:
    """What the mixer did for one token: for the teaching picture."""
    p_model: float  # the model's probability of the token that came
    p_experts: list[float | None]  # each predictor's (None: it had nothing to say), the model first
    weights: list[float]  # the mixer's weights (0 for silent predictors), the model first
    p_mix: float  # the mixed probability the coder used


class Mixer:
    """One mixer for all lanes of a record. Per step: ``predict(active, probs)`` -> mixed probabilities
    (n_active, vocab) float32, then ``update(active, symbols)`` with the tokens that came."""

    def __init__(self, settings: MixerSettings, lanes: int, trace: bool = False) -> None:
        settings.check()
        self.s = settings
        self.ngram = TokenNGram(settings.orders) if settings.orders else None
        self.match = MatchModel(lanes, settings.match_min or 1)  # keeps the lanes' histories in any case
        self.use_match = bool(settings.match_min)
        self.n_experts = len(settings.experts)
        self.theta: dict[tuple[int, ...], list[float]] = {}
        self.pending: list[tuple] = []
        self.trace: list[TokenTrace] | None = [] if trace else None

    @property
    def histories(self) -> list[list[int]]:
        return self.match.histories

    def _experts(self, lane: int) -> tuple[tuple[int, ...], list[tuple[int, np.ndarray, np.ndarray]]]:
        """(weight-set key, [(expert index, token ids, probabilities)]) of the sparse predictors of a lane."""
        history, sparse, top, seen = self.histories[lane], [], 0, 0
        if self.ngram is not None:
            for k, pred in enumerate(self.ngram.predict(history)):
                if pred is not None:
                    sparse.append((1 + k, *pred))
                    top = 1 + k
            if top:
                seen = sum(self.ngram.counts(history, top - 1).values())
        length = 0
        if self.use_match:
            guess = self.match.predict(lane)
            if guess is not None:
                length = guess[1]
                sparse.append((self.n_experts - 1, np.array([guess[0]], dtype=np.int64), np.ones(1)))
        key = (_bucket(length, MATCH_BUCKETS), top, _bucket(seen, COUNT_BUCKETS)) if self.s.contexts else (0,)
        return key, sparse

    def _weights(self, key: tuple[int, ...], present: list[int]) -> list[float]:
        theta = self.theta.get(key)
        if theta is None:
            theta = self.theta[key] = [0.0] + [self.s.start] * (self.n_experts - 1)
        top = max(theta[i] for i in present)
        e = [math.exp(theta[i] - top) for i in present]
        total = sum(e)
        return [x / total for x in e]

    def predict(self, active: list[int], probs: np.ndarray) -> np.ndarray:
        """probs (n_active, vocab) float32 from the model -> the mixed distribution, same shape."""
        rows = []
        for lane in active:
            key, sparse = self._experts(lane)
            present = [0] + [j for j, _, _ in sparse]
            rows.append((key, present, self._weights(key, present), sparse))
        scale = np.array([[w[0]] for _, _, w, _ in rows], dtype=np.float32)
        mixed = probs * scale
        for i, (_, _, weights, sparse) in enumerate(rows):
            for w, (_, tokens, q) in zip(weights[1:], sparse, strict=True):
                mixed[i, tokens] += (w * q).astype(np.float32)
        self.pending = [(row, probs[i]) for i, row in enumerate(rows)]
        return mixed

    def update(self, active: list[int], symbols) -> None:
        """Learn from the tokens that came (one per active lane, as coded), then count them."""
        for (row, model_probs), x in zip(self.pending, symbols, strict=True):
            key, present, weights, sparse = row
            x = int(x)
            q = [float(model_probs[x])] + [float(qs[np.flatnonzero(tokens == x)].sum()) for _, tokens, qs in sparse]
            p = sum(w * qi for w, qi in zip(weights, q, strict=True))
            if self.trace is not None:
                p_experts: list[float | None] = [None] * self.n_experts
                full = [0.0] * self.n_experts
                for j, qi, w in zip(present, q, weights, strict=True):
                    p_experts[j], full[j] = qi, w
                self.trace.append(TokenTrace(q[0], p_experts, full, p))
            if p > 0.0 and self.s.rate:
                theta = self.theta[key]
                for j, w, qi in zip(present, weights, q, strict=True):
                    theta[j] = min(30.0, max(-30.0, theta[j] + self.s.rate * w * (qi / p - 1.0)))
        self.pending = []
        tokens = {lane: int(x) for lane, x in zip(active, symbols, strict=True)}
        if self.ngram is not None:
            for lane, x in tokens.items():
                self.ngram.update(self.histories[lane], x)
        self.match.update(tokens)  # appends each token to its lane's history

    def state_digest(self) -> str:
        """sha256 of everything the next prediction depends on (tests compare encoder and decoder)."""
        h = hashlib.sha256()
        h.update(repr(sorted(self.theta.items())).encode())
        h.update(repr(self.histories).encode())
        h.update(repr(self.match.state).encode())
        h.update(repr(sorted(self.match.index.items())).encode())
        if self.ngram is not None:
            h.update(repr([sorted((k, sorted(v.items())) for k, v in t.items()) for t in self.ngram.tables]).encode())
        return h.hexdigest()

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

Later stages (off in "mix-1" files; the bias stage is on from "mix-2"; "mix-4" is the default):

- a **bias on the model's log-probabilities** learned online (Nacrith's adaptive head): p'(x) is
  p(x) * exp(b_x), renormalised, and after each token b takes one gradient step on -ln p'(token).
  It learns this text's vocabulary (a name coined in chapter one gets likelier everywhere), which a
  lane that starts without context cannot know. Only tokens the text has used carry a bias; the
  rest keep 0, so a step costs a gather over those tokens, not the whole vocabulary. In "mix-4" each
  token's step shrinks with how often it has come, rate / sqrt(1 + n): a new name moves fast, a
  token seen a hundred times stays put (a per-parameter 1/sqrt(t) step, as in AdaGrad, Duchi et al.
  2011, with the token's count standing in for its gradients);
- a **context bias** ("mix-3"): one more such bias per previous token, over the tokens seen after it (an
  adaptive bigram correction in log space), applied to the model's distribution before the rest;
- optionally (``confidence``, measured and off by default: it did not pay) **the model's own
  confidence** (its top probability, and whether the longest n-gram context was always followed by
  the same token) joins the context that picks the weight vector.

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
TOP_BUCKETS = (0.3, 0.7, 0.95)  # the model's top probability (with ``confidence``)
MAX_BIAS = 8.0  # |b| bound of the bias stage, in nats: a token's probability moves at most e^8 ~ 3000-fold


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
    # Added with "mix-2"; a file that does not record them was coded without them (their off values).
    bias_rate: float = field(default=0.0, metadata={"help": "learning rate of the bias on the model's "
                                                            "log-probabilities (0: no bias stage)"})
    confidence: bool = field(default=False, metadata={"help": "the model's top probability and the n-gram "
                                                              "context's determinism pick the weight vector too"})
    # Added with "mix-3"; likewise absent (0) in earlier files.
    context_bias_rate: float = field(default=0.0, metadata={"help": "learning rate of the bias per previous token "
                                                                    "(0: no context bias)"})
    # Added with "mix-4"; likewise absent (0) in earlier files.
    bias_decay: float = field(default=0.0, metadata={"help": "the bias stage's step for a token is rate / (1 + n) "
                                                             "** decay, n the times the token came before (0: the "
                                                             "same step throughout)"})

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
        if not (isinstance(self.bias_rate, float) and 0.0 <= self.bias_rate <= 1.0):
            raise InputError("the bias stage's rate must lie in [0, 1]")
        if not (isinstance(self.context_bias_rate, float) and 0.0 <= self.context_bias_rate <= 1.0):
            raise InputError("the context bias's rate must lie in [0, 1]")
        if not (isinstance(self.bias_decay, float) and 0.0 <= self.bias_decay <= 2.0):
            raise InputError("the bias stage's decay must lie in [0, 2]")
        if not isinstance(self.contexts, bool) or not isinstance(self.confidence, bool):
            raise InputError("contexts and confidence are true or false")

    def to_header(self) -> dict:
        """The settings as a file records them; the later stages only when on, so that a "mix-1" header
        reads as it always did."""
        d = {**asdict(self), "orders": list(self.orders), "numpy": np.__version__}
        for name, off in (("bias_rate", 0.0), ("confidence", False), ("context_bias_rate", 0.0), ("bias_decay", 0.0)):
            if d[name] == off:
                del d[name]
        return d

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


MIX_1 = MixerSettings()  # the first default: n-gram + match, weights by context; no bias, no confidence
# mix-2: the bias stage at the rate that coded 25 kB excerpts of alice29, lcet10 and WikiText-2 smallest
# (0.1-0.4 tried; docs/BENCHMARKS.md). The confidence context did not pay there and stays off.
MIX_2 = MixerSettings(bias_rate=0.2)
# mix-3: the bias stage at 0.1 and the context bias at 0.1, chosen on a recording of alice29 coded by the
# two-models preset (docs/BENCHMARKS.md: learned weights and the context bias).
MIX_3 = MixerSettings(bias_rate=0.1, context_bias_rate=0.1)
# mix-4: mix-2 with each token's bias step shrinking as 0.5 / sqrt(1 + n), chosen on recordings of the fast
# preset (alice29, asyoulik, lcet10, WikiText-2; docs/BENCHMARKS.md: the 8 % criterion).
MIX_4 = MixerSettings(bias_rate=0.5, bias_decay=0.5)
DEFAULT = MIX_4
# Settings a compact (version 4) header names by id (compact_header.MIXER_IDS): a file stores only the id,
# so never change an entry; a new default gets a new name.
NAMED = {"mix-1": MIX_1, "mix-2": MIX_2, "mix-3": MIX_3, "mix-4": MIX_4}


def name_of(settings: MixerSettings | None) -> str | None:
    """The NAMED id of these exact settings, or None (they are then recorded in full)."""
    return next((name for name, s in NAMED.items() if s == settings), None)


def _bucket(value: int, bounds: tuple[int, ...]) -> int:
    return sum(value >= b for b in bounds)


@dataclass
class TokenTrace:
    """What the mixer did for one token: for the teaching picture."""
    p_model: float  # the model's probability of the token that came
    p_experts: list[float | None]  # each predictor's (None: it had nothing to say), the model first
    weights: list[float]  # the mixer's weights (0 for silent predictors), the model first
    p_mix: float  # the mixed probability the coder used


class TokenBias:
    """A bias b on the model's log-probabilities, learned online over the tokens the text has used.

    ``adjust(probs)`` -> (scale (n,), ids (S,), values (n, S)): the adjusted distribution of row i is
    ``probs[i] * scale[i]`` with ``values[i]`` at ``ids``: p(x) e^{b_x} / Z, Z = sum_v p(v) e^{b_v}, where
    b is 0 outside ``ids``. ``update(rows, symbols)`` takes one gradient step of -ln p'(symbol) per row
    (d/db_v = p'(v) - [v = symbol]), in row order; a token used for the first time joins ``ids``.
    With ``decay`` d > 0 token v's step is rate / (1 + n_v)^d, n_v the times v came before this update.
    Nacrith's adaptive head (Tacconelli 2026) over the whole vocabulary; here over the used tokens only.
    """

    def __init__(self, rate: float, decay: float = 0.0) -> None:
        self.rate = rate
        self.decay = decay
        self.ids = np.zeros(0, dtype=np.int64)
        self.bias = np.zeros(0, dtype=np.float64)
        self.came = np.zeros(0, dtype=np.float64)  # n_v: how often each token in ``ids`` came
        self.slot: dict[int, int] = {}
        self._last: tuple[np.ndarray, np.ndarray] | None = None

    def adjust(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = np.take(probs, self.ids, axis=1).astype(np.float64)  # (n, S); take is ~4x a 2-D fancy index
        a = p * np.exp(self.bias)
        z = 1.0 + (a - p).sum(axis=1)  # sum_v p(v) e^{b_v}, the model's rows summing to 1
        values = a / z[:, None]
        self._last = (1.0 / z, values)
        return 1.0 / z, self.ids, values

    def update(self, probs: np.ndarray, symbols) -> None:
        """``probs``: the model's rows given to the last ``adjust``; ``symbols``: the tokens that came."""
        inv_z, values = self._last
        known = len(self.ids)
        # the steps before this update's counts; decay 0 keeps the single rate (files before mix-4 decode as coded)
        step = (self.rate * (1.0 + self.came) ** -self.decay) if self.decay else None
        if known:
            self.bias -= (self.rate if step is None else step) * values.sum(axis=0)
        for i, x in enumerate(int(x) for x in symbols):
            s = self.slot.get(x)
            if s is not None and s < known:
                self.bias[s] += self.rate if step is None else step[s]
                self.came[s] += 1.0
                continue
            if s is None:  # first use: joins with bias 0, then takes its step (the full rate: it never came)
                s = self.slot[x] = len(self.ids)
                self.ids = np.append(self.ids, x)
                self.bias = np.append(self.bias, 0.0)
                self.came = np.append(self.came, 0.0)
            self.bias[s] += self.rate * (1.0 - float(probs[i, x]) * float(inv_z[i]))
            self.came[s] += 1.0
        np.clip(self.bias, -MAX_BIAS, MAX_BIAS, out=self.bias)
        self._last = None


class Mixer:
    """One mixer for all lanes of a record. Per step: ``predict(active, probs)`` -> mixed probabilities
    (n_active, vocab) float32, then ``update(active, symbols)`` with the tokens that came."""

    def __init__(self, settings: MixerSettings, lanes: int, trace: bool = False) -> None:
        settings.check()
        self.s = settings
        self.ngram = TokenNGram(settings.orders) if settings.orders else None
        self.match = MatchModel(lanes, settings.match_min or 1)  # keeps the lanes' histories in any case
        self.use_match = bool(settings.match_min)
        self.bias = TokenBias(settings.bias_rate, settings.bias_decay) if settings.bias_rate else None
        self.context_bias: dict[int, TokenBias] | None = {} if settings.context_bias_rate else None
        self._raw: np.ndarray | None = None  # the model's rows before the context bias
        self.n_experts = len(settings.experts)
        self.theta: dict[tuple[int, ...], list[float]] = {}
        self.pending: list[tuple] = []
        self.trace: list[TokenTrace] | None = [] if trace else None
        self._buffer: np.ndarray | None = None  # the mixed distribution's memory, reused from step to step

    @property
    def histories(self) -> list[list[int]]:
        return self.match.histories

    def _experts(self, lane: int, top_p: float) -> tuple[tuple[int, ...], list[tuple[int, np.ndarray, np.ndarray]],
                                                         list[dict[int, int] | None]]:
        """(weight-set key, [(expert index, token ids, probabilities)], n-gram followers) of a lane's
        sparse predictors."""
        history, sparse, top, seen, single = self.histories[lane], [], 0, 0, 0
        followers: list[dict[int, int] | None] = []
        if self.ngram is not None:
            followers = self.ngram.followers(history)
            for k, counts in enumerate(followers):
                if counts:
                    tokens = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
                    n = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
                    sparse.append((1 + k, tokens, n / n.sum()))
                    top = 1 + k
            if top:
                seen = sum(followers[top - 1].values())
                single = int(len(followers[top - 1]) == 1)
        length = 0
        if self.use_match:
            guess = self.match.predict(lane)
            if guess is not None:
                length = guess[1]
                sparse.append((self.n_experts - 1, np.array([guess[0]], dtype=np.int64), np.ones(1)))
        if not self.s.contexts:
            key: tuple[int, ...] = (0,)
        else:
            key = (_bucket(length, MATCH_BUCKETS), top, _bucket(seen, COUNT_BUCKETS))
            if self.s.confidence:
                key += (_bucket(top_p, TOP_BUCKETS), single)
        return key, sparse, followers

    def _weights(self, key: tuple[int, ...], present: list[int]) -> list[float]:
        theta = self.theta.get(key)
        if theta is None:
            theta = self.theta[key] = [0.0] + [self.s.start] * (self.n_experts - 1)
        top = max(theta[i] for i in present)
        e = [math.exp(theta[i] - top) for i in present]
        total = sum(e)
        return [x / total for x in e]

    def _previous(self, lane: int) -> int:
        history = self.histories[lane]
        return history[-1] if history else -1

    def _context_biased(self, active: list[int], probs: np.ndarray) -> np.ndarray:
        """Each row through the context bias of its lane's previous token: p(x) e^{c_x} / Z, row by row."""
        out = None
        for i, lane in enumerate(active):
            bias = self.context_bias.get(self._previous(lane))
            if bias is None or not len(bias.ids):
                continue
            if out is None:
                out = probs.astype(np.float32, copy=True)
            inv_z, ids, values = bias.adjust(probs[i:i + 1])
            out[i] *= np.float32(inv_z[0])
            out[i, ids] = values[0].astype(np.float32)
        return probs if out is None else out

    def _learn_context_bias(self, active: list[int], symbols) -> None:
        """One step per row, in row order; each row is adjusted anew first, since two lanes may share a
        previous token and the first one's step changes what the second sees."""
        for i, (lane, x) in enumerate(zip(active, symbols, strict=True)):
            key = self._previous(lane)
            bias = self.context_bias.get(key)
            if bias is None:
                bias = self.context_bias[key] = TokenBias(self.s.context_bias_rate)
            row = self._raw[i:i + 1]
            bias.adjust(row)
            bias.update(row, [x])

    def predict(self, active: list[int], probs: np.ndarray) -> np.ndarray:
        """probs (n_active, vocab) float32 from the model -> the mixed distribution, same shape."""
        if self.context_bias is not None:
            self._raw = probs
            probs = self._context_biased(active, probs)
        tops = probs.max(axis=1) if self.s.confidence else np.zeros(len(active), dtype=np.float32)
        rows = []
        for i, lane in enumerate(active):
            key, sparse, followers = self._experts(lane, float(tops[i]))
            present = [0] + [j for j, _, _ in sparse]
            rows.append((key, present, self._weights(key, present), sparse, followers))
        w_model = np.array([[w[0]] for _, _, w, _, _ in rows], dtype=np.float32)
        mixed = self._out(probs.shape)
        if self.bias is None:
            np.multiply(probs, w_model, out=mixed)
            model_x = None
        else:  # the biased model takes the model's place in the mixture
            inv_z, ids, values = self.bias.adjust(probs)
            np.multiply(probs, w_model * inv_z[:, None].astype(np.float32), out=mixed)
            if len(ids):  # through flat indices: ~5x faster than assigning to mixed[:, ids]
                flat = (np.arange(len(active))[:, None] * mixed.shape[1] + ids[None, :]).ravel()
                mixed.reshape(-1)[flat] = (values * w_model.astype(np.float64)).astype(np.float32).ravel()
            model_x = (inv_z, ids, values)
        # every sparse prediction in one scatter; np.add.at adds in order, so a token two predictors name
        # gets their shares in expert order, as one fancy-index addition per predictor would
        where, tokens, shares = [], [], []
        for i, (_, _, weights, sparse, _) in enumerate(rows):
            for w, (_, ids, q) in zip(weights[1:], sparse, strict=True):
                where.append(np.full(len(ids), i))
                tokens.append(ids)
                shares.append(w * q)
        if where:
            np.add.at(mixed, (np.concatenate(where), np.concatenate(tokens)),
                      np.concatenate(shares).astype(np.float32))
        self.pending = [(row, probs[i]) for i, row in enumerate(rows)]
        self._model_x = model_x
        self._probs = probs
        return mixed

    def _out(self, shape: tuple[int, int]) -> np.ndarray:
        """Memory for the mixed distribution, (rows, vocab) float32. Reused: a fresh array of Gemma's 262,144
        tokens for 84 lanes costs 16 ms a step to allocate and fill, the same one refilled 8 (the coder reads
        the distribution before the next step, and nothing keeps it)."""
        if self._buffer is None or self._buffer.shape[0] < shape[0] or self._buffer.shape[1] != shape[1]:
            self._buffer = np.empty(shape, dtype=np.float32)
        return self._buffer[:shape[0]]

    def _model_p(self, i: int, x: int, raw: float) -> float:
        """The probability the mixture's model expert gave token x in row i (biased, when the stage is on)."""
        if self._model_x is None:
            return raw
        inv_z, _, values = self._model_x
        s = self.bias.slot.get(x)
        if s is not None and s < values.shape[1]:
            return float(values[i, s])
        return raw * float(inv_z[i])

    def update(self, active: list[int], symbols) -> None:
        """Learn from the tokens that came (one per active lane, as coded), then count them."""
        for i, ((row, model_probs), x) in enumerate(zip(self.pending, symbols, strict=True)):
            key, present, weights, sparse, followers = row
            x = int(x)
            raw = float(model_probs[x])
            q = [self._model_p(i, x, raw)]
            for j, tokens, _ in sparse:
                if j <= len(followers):  # an n-gram order: its count of x over the context's total
                    counts = followers[j - 1]
                    q.append(counts.get(x, 0) / sum(counts.values()) if x in counts else 0.0)
                else:  # the match model: all on its one token
                    q.append(1.0 if int(tokens[0]) == x else 0.0)
            p = sum(w * qi for w, qi in zip(weights, q, strict=True))
            if self.trace is not None:
                p_experts: list[float | None] = [None] * self.n_experts
                full = [0.0] * self.n_experts
                for j, qi, w in zip(present, q, weights, strict=True):
                    p_experts[j], full[j] = qi, w
                self.trace.append(TokenTrace(raw, p_experts, full, p))
            if p > 0.0 and self.s.rate:
                theta = self.theta[key]
                for j, w, qi in zip(present, weights, q, strict=True):
                    theta[j] = min(30.0, max(-30.0, theta[j] + self.s.rate * w * (qi / p - 1.0)))
        self.pending = []
        if self.bias is not None:
            self.bias.update(self._probs, symbols)
        if self.context_bias is not None:
            self._learn_context_bias(active, symbols)
            self._raw = None
        self._model_x = self._probs = None
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
        if self.bias is not None:
            h.update(self.bias.ids.tobytes() + self.bias.bias.tobytes() + self.bias.came.tobytes())
        for key, bias in sorted((self.context_bias or {}).items()):
            h.update(repr(key).encode() + bias.ids.tobytes() + bias.bias.tobytes())
        return h.hexdigest()

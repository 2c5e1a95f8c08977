"""Arithmetic coding step by step, and its inverse "sampling is decompression", for the picture.

Arithmetic coding (Witten, Neal and Cleary, "Arithmetic coding for data compression", CACM 30(6),
1987) keeps an interval [low, low + width) of [0, 1). Each token's slice is the part of the
current interval that its probability covers, after the slices of all smaller token ids; coding
the token narrows the interval to that slice, so the width after n tokens is the product of their
probabilities and writing any number inside it takes about -log2(width) bits: the sum of the
surprisals. The leading binary digits that low and high already share can never change again:
those are the bits "settled" so far.

Decoding (and sampling) runs it backwards: a number u in [0, 1) falls into one slice per step,
and that slice's token is the output. Random bits as u give a sample from the model. The sample ends
where the model ends its text: at its end-of-text token (``text_end_ids``), as generation does.

The probabilities are the float32 next-token probabilities the codec feeds its range coder
(``lm_codec``: the same runner, start token and forward calls), one lane, floored as the coder's
quantisation floors them (``lm_codec.floored``: a probability that underflowed to 0 still gets a slice). The arithmetic
here is exact (fractions of those floats); the codec's range coder does the same with 32-bit
integers (and a 24-bit quantisation of each probability), so its file is a few bits longer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from models.compression.text import lm_codec
from models.core import registry, text_start
from models.core.errors import InputError

MAX_STEPS = 40
TOP = 5  # neighbouring slices drawn beside the chosen one


@dataclass(frozen=True)
class Slice:
    token: str  # "" for a token that ends the text (``end``)
    start: float  # where the slice starts in the current interval, 0..1
    p: float  # its width there: the token's probability
    end: bool = False  # an end-of-text or other control token (``text_end_ids``): no text


@dataclass(frozen=True)
class Step:
    token: str  # the coded (or sampled) token, as text
    token_id: int
    p: float  # its probability under the model
    start: float  # its slice of the current interval: [start, start + p), relative
    bits: float  # -log2 p
    total_bits: float  # sum of -log2 p so far = -log2(width)
    low: Fraction  # the interval after this step, absolute
    width: Fraction
    settled: str  # the binary digits low and high share after this step
    others: list[Slice]  # the most likely tokens' slices at this step (the chosen one may be among them)
    u_position: float | None = None  # sampling: where the random number falls in the interval, 0..1
    end: bool = False  # the model ended its text here (``text_end_ids``); ``token`` is then ""


def settled_bits(low: Fraction, width: Fraction, limit: int = 256) -> str:
    """The leading binary digits every number in [low, low + width) shares (up to ``limit``)."""
    high = low + width
    out = []
    a, b = low, high
    for _ in range(limit):
        a, b = a * 2, b * 2
        da, db = int(a), int(b) if b != int(b) else int(b) - 1  # high itself is excluded
        if da != db:
            break
        out.append(str(da))
        a, b = a - da, b - da
    return "".join(out)


def text_end_ids(tokenizer) -> frozenset[int]:
    """Token ids that are not text and end it: the EOS token (SmolLM2-Instruct's end of turn <|im_end|>,
    GPT-2's <|endoftext|>; where Generate stops), the separator raw text follows (``text_start``), and every
    other special token (<|im_start|>, <file_sep>, Gemma's <end_of_turn>): Generate's text leaves them all
    out (``skip_special_tokens``). A decode that read on past <|im_end|> wrote the chat template's next
    turn, "<|im_start|>assistant", into the story."""
    ids = set(lm_codec._special_ids(tokenizer))
    ids |= {int(i) for i, t in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items() if t.special}
    for i in (tokenizer.eos_token_id, text_start.start_token_id(tokenizer)):
        if i is not None:
            ids.add(int(i))
    return frozenset(ids)


def bits_read(bits: str, low: Fraction, width: Fraction) -> int | None:
    """How many leading bits of u = 0.``bits`` a decoder reads to decide every token that narrowed the
    interval to [low, low + width): the fewest k such that every number starting with those k bits lies in
    the interval (with fewer, some number with the same first bits falls into another slice at some step,
    so the tokens are not decided yet). At least -log2(width), the tokens' cost; a few more where u lies
    near an end of the interval. None if u itself is not in the interval."""
    high = low + width
    # 2^-k > width for k below this: no k-bit prefix fits. bit_length, not log2: width underflows a float.
    first = max(0, width.denominator.bit_length() - width.numerator.bit_length() - 1)
    for k in range(first, len(bits) + 1):
        a = Fraction(int(bits[:k] or "0", 2), 2**k)
        if low <= a and a + Fraction(1, 2**k) <= high:
            return k
    return None


def _probabilities(loaded: registry.Loaded, ids: list[int], precision: str) -> list[np.ndarray]:
    """The codec's next-token distributions before each of ``ids`` (one lane, the default window)."""
    s = lm_codec.CodecSettings(precision=precision).for_model(loaded)
    runner = lm_codec._runner(loaded, precision, lanes=1)
    out: list[np.ndarray] = []

    def choose(step: int, active: list[int], probs: np.ndarray) -> np.ndarray:
        out.append(lm_codec.floored(probs[0]))  # an underflowed 0.0 would be an empty slice and infinite bits
        return np.array([ids[step]], dtype=np.int64)

    lm_codec._lockstep(runner, [len(ids)], lm_codec._start_id(loaded.tokenizer), s.window, s.keep, choose)
    return out


def _slices(probs: np.ndarray, cdf: np.ndarray, tmap: lm_codec.TokenMap, ends: frozenset[int]) -> list[Slice]:
    top = np.argsort(-probs)[:TOP]
    return [Slice("" if int(i) in ends else tmap.piece(int(i)).decode("utf-8", "replace"), float(cdf[i] - probs[i]),
                  float(probs[i]), int(i) in ends)
            for i in sorted(top)]


def _narrow(low: Fraction, width: Fraction, start: float, p: float) -> tuple[Fraction, Fraction]:
    return low + width * Fraction(start), width * Fraction(p)


def encode_steps(data: bytes, loaded: registry.Loaded, n_tokens: int = 20, precision: str = "auto") -> list[Step]:
    """The interval after each of the first ``n_tokens`` tokens of ``data`` (InputError if empty)."""
    if not 1 <= n_tokens <= MAX_STEPS:
        raise InputError(f"number of steps must be between 1 and {MAX_STEPS} (got {n_tokens})")
    tmap = lm_codec.TokenMap(loaded.tokenizer)
    ids, mode, _ = tmap.to_tokens(bytes(data))
    if not ids:
        raise InputError("there is nothing to code: type some text first" if not data else
                         "this model's tokenizer cannot code these bytes token by token")
    return token_steps(ids[:n_tokens], loaded, precision)


def token_steps(ids: list[int], loaded: registry.Loaded, precision: str = "auto") -> list[Step]:
    tmap = lm_codec.TokenMap(loaded.tokenizer)
    ends = text_end_ids(loaded.tokenizer)
    low, width, total, steps = Fraction(0), Fraction(1), 0.0, []
    for tid, probs in zip(ids, _probabilities(loaded, ids, precision), strict=True):
        cdf = np.cumsum(probs)
        p, start = float(probs[tid]), float(cdf[tid] - probs[tid])
        low, width = _narrow(low, width, start, p)
        total += -math.log2(p)
        steps.append(Step(tmap.piece(tid).decode("utf-8", "replace"), tid, p, start, -math.log2(p), total,
                          low, width, settled_bits(low, width), _slices(probs, cdf, tmap, ends)))
    return steps


SAMPLE_MAX = 200  # tokens one "decode random bits" may ask for (the picture draws the first MAX_STEPS)
RANDOM_WORDS = SAMPLE_MAX + 8  # u is the same 32-bit words for every length, so a shorter decode is a prefix


def random_bits(seed: int) -> str:
    """The random bits of ``seed`` (numpy's default generator, 32-bit words, most significant bit first):
    u = 0.b1 b2 b3 ... in binary. Every view of sampling-as-decoding reads these."""
    if not 0 <= int(seed) < 2**63:
        raise InputError("seed must be a non-negative integer")
    words = np.random.default_rng(int(seed)).integers(0, 2**32, size=RANDOM_WORDS, dtype=np.uint64)
    return "".join(format(int(w), "032b") for w in words)


class _TextEnded(Exception):
    """Raised by the sampler's ``choose`` to leave ``lm_codec._lockstep`` early, at the end of the text."""


def sampling_steps(loaded: registry.Loaded, seed: int, n_tokens: int = 20, prompt: str = "",
                   precision: str = "auto") -> tuple[str, list[Step]]:
    """Sampling is decompression: u, the number 0.b1 b2 b3 ... made of the random bits of ``seed``
    (``random_bits``), falls into one slice at each step after ``prompt``; that slice's token is the
    sample (exact arithmetic, so the picture and the text are one decode). Returns (the bits, steps):
    ``n_tokens`` steps, or fewer where the model ends its text first: the last step is then its end token
    (``Step.end``, ``text_end_ids``; its bits were read too) and the decode stops, as generation stops at
    EOS. A shorter decode of the same seed is a prefix of a longer one.
    Raises InputError for n_tokens outside 1..SAMPLE_MAX or a negative seed."""
    if not 1 <= n_tokens <= SAMPLE_MAX:
        raise InputError(f"number of tokens must be between 1 and {SAMPLE_MAX} (got {n_tokens})")
    bits = random_bits(seed)
    u = Fraction(int(bits, 2), 2 ** len(bits))
    tmap = lm_codec.TokenMap(loaded.tokenizer)
    ends = text_end_ids(loaded.tokenizer)
    prefix = tmap._encode_text(prompt) if prompt else []
    s = lm_codec.CodecSettings(precision=precision).for_model(loaded)
    runner = lm_codec._runner(loaded, precision, lanes=1)
    state = {"low": Fraction(0), "width": Fraction(1), "total": 0.0}
    steps: list[Step] = []

    def choose(step: int, active: list[int], probs: np.ndarray) -> np.ndarray:
        probs = lm_codec.floored(probs[0])
        cdf = np.cumsum(probs)
        position = (u - state["low"]) / state["width"]  # where u lies in the current interval, 0..1
        starts = cdf - probs
        # the last slice starting at or before u (exact comparison; skip tokens of probability 0)
        tid = min(max(int(np.searchsorted(starts, float(position), side="right")) - 1, 0), len(probs) - 1)
        while tid > 0 and (probs[tid] == 0 or Fraction(float(starts[tid])) > position):
            tid -= 1
        p, start = float(probs[tid]), float(cdf[tid] - probs[tid])
        state["low"], state["width"] = _narrow(state["low"], state["width"], start, p)
        state["total"] += -math.log2(p)
        end = tid in ends
        steps.append(Step("" if end else tmap.piece(tid).decode("utf-8", "replace"), tid, p, start, -math.log2(p),
                          state["total"], state["low"], state["width"], settled_bits(state["low"], state["width"]),
                          _slices(probs, cdf, tmap, ends), float(position), end))
        if end:  # read on, and u would decode the chat template's next turn ("<|im_start|>assistant") as text
            raise _TextEnded
        return np.array([tid], dtype=np.int64)

    try:
        lm_codec._lockstep(runner, [n_tokens], lm_codec._start_id(loaded.tokenizer), s.window, s.keep, choose,
                           prefix=prefix)
    except _TextEnded:  # _lockstep runs a fixed number of steps; it holds nothing that outlives the call
        pass
    return bits, steps

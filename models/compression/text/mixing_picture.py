"""What the mixing coder did on one text, for the teaching picture: which predictor won each token, the
mixer's weights over the text, and the bits each predictor saved.

One pass of the model codes the text twice (``lm_codec.compress_many``): with the model alone and with
the mixer; both files are decoded and compared before anything is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from models.compression.text import lm_codec, mixing
from models.core import registry
from models.core.errors import CorruptFile, InputError

# The picture codes the text in the app (decoded twice to verify): bounded like the Compress tab's input.
MAX_BYTES = 16_000


@dataclass
class TokenWin:
    text: str  # the token's bytes, decoded for display
    winner: str  # the predictor that gave the token that came the highest probability (ties: the most specific)
    bits_model: float  # -log2 p under the model alone
    bits_mixed: float  # -log2 p under the mixture (what the mixing coder spent)
    weights: list[float]  # the mixer's weights for this token, in ``MixPicture.experts`` order


@dataclass
class MixPicture:
    experts: list[str]  # "model", "1-gram", ..., "match"
    tokens: list[TokenWin]
    file_model_bytes: int  # the verified file of the model alone
    file_mixed_bytes: int  # the verified file of the mixing coder
    n_bytes: int
    lanes: int
    payload_model_bytes: int = 0  # each file without its header: the range coder's output, whole 32-bit words
    payload_mixed_bytes: int = 0

    @property
    def coded_bits_saved(self) -> float:
        """Bits the mixing coder saved against the model alone, summed over the tokens (negative: it spent more).
        The files' sizes differ by this, rounded to whole words, plus the difference of their headers."""
        return sum(t.bits_model - t.bits_mixed for t in self.tokens)

    @property
    def bits_saved(self) -> dict[str, float]:
        """Bits saved against the model alone on the tokens each predictor won (negative: it cost bits)."""
        out = dict.fromkeys(self.experts, 0.0)
        for t in self.tokens:
            out[t.winner] += t.bits_model - t.bits_mixed
        return out

    @property
    def wins(self) -> dict[str, int]:
        out = dict.fromkeys(self.experts, 0)
        for t in self.tokens:
            out[t.winner] += 1
        return out


def picture(data: bytes, loaded: registry.Loaded, codec: lm_codec.CodecSettings | None = None,
            mixer: mixing.MixerSettings = mixing.DEFAULT, progress: lm_codec.Progress | None = None) -> MixPicture:
    """Code ``data`` with the model alone and with ``mixer`` (one model pass), verify both, and say per
    token which predictor won. InputError for empty or too long input; CorruptFile if a check fails."""
    if not data:
        raise InputError("there is nothing to mix: paste some text first")
    if len(data) > MAX_BYTES:
        raise InputError(f"the input has {len(data):,} bytes; the mixing picture takes at most {MAX_BYTES:,}")
    alone, mixed = lm_codec.compress_many(data, loaded, [None, mixer], codec, progress, trace=True)
    if any(out != data for out, _ in lm_codec.decompress_many([alone.blob, mixed.blob], loaded)):
        raise CorruptFile("a file did not decode to the input")
    experts = mixer.experts
    trace = mixed.mix_trace or []  # empty when the tokenizer could not code the text (LZMA fallback)
    # the trace runs in coding order (step by step over the lanes); the tokens are in text order
    order = _text_order(mixed.header["n_tokens"], mixed.header.get("prime", 0), mixed.header["lanes"]) if trace else []
    tokens = []
    for cost, i in zip(mixed.tokens, order, strict=True):
        step = trace[i]
        said = [(p, j) for j, p in enumerate(step.p_experts) if p is not None]
        best = max(said)[1]  # a tie goes to the more specific predictor: the match, then the longer n-gram
        tokens.append(TokenWin(cost.text, experts[best], -math.log2(max(step.p_model, lm_codec.MIN_P)), cost.bits,
                               list(step.weights)))
    return MixPicture(experts, tokens, len(alone.blob), len(mixed.blob), len(data), mixed.header["lanes"],
                      alone.header["payload_bytes"], mixed.header["payload_bytes"])


def _text_order(n_tokens: int, opening: int, lanes: int) -> list[int]:
    """Index into the coding-order trace of each token in text order."""
    where = {pos: i for i, pos in enumerate(lm_codec.coding_order(n_tokens, opening, lanes))}
    return [where[pos] for pos in range(n_tokens)]

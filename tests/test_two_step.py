"""Two-step token coding (``two_step.py``): the decoder gets back every token, the file costs what the
probabilities say (no bits lost to the split), and a large vocabulary's quantisation floor is recovered."""

from __future__ import annotations

import math

import constriction
import numpy as np
import pytest

from models.compression.text import container as text_container
from models.compression.text import lm_codec, two_step
from models.core.errors import CorruptFile, InputError
from tests.codec_helpers import compact_settings

FAMILY = constriction.stream.model.Categorical(perfect=False)


def steps(rng: np.random.Generator, vocab: int, lanes: int, n: int, used: int, sharp: float):
    """``n`` steps of (probabilities (lanes, vocab) float32, symbols (lanes,)): the symbols come from the
    first ``used`` token ids, some drawn from the distribution, some where it put almost nothing."""
    out = []
    for t in range(n):
        logits = rng.normal(size=(lanes, vocab)) * sharp
        logits[:, :used] += 4.0  # the text's tokens are the likely ones, as with a real model
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
        if t % 7 == 3:
            p[0, :] = 0.0
            p[0, used + 1] = 1.0  # an underflowed probability: the coder's floor must still code the token
        symbols = rng.integers(0, used, size=lanes)
        if t == 5:
            symbols[:] = used - 1  # a token new to every lane at once
        out.append((p, symbols))
    return out


def code(data, coder_factory):
    encoder = constriction.stream.queue.RangeEncoder()
    coder = coder_factory()
    for p, s in data:
        if coder is None:
            encoder.encode(s.astype(np.int32), FAMILY, p)
        else:
            coder.encode(encoder, p, s)
    return encoder


@pytest.mark.parametrize("lanes", [1, 3])
def test_round_trip_and_cost(lanes):
    rng = np.random.default_rng(lanes)
    vocab = 4000
    data = steps(rng, vocab, lanes, 120, 150, 1.0)
    encoder = code(data, lambda: two_step.TwoStepCoder(vocab, FAMILY))
    decoder = constriction.stream.queue.RangeDecoder(encoder.get_compressed())
    coder = two_step.TwoStepCoder(vocab, FAMILY)
    for p, s in data:
        assert np.array_equal(coder.decode(decoder, p), s)
    assert len(coder.seen) == len(np.unique(np.concatenate([s for _, s in data])))
    # What the split must not change: the cost of each token is still -log2 of its probability (a coder that
    # read its tables in the wrong memory order round-tripped as well, at other costs).
    one = code(data, lambda: None).num_bits()
    assert abs(encoder.num_bits() - one) <= 0.005 * one + 64


def test_the_floor_of_a_large_vocabulary_is_recovered():
    """262,144 tokens (Gemma 3): in one step every token loses 1/64 of its probability to the floor
    (0.023 bits); in two steps only a new token's second step pays it."""
    rng = np.random.default_rng(0)
    vocab, n = 262_144, 400
    data = steps(rng, vocab, 2, n // 2, 60, 3.0)
    two = code(data, lambda: two_step.TwoStepCoder(vocab, FAMILY)).num_bits()
    one = code(data, lambda: None).num_bits()
    assert one - two > 0.015 * n


def test_the_codec_writes_two_step_files_and_reads_both(catalogued):
    text = b"Two steps: one of the tokens seen so far, or a new one. " * 4
    two, one = lm_codec.compress_many(text, catalogued, [None], compact_settings(),
                                      codings=(lm_codec.TWO_STEP, lm_codec.ONE_STEP))
    assert lm_codec.compress(text, catalogued, compact_settings()).blob == two.blob  # the default
    assert lm_codec.read_header(two.blob)["coding"] == lm_codec.TWO_STEP
    assert "coding" not in lm_codec.read_header(one.blob)
    assert two.cross_entropy_bits == one.cross_entropy_bits
    assert [d for d, _ in lm_codec.decompress_many([two.blob, one.blob], catalogued)] == [text, text]


def test_unknown_codings_are_refused(tiny_gpt2):
    with pytest.raises(InputError, match="codings must be"):
        lm_codec.compress_many(b"abc", tiny_gpt2, [None], compact_settings(window=64, keep=16), codings=("three-step",))
    blob = lm_codec.compress(b"abc def", tiny_gpt2, compact_settings(window=64, keep=16)).blob
    header, payload = text_container.unpack(blob)
    header = {k: v for k, v in header.items() if k not in ("version", "payload_bytes", "header_bytes")}
    with pytest.raises(CorruptFile, match="a way of coding tokens this LM Lab does not know"):
        lm_codec.decompress(text_container.pack({**header, "coding": "three-step"}, payload), tiny_gpt2)


def test_a_seen_token_costs_its_probability():
    """After its first occurrence a token with probability 1/2 costs 1 bit (plus the coder's last word)."""
    p = np.array([[0.5, 0.25, 0.25]], dtype=np.float32)
    coder = two_step.TwoStepCoder(3, FAMILY)
    encoder = constriction.stream.queue.RangeEncoder()
    for _ in range(64):
        coder.encode(encoder, p, np.array([0]))
    assert encoder.num_bits() == pytest.approx(64 * -math.log2(0.5) + 32, abs=32)

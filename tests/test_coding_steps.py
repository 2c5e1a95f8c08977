"""Arithmetic coding step by step: the interval the picture draws is the one the codec codes."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from models.compression.text import coding_steps, lm_codec
from models.core.errors import InputError

TEXT = b"The cat sat on the mat, and the dog sat on the log. Then both of them went to sleep."


def test_widths_multiply_to_the_coded_size(tiny_gpt2):
    steps = coding_steps.encode_steps(TEXT, tiny_gpt2, n_tokens=20, precision="fp32")
    assert len(steps) == 20
    width = Fraction(1)
    for s in steps:
        assert 0 <= s.start and s.start + s.p <= 1 + 1e-9
        width *= Fraction(s.p)
    assert width == steps[-1].width
    assert -math.log2(steps[-1].width) == pytest.approx(steps[-1].total_bits, rel=1e-9)
    # the codec's own per-token costs for the same tokens, and its file for exactly those tokens
    ids = [s.token_id for s in steps]
    prefix = lm_codec.TokenMap(tiny_gpt2.tokenizer).to_bytes(ids, "text")
    result = lm_codec.compress(prefix, tiny_gpt2, lm_codec.CodecSettings(window=128, keep=64, precision="fp32"))
    assert result.header["n_tokens"] == 20
    assert [round(t.bits, 3) for t in result.tokens] == [round(s.bits, 3) for s in steps]
    assert steps[-1].total_bits - 1 <= result.payload_bits <= steps[-1].total_bits + 64  # + the coder's last words


def test_each_interval_nests_in_the_previous_and_settled_bits_only_grow(tiny_gpt2):
    steps = coding_steps.encode_steps(TEXT, tiny_gpt2, n_tokens=12, precision="fp32")
    low, width, settled = Fraction(0), Fraction(1), ""
    for s in steps:
        assert low <= s.low and s.low + s.width <= low + width
        assert s.settled.startswith(settled)
        low, width, settled = s.low, s.width, s.settled
        assert len(settled) <= -math.log2(width) + 1e-9  # never more bits settled than the information coded


def test_settled_bits():
    assert coding_steps.settled_bits(Fraction(1, 4), Fraction(1, 8)) == "010"  # [0.010, 0.011) in binary
    assert coding_steps.settled_bits(Fraction(0), Fraction(1)) == ""
    assert coding_steps.settled_bits(Fraction(3, 8), Fraction(1, 4)) == ""  # straddles 0.5


def test_sampling_is_decoding_random_bits(tiny_gpt2):
    bits, steps = coding_steps.sampling_steps(tiny_gpt2, seed=3, n_tokens=15, precision="fp32")
    u = Fraction(int(bits, 2), 2 ** len(bits))
    last = steps[-1]
    assert last.low <= u + Fraction(1, 2**96) and u < last.low + last.width  # u lies in every chosen slice
    assert all(0 <= s.u_position < 1 for s in steps)
    assert all(s.start <= s.u_position < s.start + s.p for s in steps)
    again = coding_steps.token_steps([s.token_id for s in steps], tiny_gpt2, "fp32")
    assert [s.low for s in again] == [s.low for s in steps]  # coding the sample gives back the same interval
    assert coding_steps.sampling_steps(tiny_gpt2, seed=3, n_tokens=15, precision="fp32")[1] == steps


def test_bad_input(tiny_gpt2):
    with pytest.raises(InputError, match="nothing to code"):
        coding_steps.encode_steps(b"", tiny_gpt2)
    with pytest.raises(InputError, match="between 1 and"):
        coding_steps.encode_steps(TEXT, tiny_gpt2, n_tokens=0)
    with pytest.raises(InputError, match="seed"):
        coding_steps.sampling_steps(tiny_gpt2, seed=-1)


def test_one_seed_one_decode(tiny_gpt2):
    """A shorter decode of the same seed is a prefix of a longer one (u's bits do not depend on the length),
    and the start text conditions the decode."""
    bits, long = coding_steps.sampling_steps(tiny_gpt2, seed=3, n_tokens=12, precision="fp32")
    bits_short, short = coding_steps.sampling_steps(tiny_gpt2, seed=3, n_tokens=5, precision="fp32")
    assert bits == bits_short == coding_steps.random_bits(3)
    assert [s.token_id for s in short] == [s.token_id for s in long[:5]]
    _, after_prompt = coding_steps.sampling_steps(tiny_gpt2, seed=3, n_tokens=12, prompt="Once upon a time",
                                                  precision="fp32")
    assert [s.token_id for s in after_prompt] != [s.token_id for s in long]


def test_a_thin_slice_is_printed_with_ends_that_differ():
    """At four decimals a token of p = 2e-5 read "[0.9348, 0.9348)", which a class takes for an empty slice."""
    from types import SimpleNamespace

    from components.compress_text import steps_table

    thin = SimpleNamespace(token=" Ulm", p=2.0e-5, start=0.934812, bits=14.6, total_bits=30.2, settled="0101",
                           u_position=0.93483)
    wide = SimpleNamespace(token=" the", p=0.5, start=0.25, bits=1.0, total_bits=31.2, settled="01011", u_position=0.3)
    html = steps_table([thin, wide], sampling=True)
    assert "[0.93481, 0.93483)" in html  # one decimal more, just enough
    assert "[0.2500, 0.7500)" in html  # four, as before

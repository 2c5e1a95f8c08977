"""Primed lanes: the text's opening is coded first, and every lane reads it before its own piece."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from models.compression.text import compact_header, lm_codec, mixing
from models.core.errors import CorruptFile, InputError
from tests.test_lm_codec import SMALL, roundtrip

PRIMED = dataclasses.replace(SMALL, prime=8)
TEXT = (b"It was the best of times, it was the worst of times, it was the age of wisdom, "
        b"it was the age of foolishness, 1775 and 42. ") * 5


def test_the_layout_rule():
    fast = lm_codec.PRESETS["fast"]
    assert fast == lm_codec.RULES["fast-primed"] and fast.prime == 128
    opening, lengths = fast.layout(41_933)  # alice29
    assert opening == 128 and len(lengths) == 93 and sum(lengths) == 41_933 - 128
    assert fast.layout(1_500) == (0, [1_500])  # one lane codes it anyway: no opening
    assert fast.layout(4_000) == (128, [1_936, 1_936])
    assert fast.layout(0) == (0, [0]) and fast.layout(3) == (0, [3])
    assert lm_codec.RULES["fast"].layout(4_000) == (0, [1_334, 1_334, 1_332])  # the files made before
    assert lm_codec.coding_order(7, 2, 2) == [0, 1, 2, 5, 3, 6, 4]


def test_primed_lanes_round_trip_with_and_without_the_mixer(tiny_gpt2):
    result = roundtrip(TEXT, tiny_gpt2, PRIMED)
    opening, lengths = PRIMED.layout(result.header["n_tokens"])
    assert result.header["prime"] == opening == 8 and result.header["lanes"] == len(lengths) == 4
    assert len(result.tokens) == result.header["n_tokens"]
    mixed = lm_codec.compress(TEXT, tiny_gpt2, PRIMED, mixer=mixing.DEFAULT)
    assert mixed.header["prime"] == 8 and lm_codec.decompress(mixed.blob, tiny_gpt2) == TEXT
    cold = lm_codec.compress(TEXT, tiny_gpt2, SMALL)
    assert "prime" not in cold.header and lm_codec.decompress(cold.blob, tiny_gpt2) == TEXT


def test_every_lane_reads_the_opening_first(tiny_gpt2):
    """The lanes' first distribution is the model's after the start token and the opening, for every lane; the
    opening itself is coded as one lane from the start token."""
    ids, _, _ = lm_codec.TokenMap(tiny_gpt2.tokenizer).to_tokens(TEXT)
    opening, lengths = PRIMED.layout(len(ids))
    runner = lm_codec._runner(tiny_gpt2, "fp32")
    start = lm_codec._start_id(tiny_gpt2.tokenizer)
    seen = []

    def choose(positions, active, probs):
        seen.append((list(positions), probs.copy()))
        return np.array([ids[p] for p in positions])

    lm_codec._code_tokens(runner, opening, lengths, start, PRIMED.window, PRIMED.keep, choose)
    assert [p for pos, _ in seen for p in pos] == lm_codec.coding_order(len(ids), opening, len(lengths))
    with torch.inference_mode():
        logits = tiny_gpt2.model(torch.tensor([[start] + ids[:opening]])).logits[0].float()
    expected = torch.softmax(logits, dim=-1).numpy()
    np.testing.assert_allclose(seen[0][1][0], expected[0], atol=1e-5)  # the opening's first token: after start
    positions, first_step = seen[opening]
    assert positions == [opening + sum(lengths[:k]) for k in range(len(lengths))]
    for row in first_step:  # every lane, not only the one that continues the opening
        np.testing.assert_allclose(row, expected[opening], atol=1e-5)


def test_an_opening_larger_than_what_a_rebuild_keeps_is_refused(tiny_gpt2):
    with pytest.raises(InputError, match="prime"):
        lm_codec.compress(TEXT, tiny_gpt2, dataclasses.replace(SMALL, prime=SMALL.keep + 1))


@pytest.mark.parametrize("changes", [dict(prime=10**6), dict(prime=-1), dict(prime=13), dict(prime=8, lanes=1),
                                     dict(prime="8")])
def test_a_header_with_an_impossible_opening_is_refused(tiny_gpt2, changes):
    from tests.test_fuzz_readers import _repack

    blob = lm_codec.compress(TEXT, tiny_gpt2, PRIMED).blob
    with pytest.raises(CorruptFile):
        lm_codec.decompress(_repack(blob, **changes), tiny_gpt2)


def test_compact_header_names_the_primed_rule_and_old_fast_files_keep_theirs(tiny_gpt2, monkeypatch):
    """A file of the primed rule stores its id (2) in the ~20-byte header; the decoder rebuilds the opening from
    it. The unprimed rule keeps id 0, which files made before the opening name."""
    monkeypatch.setitem(compact_header.MODEL_IDS, "tiny-gpt2", 63)
    small = dataclasses.replace(PRIMED, precision="auto", threads=0)
    monkeypatch.setitem(lm_codec.RULES, "fast-primed", small)
    monkeypatch.setitem(lm_codec.RULES, "fast", dataclasses.replace(small, prime=0))
    for rule, preset_id in (("fast-primed", 2), ("fast", 0)):
        s = dataclasses.replace(lm_codec.RULES[rule], precision="fp32")
        for mixer in (None, mixing.DEFAULT):
            blob = lm_codec.compress(TEXT, tiny_gpt2, s, mixer=mixer).blob
            header = lm_codec.read_header(blob)
            assert blob[4] in compact_header.VERSIONS and (blob[5] >> 2) & 3 == preset_id
            assert header["preset"] == rule
            assert lm_codec.decompress(blob, tiny_gpt2) == TEXT


def test_the_benchmarks_teacher_forced_estimate_follows_the_primed_layout(tiny_gpt2):
    """benchmarks/text_compression.py estimates a layout's bits without coding: for primed lanes it must count
    what the coder counts (the opening as one lane, every lane reading it), to within float noise."""
    from benchmarks.text_compression import teacher_forced_bits

    result = lm_codec.compress(TEXT, tiny_gpt2, PRIMED)
    ids, _, _ = lm_codec.TokenMap(tiny_gpt2.tokenizer).to_tokens(TEXT)
    opening, lengths = PRIMED.layout(len(ids))
    estimate = teacher_forced_bits(lm_codec._runner(tiny_gpt2, "fp32"), ids, lengths,
                                   lm_codec._start_id(tiny_gpt2.tokenizer), PRIMED.window, PRIMED.keep, opening)
    assert estimate == pytest.approx(result.cross_entropy_bits, rel=1e-4)
    cold = teacher_forced_bits(lm_codec._runner(tiny_gpt2, "fp32"), ids, lengths,
                               lm_codec._start_id(tiny_gpt2.tokenizer), PRIMED.window, PRIMED.keep)
    assert cold != pytest.approx(result.cross_entropy_bits, rel=1e-4)  # the check can tell the layouts apart


def test_the_mixing_picture_puts_every_token_back_in_text_order(tiny_gpt2):
    """The mixer's trace runs in coding order (the opening, then the lanes step by step); the picture maps it
    back: each token's model bits there equal the model-alone file's bits for the same token."""
    from models.compression.text import mixing_picture

    p = mixing_picture.picture(TEXT, tiny_gpt2, PRIMED)
    alone = lm_codec.compress(TEXT, tiny_gpt2, PRIMED)
    assert alone.header["prime"] == 8 and p.lanes == alone.header["lanes"] == 4
    assert "".join(t.text for t in p.tokens).encode() == TEXT
    assert [t.bits_model for t in p.tokens] == pytest.approx([t.bits for t in alone.tokens], rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("mixer", [None, "mix-2", "mix-4"])
def test_the_mixer_replay_counts_what_the_coder_counts(tiny_gpt2, mixer):
    """benchmarks/mixer_replay.py replays mixers over one recorded pass restricted to the text's own tokens
    plus one column for the rest: its cross-entropy must be the coder's (primed lanes, rebuilt windows), or
    the settings it picks mean nothing."""
    from benchmarks.mixer_replay import record, replay
    from models.compression.text import mixing

    settings = mixing.NAMED[mixer] if mixer else None
    result = lm_codec.compress(TEXT, tiny_gpt2, PRIMED, mixer=settings, unwrap=False)
    ids, _, _ = lm_codec.TokenMap(tiny_gpt2.tokenizer).to_tokens(TEXT)
    probs, tokens, opening, lengths = record(tiny_gpt2, ids, PRIMED.for_model(tiny_gpt2))
    assert opening == result.header["prime"] and len(lengths) == result.header["lanes"]
    assert probs.shape == (len(ids), len(set(ids)) + 1)
    assert replay(probs, tokens, opening, lengths, settings) == pytest.approx(result.cross_entropy_bits, rel=1e-4)


def test_the_neural_cache_replay_reads_only_positions_coded_before(tiny_gpt2):
    """benchmarks/neural_cache.py: a position may only look at positions of earlier coding steps (the
    decoder knows nothing else), and a state equal to an earlier one that saw the same token, at a sharp
    theta, predicts that token with probability ~1."""
    from benchmarks.mixer_replay import coding_steps, record
    from benchmarks.neural_cache import cache_probabilities

    ids, _, _ = lm_codec.TokenMap(tiny_gpt2.tokenizer).to_tokens(TEXT)
    s = PRIMED.for_model(tiny_gpt2)
    hidden = np.zeros((len(ids), tiny_gpt2.model.config.hidden_size), dtype=np.float32)
    _, tokens, opening, lengths = record(tiny_gpt2, ids, s, hidden)
    assert np.abs(hidden).sum(axis=1).min() > 0  # every position's state was recorded
    steps = coding_steps(opening, lengths)
    p, top = cache_probabilities(hidden, tokens, steps, [1.0])
    first = steps[0][1]
    assert (p[1.0][first] == 0).all() and (top[first] == 0).all()  # nothing coded before the first step
    assert ((p[1.0] >= 0) & (p[1.0] <= 1)).all()
    # the last position gets the state of an earlier one whose token it shares: the cache must find it
    last_step = steps[-1][1]
    x = last_step[0]
    earlier = next(j for _, ps in steps[:-1] for j in ps if tokens[j] == tokens[x] and j != x)
    hidden[x] = hidden[earlier]
    p, top = cache_probabilities(hidden, tokens, steps, [1000.0])
    assert top[x] == pytest.approx(1.0, abs=1e-5) and p[1000.0][x] > 0.99

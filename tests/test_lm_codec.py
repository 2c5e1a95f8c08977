"""LM + arithmetic coding: exact round trips on a tiny GPT-2, the coder's overhead, bad files."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.compression.text import container as text_container
from models.compression.text import lm_codec
from models.core.errors import CorruptFile, FingerprintMismatch, InputError

SMALL = lm_codec.CodecSettings(window=32, keep=12, lane_tokens=40, max_lanes=4, short_tokens=0, precision="fp32")


def roundtrip(data: bytes, loaded, s=SMALL) -> lm_codec.LMResult:
    result = lm_codec.compress(data, loaded, s)
    assert lm_codec.decompress(result.blob, loaded) == data
    return result


@pytest.mark.parametrize("data", [b"", b"a", b"\x00", "héllo wörld — ✓ 日本語 🙂".encode(), b"Hello world\r\n\tend"])
def test_roundtrip_small_inputs(tiny_gpt2, data):
    result = roundtrip(data, tiny_gpt2)
    assert result.header["n_bytes"] == len(data)
    assert result.header["mode"] == "text"


def test_binary_and_invalid_utf8_use_byte_tokens(tiny_gpt2):
    data = b"valid text \xff\xfe then more \xc3(" + bytes(range(256))
    result = roundtrip(data, tiny_gpt2)
    assert result.header["mode"] == "mixed"
    assert "not UTF-8 text" in result.note


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=60))
def test_random_unicode_roundtrips(tiny_gpt2, text):
    roundtrip(text.encode("utf-8", "surrogatepass"), tiny_gpt2)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=40))
def test_random_bytes_roundtrip(tiny_gpt2, data):
    roundtrip(data, tiny_gpt2)


def test_long_text_over_several_windows_and_lanes(tiny_gpt2):
    text = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
            "it was the age of foolishness, 1775 and 42. ") * 6
    result = roundtrip(text.encode(), tiny_gpt2)
    n = result.header["n_tokens"]
    assert result.header["lanes"] == 4
    lengths = lm_codec.lane_lengths(n, 4)
    assert max(lengths) > SMALL.window  # every lane rebuilt its context at least once
    assert sum(lengths) == n
    assert len(result.tokens) == n


def test_bf16_roundtrip(tiny_gpt2):
    s = dataclasses.replace(SMALL, precision="bf16")
    result = roundtrip(b"The cat sat on the mat. " * 8, tiny_gpt2, s)
    assert result.header["fingerprint"]["precision"] == "bf16"


def test_one_lane_and_many_lanes_give_same_text(tiny_gpt2):
    data = ("abc def ghi " * 30).encode()
    for lanes in (1, 3, 7):
        roundtrip(data, tiny_gpt2, dataclasses.replace(SMALL, lanes=lanes))


def test_coded_size_matches_cross_entropy(tiny_gpt2):
    """The range coder's payload is the model's cross-entropy plus a small stated overhead."""
    data = ("The quick brown fox jumps over the lazy dog. " * 12).encode()
    result = roundtrip(data, tiny_gpt2)
    ce = result.cross_entropy_bits
    # constriction's range coder: < 0.1 % per symbol for its 24-bit quantisation, plus at most
    # two 32-bit words of flush.
    assert ce > 100
    assert ce - 1 <= result.payload_bits <= ce * 1.01 + 64


def test_known_distribution_codes_at_its_entropy():
    """Direct check of the coder on a known distribution: size within 1 % + 64 bits of the entropy."""
    import constriction

    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.full(50, 0.3)).astype(np.float32)
    symbols = rng.choice(50, size=4000, p=probs / probs.sum()).astype(np.int32)
    enc = constriction.stream.queue.RangeEncoder()
    enc.encode(symbols, lm_codec._family(), np.tile(probs, (len(symbols), 1)))
    bits = 32 * len(enc.get_compressed())
    ideal = float(-np.log2(probs[symbols] / probs.sum()).sum())
    assert ideal <= bits <= ideal * 1.01 + 64


def test_fingerprint_mismatch_is_refused(tiny_gpt2):
    result = lm_codec.compress(b"some text to code", tiny_gpt2, SMALL)
    header, payload = text_container.unpack(result.blob)
    header["fingerprint"]["weights_sha256"] = "0" * 64
    header["fingerprint"]["torch"] = "0.0.1"
    forged = text_container.pack({k: v for k, v in header.items() if not k.startswith("payload_")}, payload)
    with pytest.raises(FingerprintMismatch, match="weights_sha256.*torch"):
        lm_codec.decompress(forged, tiny_gpt2)


def test_other_precision_is_a_fingerprint_mismatch(tiny_gpt2):
    result = lm_codec.compress(b"some text", tiny_gpt2, SMALL)
    header, payload = text_container.unpack(result.blob)
    header["fingerprint"]["precision"] = "bf16"
    header["fingerprint"]["device_type"] = "cuda"
    forged = text_container.pack({k: v for k, v in header.items() if not k.startswith("payload_")}, payload)
    with pytest.raises(FingerprintMismatch, match="device_type"):
        lm_codec.decompress(forged, tiny_gpt2)


def test_truncated_and_flipped_files(tiny_gpt2):
    blob = lm_codec.compress(b"a text long enough to have a payload of a few words", tiny_gpt2, SMALL).blob
    with pytest.raises(CorruptFile, match="truncated"):
        lm_codec.decompress(blob[:-3], tiny_gpt2)
    flipped = bytearray(blob)
    flipped[-2] ^= 0x10
    with pytest.raises(CorruptFile, match="checksum"):
        lm_codec.decompress(bytes(flipped), tiny_gpt2)
    with pytest.raises(CorruptFile, match="start with the letters LMLT"):
        lm_codec.decompress(b"PK\x03\x04" + blob[4:], tiny_gpt2)
    with pytest.raises(CorruptFile):
        lm_codec.decompress(b"", tiny_gpt2)


def test_bad_settings(tiny_gpt2):
    with pytest.raises(InputError, match="window"):
        lm_codec.compress(b"x", tiny_gpt2, dataclasses.replace(SMALL, window=10_000))
    with pytest.raises(InputError, match="keep"):
        lm_codec.compress(b"x", tiny_gpt2, dataclasses.replace(SMALL, keep=40))
    with pytest.raises(InputError):
        lm_codec.compress("not bytes", tiny_gpt2, SMALL)


def test_the_command_line_samples_as_the_page_does(tiny_gpt2, monkeypatch, capsys):
    """``text sample`` decodes a seed's random bits as step 4 of the lesson does (the same text for the same
    seed, here and on the page), and stops where the model ends its text."""
    from models.compression.text import cli, coding_steps

    monkeypatch.setattr(lm_codec.registry, "load_causal_lm", lambda *_a, **_k: tiny_gpt2)

    def sample(seed: int, tokens: int = 12) -> tuple[str, str]:
        assert cli.main(["sample", "--seed", str(seed), "--tokens", str(tokens), "--prompt", "The"]) == 0
        out = capsys.readouterr()
        return out.out, out.err

    text, said = sample(3)
    _, steps = coding_steps.sampling_steps(tiny_gpt2, 3, 12, "The")
    assert text == "The" + "".join(s.token for s in steps) + "\n" and text == sample(3)[0] != sample(4)[0]
    assert f"{len(steps)} tokens decoded from the random bits of seed 3;" in said
    end_id = steps[4].token_id  # pretend the random model's fifth token is its end of text
    monkeypatch.setattr(coding_steps, "text_end_ids", lambda tokenizer: frozenset({end_id}))
    first = next(i for i, s in enumerate(steps) if s.token_id == end_id)
    text, said = sample(3)
    assert text == "The" + "".join(s.token for s in steps[:first]) + "\n"
    assert f"{first + 1} tokens decoded from the random bits of seed 3 (the last is the model's end of text)" in said
    assert cli.main(["sample", "--tokens", "0"]) == 2  # refused with the page's message


def test_cancel(tiny_gpt2):
    import threading

    from models.core.errors import Cancelled

    event = threading.Event()
    event.set()
    with pytest.raises(Cancelled):
        lm_codec._lockstep(lm_codec._runner(tiny_gpt2, "fp32"), [5], 0, 16, 4, lambda s, a, p: np.zeros(len(a), int),
                           lm_codec.cancel_check(event))


@pytest.mark.slow
def test_smollm_paragraph_roundtrip(smollm):
    text = (b"Alice was beginning to get very tired of sitting by her sister on the bank, and of having "
            b"nothing to do: once or twice she had peeped into the book her sister was reading.")
    result = lm_codec.compress(text, smollm, lm_codec.CodecSettings(window=64, keep=32, lanes=2))
    assert lm_codec.decompress(result.blob, smollm) == text
    assert result.payload_bits / len(text) < 3.0  # a real model beats every classic coder on prose
    ce = result.cross_entropy_bits  # short text: the last 32-bit words of the coder dominate the overhead
    assert ce - 1 <= result.payload_bits <= ce * 1.01 + 64


def test_thread_count_is_recorded_and_adopted(tiny_gpt2):
    import torch

    before = torch.get_num_threads()
    result = lm_codec.compress(b"threads are part of the recipe " * 4, tiny_gpt2,
                               dataclasses.replace(SMALL, threads=1))
    assert result.header["threads"] == 1 and torch.get_num_threads() == before  # restored after coding
    assert lm_codec.decompress(result.blob, tiny_gpt2) == b"threads are part of the recipe " * 4


def test_compact_preset_takes_the_models_context(tiny_gpt2):
    compact = lm_codec.PRESETS["compact"].for_model(tiny_gpt2)
    assert (compact.window, compact.keep) == (128, 64)  # the tiny model's n_positions, and half of it
    assert lm_codec.PRESETS["fast"].for_model(tiny_gpt2) == lm_codec.PRESETS["fast"]
    data = ("A long lane sees the whole context window. " * 30).encode()
    result = roundtrip(data, tiny_gpt2, dataclasses.replace(lm_codec.PRESETS["compact"], precision="fp32"))
    assert result.header["window"] == 128 and result.header["lanes"] == 1
    assert lm_codec.PRESETS["fast"].lane_count(41_933) == 94  # alice29: lanes of at most 450 tokens


def test_header_is_small(tiny_gpt2):
    """A paragraph codes to a few hundred bits: the fingerprinted header must not dominate the file."""
    result = lm_codec.compress(b"Short.", tiny_gpt2, SMALL)
    assert len(result.blob) - result.header["payload_bytes"] < 160


def test_forged_lane_count_is_refused(tiny_gpt2):
    result = lm_codec.compress(b"a text that is long enough for several lanes of tokens", tiny_gpt2,
                               dataclasses.replace(SMALL, lanes=3))
    header, payload = text_container.unpack(result.blob)
    for lanes in (0, header["n_tokens"] + 1, -2):
        forged = text_container.pack({**{k: v for k, v in header.items() if not k.startswith("payload_")},
                                      "lanes": lanes}, payload)
        with pytest.raises(CorruptFile, match="do not fit together"):
            lm_codec.decompress(forged, tiny_gpt2)


def test_preallocated_cache_matches_the_dynamic_cache(tiny_gpt2):
    """Writing keys and values into preallocated buffers changes no probability (beyond float rounding)."""
    import torch

    from models.engines import kv_cache

    runner = lm_codec._runner(tiny_gpt2, "fp32")
    ids = torch.tensor([[5, 17, 300, 42, 9], [7, 7, 1000, 3, 2]])
    dyn, p_dyn = runner.forward(ids, None)
    pre, p_pre = runner.forward(ids, kv_cache.preallocated(runner.config, 8))
    for token in (11, 12, 13):
        step = torch.tensor([[token], [token + 1]])
        dyn, p_dyn = runner.forward(step, dyn)
        pre, p_pre = runner.forward(step, pre)
        np.testing.assert_allclose(p_pre, p_dyn, rtol=1e-5, atol=1e-7)
    assert pre.get_seq_length() == 8
    with pytest.raises(RuntimeError, match="holds 8 positions"):
        runner.forward(torch.tensor([[1], [2]]), pre)
    kv_cache.reset(pre)
    assert pre.get_seq_length() == 0
    _, again = runner.forward(ids, pre)  # a rebuilt context reuses the buffers
    _, fresh = runner.forward(ids, None)
    np.testing.assert_allclose(again, fresh, rtol=1e-5, atol=1e-7)


def test_sliding_window_models_keep_the_default_cache(gpt2_tokenizer):
    """Mistral-style sliding-window layers need transformers' own caches: the codec still round-trips."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    from models.core.device import pick
    from models.core.registry import Loaded, ModelSpec, model_nbytes
    from models.engines import kv_cache

    torch.manual_seed(0)
    config = MistralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           num_key_value_heads=1, sliding_window=16, max_position_embeddings=128,
                           vocab_size=len(gpt2_tokenizer))
    model = MistralForCausalLM(config).eval()
    assert kv_cache.preallocated(config, 64) is None
    loaded = Loaded(ModelSpec("tiny-mistral", "tiny Mistral (test)", "causal-lm", "local", ""), model,
                    gpt2_tokenizer, pick("cpu"), model_nbytes(model))
    roundtrip(("Sliding windows forget the distant past. " * 8).encode(), loaded)
    primed = roundtrip(("Sliding windows forget the distant past. " * 8).encode(), loaded,
                       dataclasses.replace(SMALL, prime=8))  # the opening's cache copied to every lane
    assert primed.header["prime"] == 8 and primed.header["lanes"] > 1


def test_short_texts_get_few_long_lanes():
    fast = lm_codec.PRESETS["fast"]
    assert [fast.lane_count(n) for n in (1, 1999, 2000, 4000, 4500)] == [1, 1, 2, 3, 3]  # up to ~16 kB of prose
    assert fast.lane_count(4501) == 11 and fast.lane_count(41_933) == 94  # longer texts keep 450-token lanes
    assert lm_codec.PRESETS["compact"].lane_count(4000) == 1
    assert dataclasses.replace(fast, lanes=4).lane_count(1000) == 4  # an explicit count wins

"""The compact .lmlt header (versions 3 and 4 read, 8 and 13 written): ~22 bytes that still refuse a mismatched
decoder by name, plus the 4-byte CRC32 that refuses a damaged file before decoding."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from models.compression.text import compact_header, lm_codec
from models.compression.text import container as text_container
from models.core.errors import CorruptFile, FingerprintMismatch, LMLabError
from tests.codec_helpers import compact_settings

TEXT = b"A language model is a lossless compressor: likely words cost almost nothing."


def test_compact_header_roundtrip(catalogued):
    result = lm_codec.compress(TEXT, catalogued, compact_settings())
    header = lm_codec.read_header(result.blob)
    assert result.blob[:5] == b"LMLT\x16"  # version 22: version 8 with two-step coding
    # the header, and the CRC32 at the end of the record (4 bytes)
    assert header["header_bytes"] <= 24 and len(result.blob) - result.header["payload_bytes"] <= 28
    assert header["preset"] == "compact" and header["fingerprint"]["model"] == "tiny-gpt2"
    assert header["n_bytes"] == len(TEXT) and header["n_tokens"] == result.header["n_tokens"]
    assert lm_codec.decompress(result.blob, catalogued) == TEXT


@pytest.mark.parametrize("data", [b"", b"a", bytes(range(256)) + b"\xff\xfe"])
def test_compact_header_edge_inputs(catalogued, data):
    result = lm_codec.compress(data, catalogued, compact_settings())
    assert result.blob[4] == 22
    assert lm_codec.decompress(result.blob, catalogued) == data


def test_custom_settings_and_other_models_keep_the_version_2_header(catalogued, tiny_gpt2):
    custom = lm_codec.compress(TEXT, catalogued, compact_settings(window=64, keep=16))
    assert custom.blob[4] == 14 and lm_codec.decompress(custom.blob, catalogued) == TEXT
    many_threads = lm_codec.compress(TEXT, catalogued, compact_settings(threads=17))
    assert many_threads.blob[4] == 14


def test_version_2_file_of_the_same_text_still_decodes(catalogued):
    """A version 2 record (the old format) with the same payload decodes to the same text."""
    result = lm_codec.compress(TEXT, catalogued, compact_settings())
    _, payload = text_container.unpack(result.blob)
    fp = {k: v for k, v in result.header["fingerprint"].items()}
    old = {k: v for k, v in result.header.items() if not k.startswith("payload_")} | {"fingerprint": fp}
    raw = text_container._deflate(json.dumps(old | {"payload_bytes": len(payload), "payload_crc32": zlib.crc32(payload)},
                                             sort_keys=True, separators=(",", ":")).encode())
    blob = text_container._PREFIX.pack(text_container.MAGIC, 2, len(raw)) + raw + payload  # as version 2 wrote it
    assert len(blob) > len(result.blob) + 50
    assert lm_codec.decompress(blob, catalogued) == TEXT


def test_other_weights_are_refused_by_name(catalogued, gpt2_tokenizer):
    import torch
    from transformers import GPT2LMHeadModel

    from models.core.registry import Loaded, model_nbytes

    result = lm_codec.compress(TEXT, catalogued, compact_settings())
    torch.manual_seed(1)
    other = GPT2LMHeadModel(catalogued.model.config).eval()
    changed = Loaded(catalogued.spec, other, gpt2_tokenizer, catalogued.device, model_nbytes(other))
    with pytest.raises(FingerprintMismatch, match="weights or tokenizer") as info:
        lm_codec.decompress(result.blob, changed)
    named = str(info.value).split(" differ.")[0]
    assert "machine" not in named and "library" not in named


def test_other_library_version_is_refused_by_name(catalogued, monkeypatch):
    result = lm_codec.compress(TEXT, catalogued, compact_settings())
    real = lm_codec._version
    monkeypatch.setattr(lm_codec, "_version", lambda p: "99.0" if p == "transformers" else real(p))
    with pytest.raises(FingerprintMismatch, match=r"library versions.*transformers '99.0'") as info:
        lm_codec.decompress(result.blob, catalogued)
    assert "weights" not in str(info.value).split(" differ.")[0]


def test_digest_names_each_group():
    fp = {"model": "m", "weights_sha256": "a", "tokenizer_sha256": "b", "device_type": "cpu", "kernel": "AVX2",
          "torch": "2", "transformers": "5", "constriction": "0.5", "codec": "c", "precision": "bf16",
          "settings": {"window": 1024}}
    d = compact_header.digest(fp)
    assert len(d) == 8 and compact_header.differences(d, fp) == []
    assert [x.split(" (")[0] for x in compact_header.differences(d, fp | {"kernel": "AVX512"})] == \
        ["the machine type"]
    assert [x.split(" (")[0] for x in compact_header.differences(d, fp | {"settings": {"window": 512}})] == \
        ["the codec and its settings"]


def test_damaged_compact_files(catalogued):
    result = lm_codec.compress(TEXT * 3, catalogued, compact_settings())
    blob = result.blob
    for bad in (blob[:10], blob[:5] + b"\x03" + blob[6:7]):
        with pytest.raises(CorruptFile):
            lm_codec.decompress(bad, catalogued)
    newer = blob[:6] + bytes([blob[6] & 0xC0 | 40]) + blob[7:-4]  # a model id a newer LM Lab may know
    with pytest.raises(CorruptFile, match="does not know"):
        lm_codec.decompress(newer + struct.pack("<I", zlib.crc32(newer)), catalogued)
    with pytest.raises(CorruptFile, match="checksum does not match"):  # the same byte changed by damage
        lm_codec.decompress(newer + blob[-4:], catalogued)
    start = len(blob) - result.header["payload_bytes"]
    # the payload, its last byte (bits the range decoder may never need) and the CRC: caught before decoding
    for pos in (start, (start + len(blob)) // 2, len(blob) - 5, len(blob) - 1):
        flipped = bytearray(blob)
        flipped[pos] ^= 0x10
        with pytest.raises(CorruptFile, match="checksum does not match"):
            lm_codec.decompress(bytes(flipped), catalogued)
    with pytest.raises(CorruptFile, match="not part of any record"):
        lm_codec.decompress(compact_header.sized(blob) + b"x", catalogued)


def test_compact_records_join_and_split(catalogued):
    parts = [TEXT, b"second record", b""]
    blobs = [lm_codec.compress(p, catalogued, compact_settings()).blob for p in parts]
    joined = text_container.join_records(blobs)
    records = text_container.split_records(joined)
    assert len(records) == 3
    assert [lm_codec.decompress(r, catalogued) for r in records] == parts
    assert text_container.join_records(blobs[:1]) == blobs[0]  # a single record stays unsized


@pytest.mark.slow
def test_teacher_paragraph_file_beats_the_goal(smollm):
    """A real 302-byte paragraph with the default settings: at most 1.85 bits/byte as a whole file."""
    paragraph = (b"Photosynthesis is the process plants use to turn light into chemical energy. Inside the "
                 b"chloroplasts, chlorophyll absorbs sunlight, and the plant uses that energy to combine carbon "
                 b"dioxide from the air with water from the soil. The products are glucose, food for the plant, "
                 b"and the oxygen it gives off.")
    assert len(paragraph) == 302
    result = lm_codec.compress(paragraph, smollm)
    assert len(result.blob) - result.header["payload_bytes"] <= 28  # with the CRC32
    assert 8 * len(result.blob) / len(paragraph) <= 1.85
    assert lm_codec.decompress(result.blob, smollm) == paragraph


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(flips=[(240, 14), (987, 202)], cut=None)  # once made the range decoder raise a bare AssertionError
@given(st.lists(st.tuples(st.integers(0, 10**4), st.integers(0, 255)), min_size=1, max_size=4),
       st.one_of(st.none(), st.integers(0, 10**4)))
def test_mutated_compact_files_give_typed_errors(catalogued, flips, cut):
    blob = bytearray(lm_codec.compress(TEXT, catalogued, compact_settings()).blob)
    for pos, byte in flips:
        blob[pos % len(blob)] = byte
    if cut is not None:
        del blob[cut % len(blob):]
    for read in (text_container.unpack, text_container.split_records,
                 lambda b: lm_codec.decompress(b, catalogued)):
        try:
            read(bytes(blob))
        except LMLabError:
            pass

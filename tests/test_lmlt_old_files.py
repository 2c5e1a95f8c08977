"""Files written by earlier LM Labs (format versions 2, 3, 4, 13 and 17) still decode to their bytes.

The fixtures in tests/data/lmlt/ were made once by the codec as it stood before the mixing coder
changed the format: ``old_text.bin`` (a paragraph, an accented letter and two invalid UTF-8 bytes)
coded with the tiny test GPT-2 under custom settings (version 2 JSON header) and under the compact
preset with the test-only catalogue id 63 (version 3), and its UTF-8 part coded with the embedded
SmolLM2 and the fast preset (version 3). The mixing coder's first files (mixer "mix-1") code that text
twice (its UTF-8 part twice for SmolLM2), so the n-gram and match models have something to learn:
the default mixer under the compact preset (version 4, tiny GPT-2) and the fast preset (version 4,
SmolLM2), and other mixer settings recorded in full (version 2, tiny GPT-2). Never regenerate them:
they stand for files users keep.
A decoder on another machine type refuses them by fingerprint; that is a skip, not a pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from models.compression.text import compact_header, lm_codec
from models.core.errors import CorruptFile, FingerprintMismatch

DATA = Path(__file__).parent / "data" / "lmlt"
TEXT = (DATA / "old_text.bin").read_bytes()


def _cpu_vendor() -> str:
    try:
        return next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("vendor_id")), "")
    except OSError:
        return ""


def decode_or_skip(blob: bytes, loaded) -> bytes:
    try:
        return lm_codec.decompress(blob, loaded)
    except FingerprintMismatch as exc:  # made on x86-64 AVX512, torch 2.13.0+cpu, transformers 5.24.0
        pytest.skip(f"fixture made on another setup: {exc}")
    except CorruptFile as exc:
        # The fingerprint names the kernel ("AVX512"), not the CPU's maker: on an AMD AVX512 CPU the same torch
        # computes other float sums than on the Intel one the fixtures were made on, and the decoder refuses them
        # at the checksum (nothing written). Where they were made, that is a failure.
        if _cpu_vendor() not in ("", "GenuineIntel"):
            pytest.skip(f"fixture made on an Intel CPU, this one is {_cpu_vendor()}: {exc}")
        raise


def test_version_2_file_decodes(tiny_gpt2):
    blob = (DATA / "v2_tiny_gpt2.lmlt").read_bytes()
    assert blob[4] == 2
    assert decode_or_skip(blob, tiny_gpt2) == TEXT


def test_version_3_file_decodes(tiny_gpt2, monkeypatch):
    monkeypatch.setitem(compact_header.MODEL_IDS, "tiny-gpt2", 63)
    blob = (DATA / "v3_tiny_gpt2.lmlt").read_bytes()
    assert blob[4] == 3 and lm_codec.read_header(blob)["preset"] == "compact"
    assert decode_or_skip(blob, tiny_gpt2) == TEXT


def test_version_3_smollm_fast_file_decodes(smollm):
    blob = (DATA / "v3_smollm2_fast.lmlt").read_bytes()
    assert blob[4] == 3 and lm_codec.read_header(blob)["preset"] == "fast"
    assert decode_or_skip(blob, smollm) == TEXT[:TEXT.index(b"\xff")]


def test_version_4_mix_1_file_decodes(tiny_gpt2, monkeypatch):
    monkeypatch.setitem(compact_header.MODEL_IDS, "tiny-gpt2", 63)
    blob = (DATA / "v4_tiny_gpt2.lmlt").read_bytes()
    header = lm_codec.read_header(blob)
    assert blob[4] == 4 and header["preset"] == "compact" and header["mixer_id"] == "mix-1"
    assert decode_or_skip(blob, tiny_gpt2) == TEXT * 2


def test_version_2_file_with_mix_1_settings_decodes(tiny_gpt2):
    blob = (DATA / "v2_tiny_gpt2_mixed.lmlt").read_bytes()
    assert blob[4] == 2 and lm_codec.read_header(blob)["mixer"]["orders"] == [1, 2]
    assert decode_or_skip(blob, tiny_gpt2) == TEXT * 2


def test_version_4_smollm_fast_file_decodes(smollm):
    blob = (DATA / "v4_smollm2_fast.lmlt").read_bytes()
    assert blob[4] == 4 and lm_codec.read_header(blob)["mixer_id"] == "mix-1"
    assert decode_or_skip(blob, smollm) == TEXT[:TEXT.index(b"\xff")] * 2


# Files of the formats written before two-step coding (versions 13 and 17, every token coded over the whole
# vocabulary in one step), made once by the codec as it stood then: ``old_text.bin`` twice with the tiny
# GPT-2 and the mixing coder, and ``old_wrapped.bin`` (a paragraph of alice29 filled at 60 characters with
# CR LF line ends, twice) with the tiny GPT-2 and with SmolLM2's fast preset, coded unwrapped.
WRAPPED = (DATA / "old_wrapped.bin").read_bytes()


def test_version_13_file_decodes(tiny_gpt2, monkeypatch):
    monkeypatch.setitem(compact_header.MODEL_IDS, "tiny-gpt2", 63)
    blob = (DATA / "v13_tiny_gpt2.lmlt").read_bytes()
    header = lm_codec.read_header(blob)
    assert blob[4] == 13 and header["mixer_id"] == "mix-2" and "coding" not in header
    assert decode_or_skip(blob, tiny_gpt2) == TEXT * 2


def test_version_17_file_decodes(tiny_gpt2, monkeypatch):
    monkeypatch.setitem(compact_header.MODEL_IDS, "tiny-gpt2", 63)
    blob = (DATA / "v17_tiny_gpt2.lmlt").read_bytes()
    assert blob[4] == 17 and lm_codec.read_header(blob)["line_breaks"]["width"] == 59
    assert decode_or_skip(blob, tiny_gpt2) == WRAPPED


def test_version_17_smollm_fast_file_decodes(smollm):
    blob = (DATA / "v17_smollm2_fast.lmlt").read_bytes()
    assert blob[4] == 17 and lm_codec.read_header(blob)["preset"] == "fast-primed"
    assert decode_or_skip(blob, smollm) == WRAPPED

"""A .lmhz compressed checkpoint runs as a model: decompressed in memory, sha256 checked, same logits."""

from __future__ import annotations

import pytest
import torch

from models.core import registry
from models.core.errors import CorruptFile
from tests.lmhz_helpers import compressed_copy, saved_tiny_gpt2


@pytest.fixture
def compressed_tiny(tiny_gpt2, tmp_path, monkeypatch):
    folder = saved_tiny_gpt2(tiny_gpt2, tmp_path, monkeypatch)
    out = compressed_copy(folder, "tiny-test.lmhz")
    yield folder, out
    out.unlink(missing_ok=True)
    registry.CACHE.clear()


def test_lmhz_is_offered_and_gives_the_same_logits(compressed_tiny):
    folder, lmhz = compressed_tiny
    keys = [key for _, key in registry.choices(registry.CAUSAL_LM)]
    assert "lmhz:tiny-test.lmhz" in keys
    spec = registry.get("lmhz:tiny-test.lmhz", registry.CAUSAL_LM)
    assert spec.note == f"local:{folder}" and "compressed" in spec.label
    original = registry.load_causal_lm(f"local:{folder}", device="cpu")
    restored = registry.load_causal_lm("lmhz:tiny-test.lmhz", device="cpu")
    assert restored.model is not original.model
    ids = torch.tensor([[464, 3797, 3332, 319, 262, 2603, 13]])
    with torch.inference_mode():
        assert torch.equal(original.model(ids).logits, restored.model(ids).logits)
    status = registry.compressed_status(spec)
    assert "MB compressed" in status and "sha256 verified" in status


def test_damaged_lmhz_is_refused(compressed_tiny):
    _, lmhz = compressed_tiny
    blob = bytearray(lmhz.read_bytes())
    blob[len(blob) // 3] ^= 0xFF  # inside the payload: a tensor's CRC32/sha256 fails
    lmhz.write_bytes(bytes(blob))
    spec = registry.get("lmhz:tiny-test.lmhz", registry.CAUSAL_LM)  # the header at the end is intact
    with pytest.raises(CorruptFile):
        from transformers import AutoModelForCausalLM

        registry.from_pretrained(AutoModelForCausalLM, spec, registry.hub_load_kwargs(spec))


def test_foreign_lmhz_is_not_offered(compressed_tiny, tmp_path):
    _, lmhz = compressed_tiny
    other = registry.compressed_dir() / "not-a-model.lmhz"
    other.write_bytes(b"LMLABHZ\x01 not really")
    try:
        keys = [key for _, key in registry.choices(registry.CAUSAL_LM)]
        assert "lmhz:not-a-model.lmhz" not in keys and "lmhz:tiny-test.lmhz" in keys
    finally:
        other.unlink()

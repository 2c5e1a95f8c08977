"""Files the app writes for one visitor to download: each in its own folder with an unguessable name.

On a public Space every visitor can fetch any file the server serves by its path, so a name made of
a time and an uploaded file's name (guessable) would hand one visitor's results to another. Every
file the app writes for a visitor (batch NER results, compressed and restored files, run exports)
goes to ``<data folder>/downloads/<32 hex digits>/<name>``: 128 random bits from ``secrets``, so the
link handed to that visitor is the only way to it. ``app.py`` serves only this folder of the data
folder (gradio copies each returned file into its own cache, also under an unguessable name).

Folders older than ``KEEP_SECONDS`` are removed when a new one is made.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path

from models.core import settings
from models.core.filenames import safe_name

TOKEN_BYTES = 16  # 128 random bits
KEEP_SECONDS = 24 * 3600


def root() -> Path:
    """The one folder of the data folder that the app serves (created on first use)."""
    path = settings.home() / "downloads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _prune(folder: Path, now: float) -> None:
    for old in folder.iterdir():
        try:
            if old.is_dir() and not old.is_symlink() and now - old.stat().st_mtime > KEEP_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:  # another request removed it first
            pass


def new_folder() -> Path:
    """A new, empty folder named by 128 random bits (mode 0700), for one visitor's files."""
    base = root()
    _prune(base, time.time())
    folder = base / secrets.token_hex(TOKEN_BYTES)
    folder.mkdir(mode=0o700)  # a clash (2^-128) raises instead of sharing a folder
    return folder


def path_for(name: object, default: str = "file", suffix: str = "") -> Path:
    """Where to write one file for a visitor: a fresh folder, and a safe version of ``name``."""
    return new_folder() / safe_name(name, default, suffix)


def is_handout(path: str | os.PathLike) -> bool:
    """Whether ``path`` lies in the folder the app serves (symlinks resolved)."""
    return Path(path).resolve().is_relative_to(root().resolve())

"""Process-wide settings: the data folder, the local datasets folder, offline mode.

They come from the environment (``LMLAB_HOME``, ``LMLAB_DATA_DIR``, ``LMLAB_OFFLINE``)
so that subprocesses (training runs) inherit them; ``app.py`` flags set the same
variables before anything is loaded.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def home() -> Path:
    """The one folder the app writes to (default ``~/.cache/lmlab``)."""
    path = Path(os.environ.get("LMLAB_HOME") or Path.home() / ".cache" / "lmlab").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


# How a visitor is told to get a data set the app does not have: in a teacher's words (the flag that sets the
# folder is the host's business and is in the README).
DATA_HINT = "whoever runs LM Lab can give it a data folder holding it (the README says how)"


def data_dir() -> Path | None:
    """The local datasets folder (``conll2003/``, ``wikitext-2/``) named by ``--data-dir`` / ``LMLAB_DATA_DIR``.

    None when neither names one: the app never guesses a folder from where its code happens to lie.
    """
    value = os.environ.get("LMLAB_DATA_DIR")
    return Path(value).expanduser() if value else None


def offline() -> bool:
    """True when the hub must never be tried (flag, or the standard HF variables)."""
    return any(
        os.environ.get(name, "").lower() in {"1", "true", "yes"}
        for name in ("LMLAB_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def public_mode() -> bool:
    """Public hosting: on automatically on a Hugging Face Space."""
    return bool(os.environ.get("SPACE_ID")) or os.environ.get("LMLAB_PUBLIC", "") == "1"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))

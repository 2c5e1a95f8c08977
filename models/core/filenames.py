"""Safe file names for anything the app writes or offers for download.

A name can come from a stranger (an uploaded file, or a name recorded inside a compressed file);
it must never climb out of the folder it is written to, nor be a device or hidden name.
"""

from __future__ import annotations

import re
import unicodedata

MAX_NAME = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_name(name: object, default: str = "file", suffix: str = "") -> str:
    """One path component made of ``[A-Za-z0-9._+-]``, never empty, hidden, '.' or '..'.

    Directories are dropped ('../../x' -> 'x'); other characters become '_'; ``suffix`` is
    added when the name does not already end with it.
    """
    text = name if isinstance(name, str) else ""
    text = text.replace("\\", "/").split("/")[-1]
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = _UNSAFE.sub("_", text).strip("._") or default
    if suffix and not text.endswith(suffix):
        text += suffix
    if len(text) > MAX_NAME:  # keep the suffix visible
        keep = len(suffix) if suffix and text.endswith(suffix) else 0
        text = text[: MAX_NAME - keep] + (text[-keep:] if keep else "")
    return text

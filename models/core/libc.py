"""The C library calls LM Lab makes (glibc only), in one place.

``malloc_trim`` is glibc's public API, present since glibc 2.8; anywhere else (musl, macOS) the call
does nothing.
"""

from __future__ import annotations

import ctypes
import os


def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the glibc this process runs on; None for another C library."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else None
    except (AttributeError, ValueError, OSError):
        return None


def malloc_trim() -> bool:
    """Hand the memory glibc keeps in its heaps after ``free`` back to the system; False where not glibc >= 2.8.

    Measured: the app held ~275 MB more after a class of 30 than before it, with no request left.
    """
    version = glibc_version()
    if version is None or version < (2, 8):
        return False
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return True

"""models/core/libc.py: glibc's malloc_trim where there is glibc, nothing elsewhere."""

from __future__ import annotations

import os

from models.core import libc


def test_trims_on_glibc_and_does_nothing_on_another_c_library(monkeypatch) -> None:
    if libc.glibc_version() is not None:
        assert libc.malloc_trim() is True
    monkeypatch.setattr(os, "confstr", lambda name: "musl 1.2.4")
    assert libc.glibc_version() is None
    assert libc.malloc_trim() is False

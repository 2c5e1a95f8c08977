"""Scratch bytes kept from one call to the next, handed out by a bump allocator.

Fresh memory is not free: the kernel zeroes and maps every page on first touch. Extracting
MiniLM's 22.7 MB of bf16 exponents into a fresh array took 7-11 ms, into memory already mapped
4 ms. So the codec borrows one buffer (up to ``KEEP`` bytes, kept for the next call) and cuts it
into the arrays it needs; a request beyond what is left, or a buffer already lent to another
call, falls back to ``np.empty``.

    with scratch.arena(total) as take:
        plane = take(n)  # uint8[n]; valid only inside the block
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

KEEP = 64 << 20  # larger buffers are not kept: their page faults are a small part of their cost

_lock = threading.Lock()
_kept: list[np.ndarray] = []  # at most one idle buffer


class _Bump:
    def __init__(self, buf: np.ndarray | None) -> None:
        self.buf, self.used, self.lock = buf, 0, threading.Lock()

    def take(self, n: int) -> np.ndarray:
        with self.lock:
            if self.buf is not None and self.used + n <= len(self.buf):
                out = self.buf[self.used:self.used + n]
                self.used += n
                return out
        return np.empty(n, np.uint8)


@contextmanager
def arena(size: int) -> Iterator[Callable[[int], np.ndarray]]:
    """``take(n)`` hands out up to ``size`` bytes, from the kept buffer where it is free and large enough.

    Nothing taken may be used after the block ends: the buffer goes back for the next call.
    """
    buf = None
    if 0 < size <= KEEP:
        with _lock:
            if _kept and len(_kept[0]) >= size:
                buf = _kept.pop()
        if buf is None:
            buf = np.empty(size, np.uint8)
    try:
        yield _Bump(None if buf is None else buf[:size]).take
    finally:
        if buf is not None:
            with _lock:
                if not _kept or len(_kept[0]) < len(buf):
                    _kept[:] = [buf]

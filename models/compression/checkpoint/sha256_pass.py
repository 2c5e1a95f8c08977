"""sha256 of a file and of byte ranges within it (its tensors) in one pass that never takes the GIL.

hashlib releases the GIL while it hashes but must take it back between calls. While compressing,
the hashing thread shares the GIL with the thread that plans tensors, and a hand-back can wait up
to the interpreter's switch interval: MiniLM's 60 ms of hashing took 70-90 ms of wall time beside
the planner. This module calls the same OpenSSL SHA-256 that hashlib uses (libcrypto's SHA256_*
functions, its SHA-NI code) from a compiled loop that holds no GIL: each 256 KiB piece of the file
is copied once into a buffer that stays in cache and fed to the file's hash and to the hashes of
the ranges it overlaps.

``hash_ranges`` returns None where libcrypto or its SHA256_* functions cannot be found, or where
they disagree with hashlib on a check run at first use; callers then hash with hashlib.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import threading

import llvmlite.binding as llvm
import numpy as np
from numba import njit, types

PIECE = 1 << 18
_CTX = 128  # bytes per hash state (OpenSSL's SHA256_CTX is 112)
_lock = threading.Lock()
_kernel = None  # the compiled pass, False once found unusable


def _libcrypto() -> str | None:
    """The libcrypto this interpreter's hashlib is linked to (Linux), else the one the linker finds."""
    import _hashlib  # noqa: F401 - loads libcrypto into the process
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if "libcrypto" in path and path.startswith("/"):
                    return path
    except OSError:
        pass
    return ctypes.util.find_library("crypto")


# pointers pass as 64-bit integers (the same registers as in the C calling convention); the symbols
# are resolved by name once ``_get`` has loaded libcrypto, so the compiled pass can be cached
_init = types.ExternalFunction("SHA256_Init", types.intc(types.uintp))
_update = types.ExternalFunction("SHA256_Update", types.intc(types.uintp, types.uintp, types.uintp))
_final = types.ExternalFunction("SHA256_Final", types.intc(types.uintp, types.uintp))
_memcpy = types.ExternalFunction("memcpy", types.uintp(types.uintp, types.uintp, types.uintp))


@njit(cache=True, nogil=True)
def _run(src, base, starts, ends, states, digests):
    """State 0 hashes all of ``src``; state 1 + j the range [base + starts[j], base + ends[j])
    (ranges sorted by start, not overlapping). memcpy: numpy's slice copy runs at about half its speed."""
    n = starts.shape[0]
    for i in range(n + 1):
        _init(states.ctypes.data + i * _CTX)
    bounce = np.empty(PIECE, np.uint8)
    k = 0
    for start in range(0, src.shape[0], PIECE):
        size = min(PIECE, src.shape[0] - start)
        _memcpy(bounce.ctypes.data, src.ctypes.data + start, size)
        _update(states.ctypes.data, bounce.ctypes.data, size)
        lo = start - base
        hi = lo + size
        while k < n and ends[k] <= lo:
            k += 1
        j = k
        while j < n and starts[j] < hi:
            a = max(starts[j], lo)
            b = min(ends[j], hi)
            if a < b:
                _update(states.ctypes.data + (j + 1) * _CTX, bounce.ctypes.data + (a - lo), b - a)
            j += 1
    for i in range(n + 1):
        _final(digests.ctypes.data + 32 * i, states.ctypes.data + i * _CTX)


def _load() -> bool:
    """Load libcrypto for the compiled pass; False where it or its SHA256_* functions are missing."""
    path = _libcrypto()
    if path is None:
        return False
    lib = ctypes.CDLL(path)
    if not all(hasattr(lib, f) for f in ("SHA256_Init", "SHA256_Update", "SHA256_Final")):
        return False
    llvm.load_library_permanently(path)
    return True


def _call(run, src: np.ndarray, base: int, starts: np.ndarray, ends: np.ndarray) -> list[str]:
    n = len(starts)
    states = np.zeros((n + 1) * _CTX, np.uint8)
    digests = np.zeros((n + 1) * 32, np.uint8)
    run(src, base, starts, ends, states, digests)
    return [digests[32 * i:32 * i + 32].tobytes().hex() for i in range(n + 1)]


def _checked(run) -> bool:
    """The pass against hashlib on a few odd sizes and ranges (an ABI that differs fails here)."""
    src = np.frombuffer(bytes(range(256)) * 2100, np.uint8)  # 537,600 bytes: three pieces
    starts, ends = np.array([0, 5, 300_000, 537_590], np.int64), np.array([5, 262_150, 537_000, 537_590], np.int64)
    got = _call(run, src, 10, starts, ends)
    want = [hashlib.sha256(src).hexdigest()] + [hashlib.sha256(src[10 + a:10 + b]).hexdigest()
                                                for a, b in zip(starts, ends, strict=True)]
    return got == want


def _get():
    global _kernel
    with _lock:
        if _kernel is None:
            try:
                _kernel = _run if _load() and _checked(_run) else False
            except Exception:  # noqa: BLE001 - any failure to load or compile means: use hashlib
                _kernel = False
        return _kernel


def hash_ranges(data, base: int, starts: list[int], ends: list[int]) -> tuple[str, list[str]] | None:
    """(sha256 of ``data``, [sha256 of data[base + s : base + e] for each range]) with hex digests;
    ranges sorted by start and not overlapping. None when the GIL-free pass is unavailable."""
    run = _get()
    if not run:
        return None
    src = np.frombuffer(data, np.uint8)
    digests = _call(run, src, base, np.asarray(starts, np.int64), np.asarray(ends, np.int64))
    return digests[0], digests[1:]

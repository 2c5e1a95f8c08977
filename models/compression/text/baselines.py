"""Classic lossless coders on the same bytes, each verified by decode-and-compare.

- order-0 Huffman on bytes (part 1's ``huffman.py``): every byte gets a prefix code from its
  frequency alone, no context; the size counts the code-length table (4 bits per byte value);
- LZ78 and LZW (``lz78.py``): the dictionary coders, indices in just enough bits, no entropy coder;
- deflate (LZ77 + Huffman, zlib level 9), bz2 (BWT, level 9), LZMA/xz (preset 9e), zstd (level 19).

``lz77_parse`` is a small greedy LZ77 parser for a short input: the literals and
back-references that show what deflate's first stage does.
"""

from __future__ import annotations

import bz2
import hashlib
import lzma
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import zstandard

from models.compression import huffman
from models.compression.text import lz78
from models.core.errors import CorruptFile, InputError

HUFFMAN_MAX_LEN = 15  # like deflate's literal codes
_TABLE_BYTES = 128  # 256 code lengths of 4 bits each


@dataclass
class CoderRow:
    coder: str
    family: str  # what kind of model the coder uses, for the table
    original_bytes: int
    compressed_bytes: int
    compress_s: float
    decompress_s: float
    verified: bool

    @property
    def bpb(self) -> float:
        return 8 * self.compressed_bytes / self.original_bytes if self.original_bytes else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "bpb": self.bpb}


# --- Huffman on bytes ---------------------------------------------------------------------------


@dataclass
class HuffmanBytes:
    lengths: np.ndarray
    stream: huffman.EncodedStream
    stats: huffman.HuffmanStats

    @property
    def size(self) -> int:
        return len(self.stream.data) + _TABLE_BYTES


def huffman_bytes(data: bytes) -> HuffmanBytes:
    symbols = np.frombuffer(data, dtype=np.uint8)
    counts = np.bincount(symbols, minlength=256)
    lengths = huffman.code_lengths(counts, max_len=HUFFMAN_MAX_LEN)
    stream = huffman.encode(symbols, lengths)
    return HuffmanBytes(lengths, stream, huffman.stats(counts, lengths))


def load_kernels() -> None:
    """Huffman-code and decode a few bytes once, so numba has loaded its compiled kernels (from its on-disk
    cache, or compiled them). A server calls this at start: otherwise the first text a class compresses
    shows Huffman at ~0.3 s (the kernels loading) against ~1 ms for the same text afterwards."""
    data = bytes(range(256)) * 2
    if _huffman_decompress(_huffman_compress(data)) != data:
        raise RuntimeError("Huffman's round trip failed on its warm-up bytes")


def _huffman_compress(data: bytes) -> HuffmanBytes:
    return huffman_bytes(data)


def _huffman_decompress(coded: HuffmanBytes) -> bytes:
    return huffman.decode(coded.stream, coded.lengths).astype(np.uint8).tobytes()


def _zstd_compress(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=19).compress(data)


def _zstd_decompress(blob: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompress(blob)


# name -> (family, compress, decompress, size of the compressed object)
CODERS: dict[str, tuple[str, Callable, Callable, Callable]] = {
    "Huffman (order-0, bytes)": ("byte frequencies", _huffman_compress, _huffman_decompress, lambda c: c.size),
    "LZ78": ("phrase dictionary (old phrase + 1 byte)", lz78.lz78_encode, lz78.lz78_decode, len),
    "LZW (compress, GIF)": ("phrase dictionary, indices only", lz78.lzw_encode, lz78.lzw_decode, len),
    "deflate (zlib -9)": ("LZ77 + Huffman", lambda d: zlib.compress(d, 9), zlib.decompress, len),
    "bzip2 -9": ("Burrows-Wheeler + Huffman", lambda d: bz2.compress(d, 9), bz2.decompress, len),
    "LZMA (xz -9e)": ("LZ77 + context-modelled range coder",
                      lambda d: lzma.compress(d, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME),
                      lzma.decompress, len),
    "zstd -19": ("LZ77 + Huffman and ANS", _zstd_compress, _zstd_decompress, len),
}


def run_coder(name: str, data: bytes) -> CoderRow:
    """Compress, decompress, compare: a row is 'verified' only if the bytes came back identical."""
    family, enc, dec, size = CODERS[name]
    started = time.perf_counter()
    coded = enc(data) if data else None
    mid = time.perf_counter()
    back = dec(coded) if data else b""
    end = time.perf_counter()
    ok = hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
    if not ok:
        raise CorruptFile(f"{name} did not reproduce the input: this is a bug, please report it")
    return CoderRow(name, family, len(data), size(coded) if data else 0, mid - started, end - mid, ok)


def run_all(data: bytes) -> list[CoderRow]:
    return [run_coder(name, data) for name in CODERS]


# --- an LZ77 parse for teaching --------------------------------------------------------------------

LZ77_MAX_INPUT = 4000
LZ77_WINDOW = 32 * 1024  # deflate's window
LZ77_MIN, LZ77_MAX = 3, 258  # deflate's match lengths


@dataclass
class LZ77Op:
    start: int  # position in the input
    length: int  # bytes covered
    distance: int = 0  # 0 = literal; else copy `length` bytes from `distance` bytes back


def lz77_parse(data: bytes) -> list[LZ77Op]:
    """A greedy LZ77 parse (longest match among earlier positions with the same 3 bytes).

    zlib is smarter (lazy matching, bounded chains), but the idea is the same: repeated
    strings become (distance, length) pairs, the rest stays literal."""
    if len(data) > LZ77_MAX_INPUT:
        raise InputError(f"the LZ77 view draws at most {LZ77_MAX_INPUT:,} bytes (got {len(data):,}); "
                         "paste a shorter text")
    heads: dict[bytes, list[int]] = {}
    ops: list[LZ77Op] = []
    i, n = 0, len(data)
    while i < n:
        best_len, best_dist = 0, 0
        key = data[i:i + LZ77_MIN]
        if len(key) == LZ77_MIN:
            for j in reversed(heads.get(key, [])):
                if i - j > LZ77_WINDOW:
                    break
                length = 0
                while i + length < n and length < LZ77_MAX and data[j + length] == data[i + length]:
                    length += 1
                if length > best_len:
                    best_len, best_dist = length, i - j
        step = best_len if best_len >= LZ77_MIN else 1
        ops.append(LZ77Op(i, step, best_dist if best_len >= LZ77_MIN else 0))
        for k in range(i, i + step):
            heads.setdefault(data[k:k + LZ77_MIN], []).append(k)
        i += step
    return ops


def lz77_decode(ops: list[LZ77Op], literals: bytes) -> bytes:
    """Rebuild the input from the parse: literals come from ``literals`` in order, copies from the output."""
    out = bytearray()
    lit = iter(literals)
    for op in ops:
        if op.distance == 0:
            out.append(next(lit))
        else:
            for _ in range(op.length):  # byte by byte: a copy may overlap its own output
                out.append(out[-op.distance])
    return bytes(out)


def lz77_literals(data: bytes, ops: list[LZ77Op]) -> bytes:
    return bytes(data[op.start] for op in ops if op.distance == 0)

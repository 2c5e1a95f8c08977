"""The compressed-checkpoint file format (``.lmhz``), version 3 (version 2 files, which have no pair-coded
chunks, read the same).

    offset  size  field
    0       8     magic b"LMLABHZ\\x01"
    8       2     format version, little-endian (3)
    10      2     flags (bit 0: the header is zlib-deflated)
    12      4     header length H (as stored)
    16      4     CRC32 of the header (as stored)
    20      P     payload: the segments the header points to (offsets relative to the payload)
    20+P    H     header: UTF-8 JSON (below), deflated when flag bit 0 is set; it ends the file

The header comes last so that a compressor can write the payload straight into the output buffer
and add the header (known only at the end) without moving the payload.

Header JSON: ``format``, ``source`` (``name``, ``size``, ``sha256`` of the original file, and the
segment holding its 8-byte length + JSON header verbatim), ``chunk`` and ``block`` (symbols per
table chunk and per decode block), ``gaps`` (data-section bytes no tensor covers), and ``tensors``:
one entry per tensor with ``name``, ``dtype``, ``shape``, ``start``/``end`` in the data section,
``sha256`` of its bytes, ``transform`` (``rotl1``: rotate the bits left by one so the exponent fills
the top byte; ``none``), and ``planes``: byte planes, least significant first, each with ``role``
(exponent | mantissa | bytes), ``mode``, ``symbols``, ``offset``, ``size``, ``crc32`` (of the
whole plane segment).

Plane modes: ``raw`` (the bytes), ``zstd`` (one zstd frame of the tensor's bytes), ``chunked``
(each chunk has its own Huffman table) and ``shared`` (one table for the plane, as 256 hex nibbles
in ``table``; the deflated header stores similar tables cheaply).
A chunked/shared segment is a run of chunk records, one per ``chunk`` symbols of the plane (the
last holds the rest): ``<BII`` = codec (0 raw, 1 Huffman, 2 constant: the body is the one byte
value repeated n times, 3 pairs), symbol count n, body size; then the body: for Huffman, the 256
code lengths (at most 14 bits) as 128 nibble bytes (chunked mode only), the bit offset of each
block of ``block`` symbols (uint32 LE), and the MSB-first canonical-Huffman bit stream.
Pairs (chunked mode only; version 3): the symbols are the byte pairs (x[2i], x[2i+1]) (an odd
last byte pairs with itself). The body starts with a 32-byte map of the u byte values the chunk
uses (bit b & 7 of byte b >> 3), then the code lengths of the u*u pairs as nibbles (pair
index = rank(first) * u + rank(second), ranks in byte order; a last odd nibble is 0), then the
block offsets and the bit stream as for Huffman.
"""

from __future__ import annotations

import json
import struct
import zlib

from models.core.errors import CorruptFile

try:  # the same CRC-32 as zlib's, about 4x faster (carry-less multiplication); releases the GIL too
    from zlib_ng.zlib_ng import compress as _deflate
    from zlib_ng.zlib_ng import crc32
    _LEVEL = 6  # zlib-ng at 6 deflates MiniLM's header smaller than zlib at 9 (10.7 vs 10.9 kB), 4x faster
except ImportError:  # pragma: no cover - zlib-ng is in requirements.txt
    from zlib import compress as _deflate
    from zlib import crc32
    _LEVEL = 9

MAGIC = b"LMLABHZ\x01"
VERSION = 3  # 3: pair-coded chunks
READS = (2, 3)  # version 2 is version 3 without pair-coded chunks
SUFFIX = ".lmhz"
_FIXED = struct.Struct("<8sHHII")
CHUNK_RECORD = struct.Struct("<BII")
RAW, HUFFMAN, CONSTANT, PAIRS = 0, 1, 2, 3
DEFLATED = 1
MAX_HEADER = 256 * 2**20  # inflated header bytes; a 10k-tensor checkpoint needs ~10 MiB


FIXED_SIZE = _FIXED.size


def encode_header(header: dict) -> bytes:
    # deflated: per-tensor entries repeat the same keys, and the header must not eat the savings
    return _deflate(json.dumps(header, separators=(",", ":")).encode("utf-8"), _LEVEL)


def fixed(head: bytes) -> bytes:
    """The fixed part at offset 0 for this (encoded) header."""
    return _FIXED.pack(MAGIC, VERSION, DEFLATED, len(head), crc32(head))


def pack(header: dict, payload: list[bytes]) -> bytes:
    head = encode_header(header)
    return b"".join([fixed(head), *payload, head])


def unpack(buf: bytes | memoryview, name: str = "file") -> tuple[dict, memoryview]:
    """(header, payload view); CorruptFile names a wrong magic, unknown version or bad header."""
    view = memoryview(buf)
    if len(view) < _FIXED.size:
        raise CorruptFile(f"{name} is not an LM Lab compressed checkpoint: only {len(view)} bytes")
    magic, version, flags, hlen, hcrc = _FIXED.unpack(view[: _FIXED.size])
    if magic != MAGIC:
        raise CorruptFile(f"{name} is not an LM Lab compressed checkpoint (wrong magic {bytes(magic)!r}; "
                          f"expected {MAGIC!r})")
    if version not in READS:
        raise CorruptFile(f"{name} uses format version {version}; this LM Lab reads versions "
                          f"{', '.join(map(str, READS))}")
    end = len(view) - hlen
    if end < _FIXED.size:
        raise CorruptFile(f"{name} is truncated: its header needs {_FIXED.size + hlen:,} bytes, the file has "
                          f"{len(view):,}")
    head = bytes(view[end:])
    if crc32(head) != hcrc:
        raise CorruptFile(f"{name}: the header fails its CRC32 check (the file is corrupt)")
    try:
        if flags & DEFLATED:  # bounded: a few kilobytes of deflate can claim gigabytes
            inflater = zlib.decompressobj()
            head = inflater.decompress(head, MAX_HEADER)
            if inflater.unconsumed_tail:
                raise CorruptFile(f"{name}: the header inflates past {MAX_HEADER // 2**20} MiB")
        header = json.loads(head)
    except (ValueError, RecursionError, zlib.error) as exc:
        if isinstance(exc, CorruptFile):
            raise
        raise CorruptFile(f"{name}: the header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CorruptFile(f"{name}: the header is not a JSON object")
    return header, view[_FIXED.size:end]


def crc_error(what: str) -> CorruptFile:
    return CorruptFile(f"{what} fails its CRC32 check: the compressed file is corrupt (a flipped bit?)")


def segment(payload: memoryview, entry: dict, what: str, check: bool = True) -> memoryview:
    """The bytes an entry's ``offset``/``size`` point to, after checking its CRC32 (unless ``check``
    is False: the caller checks it, e.g. on another thread)."""
    start, size = int(entry["offset"]), int(entry["size"])
    if start < 0 or start + size > len(payload):
        raise CorruptFile(f"the compressed file is truncated: {what} lies past its end")
    seg = payload[start:start + size]
    if check and crc32(seg) != int(entry["crc32"]):
        raise crc_error(what)
    return seg

"""The file format of LM-compressed text, and the fingerprint check that guards decoding.

Layout (all integers little-endian)::

    magic  b"LMLT"      4 bytes
    format version     1 byte (2; version 3, the compact header, is read by compact_header.py)
    header length      4 bytes (uint32)
    header             UTF-8 JSON, raw-deflated: sizes, hashes, lane/window rule, fingerprint
    payload            the arithmetic coder's 32-bit words (or the fallback coder's bytes)

The header carries the CRC32 of the payload (a flipped bit is caught before any
decoding) and a sha256 of the original bytes (the decoded result is compared before it
is written anywhere). The fingerprint says how the probabilities were computed; an
arithmetic decoder fed different probabilities does not fail, it silently produces
garbage, so a mismatch is refused up front with the fields that differ.

The header is small on purpose: the model codes a paragraph in a few hundred bytes, so
every header byte shows in the bits per byte. Hashes keep their first 128 bits (the data)
or 64 bits (weights, tokenizer): plenty to tell setups apart or catch a bad decode, and
the JSON is deflated against a preset dictionary of typical header text (version 1 spent
about 720 bytes here, version 2 about 110).
"""

from __future__ import annotations

import json
import struct
import zlib

from models.compression.text import compact_header
from models.core.errors import CorruptFile, FingerprintMismatch

MAGIC = b"LMLT"
VERSION = 2
SUFFIX = ".lmlt"
_PREFIX = struct.Struct("<4sBI")
MAX_HEADER = 1 << 20
# Part of format version 2: never edit it (files made with it would no longer inflate). A typical header:
# deflate codes the keys and usual values as back-references into it, so only the specifics cost bytes.
HEADER_DICTIONARY = (
    b'{"fingerprint":{"codec":"lm-range-1","constriction":"0.5.0","device_type":"cpu","kernel":"AVX512",'
    b'"model":"smollm2-135m-instruct","precision":"bf16","tokenizer_sha256":"","torch":"2.13.0+cpu",'
    b'"transformers":"5.24.0","weights_sha256":""},"format":"lmlab-text","keep":4096,"lanes":1,"mode":"text",'
    b'"n_bytes":0,"n_tokens":0,"payload_bytes":0,"payload_crc32":0,"sha256":"","start_id":1,"threads":2,'
    b'"window":8192}')

# Fields that must match for the decoder to compute bit-identical probabilities.
# (Lane count and window are recorded too, but the decoder simply adopts the file's values.)
STRICT_FIELDS = ("weights_sha256", "tokenizer_sha256", "precision", "device_type", "kernel",
                 "torch", "transformers", "constriction", "codec")


def pack(header: dict, payload: bytes) -> bytes:
    header = dict(header, payload_crc32=zlib.crc32(payload), payload_bytes=len(payload))
    raw = _deflate(json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    return _PREFIX.pack(MAGIC, VERSION, len(raw)) + raw + payload


def _deflate(raw: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=HEADER_DICTIONARY)  # raw: no zlib wrapper
    return packer.compress(raw) + packer.flush()


def _inflate(raw: bytes) -> bytes:
    """Bounded: a few bytes of deflate can claim megabytes."""
    inflater = zlib.decompressobj(-15, zdict=HEADER_DICTIONARY)
    out = inflater.decompress(raw, MAX_HEADER)
    if inflater.unconsumed_tail or not inflater.eof:
        raise ValueError("the header does not inflate to a whole JSON text within 1 MiB")
    return out


def unpack(blob: bytes) -> tuple[dict, bytes]:
    """(header, payload) of a compressed file; CorruptFile with the reason otherwise."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise CorruptFile("expected the bytes of a compressed file")
    blob = bytes(blob)
    if len(blob) < _PREFIX.size:
        raise CorruptFile(f"not an LM Lab text file: only {len(blob)} bytes (truncated?)")
    magic, version, n = _PREFIX.unpack_from(blob)
    if magic != MAGIC:
        raise CorruptFile(f"not an LM Lab text file: magic {magic!r}, expected {MAGIC!r} (files end in {SUFFIX})")
    if version in compact_header.VERSIONS:
        header, payload, end = compact_header.unpack(blob)
        if end != len(blob):
            raise CorruptFile(f"{len(blob) - end:,} bytes follow the record: the file has extra bytes")
        return header, payload
    if version != VERSION:
        raise CorruptFile(f"format version {version} is not supported here (this build reads versions "
                          f"{VERSION}, {compact_header.VERSION} and {compact_header.VERSION_MIXED})")
    if n > MAX_HEADER or _PREFIX.size + n > len(blob):
        raise CorruptFile(f"header length {n} exceeds the file size {len(blob)} (truncated or corrupt file)")
    try:
        header = json.loads(_inflate(blob[_PREFIX.size:_PREFIX.size + n]).decode("utf-8"))
        assert isinstance(header, dict)
    except (UnicodeDecodeError, ValueError, AssertionError, RecursionError, zlib.error) as exc:
        raise CorruptFile(f"the header is not valid JSON ({exc}): the file is corrupt") from exc
    payload = blob[_PREFIX.size + n:]
    if len(payload) != header.get("payload_bytes"):
        raise CorruptFile(f"payload is {len(payload)} bytes, the header says {header.get('payload_bytes')}: "
                          "the file is truncated or has extra bytes")
    if zlib.crc32(payload) != header.get("payload_crc32"):
        raise CorruptFile("payload checksum mismatch: the compressed data was changed or damaged")
    return header, payload


def join_records(records: list[bytes]) -> bytes:
    """One file of several records back to back (a compact record then states its payload length)."""
    if len(records) < 2:
        return b"".join(records)
    return b"".join(compact_header.sized(r) if r[4:5] and r[4] in compact_header.VERSIONS else r for r in records)


def split_records(blob: bytes) -> list[bytes]:
    """A long file compressed in chunks is several records back to back: each one's bytes."""
    records, pos = [], 0
    while pos < len(blob):
        if len(blob) - pos < _PREFIX.size:
            raise CorruptFile(f"{len(blob) - pos} stray bytes at the end of the file (truncated?)")
        magic, version, n = _PREFIX.unpack_from(blob, pos)
        if magic == MAGIC and version in compact_header.VERSIONS:
            end = pos + compact_header.record_length(blob, pos)
            records.append(blob[pos:end])
            pos = end
            continue
        if magic != MAGIC or n > MAX_HEADER:
            raise CorruptFile(f"not an LM Lab text record at byte {pos}: magic {magic!r}")
        if pos + _PREFIX.size + n > len(blob):
            raise CorruptFile(f"header length {n} exceeds the file size {len(blob)} (truncated or corrupt file)")
        try:
            size = int(json.loads(_inflate(blob[pos + _PREFIX.size:pos + _PREFIX.size + n]))["payload_bytes"])
        except (ValueError, KeyError, TypeError, RecursionError, zlib.error) as exc:
            raise CorruptFile(f"the header at byte {pos} is damaged ({exc})") from exc
        end = pos + _PREFIX.size + n + size
        if size < 0 or end > len(blob):  # a negative size would walk backwards for ever
            raise CorruptFile(f"the record at byte {pos} declares {size:,} payload bytes; the file has "
                              f"{len(blob) - pos:,} left (truncated or corrupt)")
        records.append(blob[pos:end])
        pos = end
    return records


def check_fingerprint(recorded: dict, current: dict) -> None:
    """Raise FingerprintMismatch naming every field that differs, with both values."""
    diffs = [f"{key}: file {recorded.get(key)!r}, here {current.get(key)!r}"
             for key in STRICT_FIELDS if recorded.get(key) != current.get(key)]
    if diffs:
        model = recorded.get("model", "?")
        raise FingerprintMismatch(
            f"this file was compressed with other settings than this decoder's ({'; '.join(diffs)}). "
            f"Decode it with model {model!r}, the same precision and device type, and the same library versions; "
            "a different setup would compute slightly different probabilities and decode garbage.")

"""The file format of LM-compressed text, and the fingerprint check that guards decoding.

Layout (all integers little-endian)::

    magic  b"LMLT"      4 bytes
    format version     1 byte
    header length      4 bytes (uint32)
    header             UTF-8 JSON: sizes, hashes, lane/window rule, fingerprint
    payload            the arithmetic coder's 32-bit words (or the fallback coder's bytes)

The header carries the sha256 of the payload (a flipped bit is caught before any
decoding) and of the original bytes (the decoded result is compared before it is
written anywhere). The fingerprint says how the probabilities were computed; an
arithmetic decoder fed different probabilities does not fail, it silently produces
garbage, so a mismatch is refused up front with the fields that differ.
"""

from __future__ import annotations

import hashlib
import json
import struct

from models.errors import CorruptFile, FingerprintMismatch

MAGIC = b"LMLT"
VERSION = 1
SUFFIX = ".lmlt"
_PREFIX = struct.Struct("<4sBI")
MAX_HEADER = 1 << 20

# Fields that must match for the decoder to compute bit-identical probabilities.
# (Lane count and window are recorded too, but the decoder simply adopts the file's values.)
STRICT_FIELDS = ("weights_sha256", "tokenizer_sha256", "precision", "device_type", "kernel",
                 "torch", "transformers", "constriction", "codec")


def pack(header: dict, payload: bytes) -> bytes:
    header = dict(header, payload_sha256=hashlib.sha256(payload).hexdigest(), payload_bytes=len(payload))
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return _PREFIX.pack(MAGIC, VERSION, len(raw)) + raw + payload


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
    if version != VERSION:
        raise CorruptFile(f"format version {version} is not supported here (this build reads version {VERSION})")
    if n > MAX_HEADER or _PREFIX.size + n > len(blob):
        raise CorruptFile(f"header length {n} exceeds the file size {len(blob)} (truncated or corrupt file)")
    try:
        header = json.loads(blob[_PREFIX.size:_PREFIX.size + n].decode("utf-8"))
        assert isinstance(header, dict)
    except (UnicodeDecodeError, ValueError, AssertionError, RecursionError) as exc:
        raise CorruptFile(f"the header is not valid JSON ({exc}): the file is corrupt") from exc
    payload = blob[_PREFIX.size + n:]
    if len(payload) != header.get("payload_bytes"):
        raise CorruptFile(f"payload is {len(payload)} bytes, the header says {header.get('payload_bytes')}: "
                          "the file is truncated or has extra bytes")
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise CorruptFile("payload checksum mismatch: the compressed data was changed or damaged")
    return header, payload


def split_records(blob: bytes) -> list[bytes]:
    """A long file compressed in chunks is several records back to back: each one's bytes."""
    records, pos = [], 0
    while pos < len(blob):
        if len(blob) - pos < _PREFIX.size:
            raise CorruptFile(f"{len(blob) - pos} stray bytes at the end of the file (truncated?)")
        magic, _, n = _PREFIX.unpack_from(blob, pos)
        if magic != MAGIC or n > MAX_HEADER:
            raise CorruptFile(f"not an LM Lab text record at byte {pos}: magic {magic!r}")
        try:
            size = int(json.loads(blob[pos + _PREFIX.size:pos + _PREFIX.size + n])["payload_bytes"])
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
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

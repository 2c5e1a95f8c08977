"""The file format of LM-compressed text, and the fingerprint check that guards decoding.

Layout (all integers little-endian)::

    magic  b"LMLT"      4 bytes
    format version     1 byte: 14, what LM Lab writes; 2, the same without the CRC32 at the end (and with
                       the payload's CRC32 in the header), is still read. Versions 3, 4, 8 and 13, the
                       compact header, are read by compact_header.py
    header length      4 bytes (uint32)
    header             UTF-8 JSON, raw-deflated: sizes, hashes, lane/window rule, fingerprint
    payload            the arithmetic coder's 32-bit words (or the fallback coder's bytes)
    crc32              4 bytes, version 14 only: the CRC32 of every byte of the record before it

The header records the payload's length, so a cut file is refused before any decoding, and version 14
ends with the CRC32 of the whole record, so that a changed byte anywhere (the header included, even
the unused bits of its last deflated byte) is refused before the model is loaded; a version 2 file has
only its payload's CRC32. A sha256 of the original bytes is compared with the decoded result before it
is written anywhere. The fingerprint says how the probabilities were computed; an arithmetic decoder
fed different probabilities does not fail, it silently produces garbage, so a mismatch is refused up
front with the fields that differ.

The header is small on purpose: the model codes a paragraph in a few hundred bytes, so
every header byte shows in the bits per byte. Hashes keep their first 128 bits (the data)
or 64 bits (weights, tokenizer): plenty to tell setups apart or catch a bad decode, and
the JSON is deflated against a preset dictionary of typical header text (version 1 spent
about 720 bytes here, version 2 about 110).

Every message here is read by a teacher in the Compress tab: it says what is wrong with the file in
words, never with bytes or internal names.
"""

from __future__ import annotations

import json
import struct
import zlib

from models.compression.text import compact_header
from models.core.errors import CorruptFile, FingerprintMismatch

MAGIC = b"LMLT"
VERSION = 2  # read, no longer written
VERSION_CHECKED = 14  # version 2 with a CRC32 of the record at its end: 2 bits from every other version
READABLE = (VERSION, *compact_header.VERSIONS[:2], *compact_header.CHECKED, VERSION_CHECKED)
_CRC = struct.Struct("<I")
SUFFIX = ".lmlt"
_PREFIX = struct.Struct("<4sBI")
MAX_HEADER = 1 << 20
# Part of format versions 2 and 14: never edit it (files made with it would no longer inflate). A typical header:
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
    """A version 14 record: ``header`` with the payload's length, the payload and the CRC32 of both."""
    header = {k: v for k, v in header.items() if k != "payload_crc32"}  # the CRC at the end covers the payload
    raw = _deflate(json.dumps(dict(header, payload_bytes=len(payload)), sort_keys=True,
                              separators=(",", ":")).encode("utf-8"))
    out = _PREFIX.pack(MAGIC, VERSION_CHECKED, len(raw)) + raw + payload
    return out + _CRC.pack(zlib.crc32(out))


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


NOT_LMLT = (f"This is not a file written by LM Lab's text compressor ({SUFFIX}): it should start with the letters "
            "LMLT.")
EMPTY = "The file is empty: a file written by LM Lab's text compressor (.lmlt) starts with the letters LMLT."


def unpack(blob: bytes) -> tuple[dict, bytes]:
    """(header, payload) of a file of one record. CorruptFile, in words a teacher reads, when the file is
    empty, not an .lmlt file, truncated, damaged (a checksum does not match), of an unknown version, or
    has bytes after its record. Nothing here needs the model: a bad file is refused before it loads."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise CorruptFile("Expected the bytes of a compressed file.")
    blob = bytes(blob)
    header, payload, end = _record(blob, 0)
    if end != len(blob):
        raise CorruptFile(_stray(blob, end))
    return header, payload


def _stray(blob: bytes, pos: int) -> str:
    # One message whether one record or several were expected: a reader cannot tell bytes added to a file
    # from a damaged start of a next record.
    return (f"The file has {len(blob) - pos:,} bytes after byte {pos:,} that are not part of any record: it is "
            "damaged, or something was added to its end.")


def _record(blob: bytes, pos: int) -> tuple[dict, bytes, int]:
    """(header, payload, end) of the record starting at ``pos``; CorruptFile as ``unpack``."""
    if pos == 0 and not blob:
        raise CorruptFile(EMPTY)
    start = blob[pos:pos + len(MAGIC)]
    if start != MAGIC[:len(start)]:
        raise CorruptFile(NOT_LMLT if pos == 0 else _stray(blob, pos))
    if len(blob) - pos <= len(MAGIC):
        raise CorruptFile(compact_header.truncated(len(blob), start=pos))
    version = blob[pos + len(MAGIC)]
    if version in compact_header.VERSIONS:
        return compact_header.unpack(blob, pos)
    if version not in (VERSION, VERSION_CHECKED):
        raise CorruptFile(f"This file says it was written in format version {version}, which this LM Lab cannot read "
                          f"(it reads versions {', '.join(map(str, sorted(READABLE)))}): a newer LM Lab made it, "
                          "or the file is damaged.")
    checked = version == VERSION_CHECKED
    # In version 14 anything that does not fit is damage the CRC would show: say so in the same words.
    damaged = compact_header.DAMAGED if checked else None
    if len(blob) - pos < _PREFIX.size:
        raise CorruptFile(compact_header.truncated(len(blob), start=pos))
    _, _, n = _PREFIX.unpack_from(blob, pos)
    body = pos + _PREFIX.size
    if n > MAX_HEADER:
        raise CorruptFile(damaged or "The file is damaged: its header claims a size no LM Lab file has.")
    if body + n > len(blob):
        raise CorruptFile(compact_header.truncated(len(blob), start=pos))
    try:
        header = json.loads(_inflate(blob[body:body + n]).decode("utf-8"))
        assert isinstance(header, dict)
    except (UnicodeDecodeError, ValueError, AssertionError, RecursionError, zlib.error):
        raise CorruptFile(damaged or "The file is damaged: its header cannot be read.") from None
    size = header.get("payload_bytes")
    if type(size) is not int or size < 0:  # a negative size would walk backwards for ever
        raise CorruptFile(damaged or "The file is damaged: its header gives an impossible payload size.")
    end = body + n + size + (_CRC.size if checked else 0)
    if end > len(blob):
        raise CorruptFile(compact_header.truncated(len(blob), end))
    payload = blob[body + n:body + n + size]
    if checked:
        if _CRC.unpack_from(blob, end - _CRC.size)[0] != zlib.crc32(memoryview(blob)[pos:end - _CRC.size]):
            raise CorruptFile(compact_header.DAMAGED)
    elif zlib.crc32(payload) != header.get("payload_crc32"):
        raise CorruptFile(compact_header.DAMAGED)
    return header, payload, end


def join_records(records: list[bytes]) -> bytes:
    """One file of several records back to back (a compact record then states its payload length)."""
    if len(records) < 2:
        return b"".join(records)
    return b"".join(compact_header.sized(r) if r[4:5] and r[4] in compact_header.VERSIONS else r for r in records)


def split_records(blob: bytes) -> list[bytes]:
    """A long file compressed in chunks is several records back to back: each one's bytes, every record's
    sizes and checksums checked (an empty file gives none). CorruptFile as ``unpack``."""
    records, pos = [], 0
    while pos < len(blob):
        end = _record(blob, pos)[2]
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

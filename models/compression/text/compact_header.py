"""Format version 3 of ``.lmlt``: a header of about 20 bytes for a catalogue model with preset settings.

A teacher's paragraph codes to a few dozen bytes, so the header decides whether the model beats
deflate on the screen (version 2 spent ~110 bytes on a deflated JSON header). Version 3 writes
only what the decoder cannot work out itself; everything else it recomputes from the model id
and the preset (weights and tokenizer hashes, machine, library versions, window rule)::

    magic b"LMLT"   4 bytes
    version         1 byte: 3 (the model alone) or 4 (the mixing coder, ``mixing.py``)
    flags           1 byte: bits 0-1 mode (0 text, 1 mixed, 2 bytes), bits 2-3 preset (PRESET_IDS; 2,
                            "fast-primed", since the lanes read the text's opening), bits 4-7 CPU threads - 1
    model           1 byte: bits 0-5 model id (MODEL_IDS), bit 6 precision (0 bf16, 1 fp32),
                            bit 7 "sized" (a payload length follows: records back to back)
    mixer           1 byte, version 4 only: the mixer's id (MIXER_IDS): named settings (``mixing.NAMED``)
    digest          8 bytes: the fingerprint digest (below)
    check           4 bytes: the first 32 bits of the sha256 of the original bytes
    n_bytes, n_tokens       unsigned LEB128 varints
    payload length          varint, only when sized; else the payload runs to the end of the file
    payload         the range coder's 32-bit words, little-endian, trailing zero bytes of the last word cut

The 64-bit digest covers the whole fingerprint in four slices, so that a mismatch can be named
without storing the fingerprint: the model's weights and tokenizer (24 bits), the machine (device
type and CPU/GPU kernel family, 16 bits), the library versions (16 bits) and the codec with its
settings (8 bits; with the mixer's settings in version 4). The decoder recomputes each slice from its own setup and names the ones that
differ. The lane count is not stored: the preset's rule derives it from the token count.

There is no payload CRC: a damaged payload decodes to other text, which the 32-bit check of the
original catches before anything is written (a wrong result passes with probability 2^-32).
Anything else (a model outside the catalogue, custom settings, LZMA mode, more than 16 threads)
keeps the self-describing version 2 header of ``text_container``.
"""

from __future__ import annotations

import hashlib
import json
import struct

from models.core.errors import CorruptFile, FingerprintMismatch

MAGIC = b"LMLT"
VERSION = 3
VERSION_MIXED = 4
VERSIONS = (VERSION, VERSION_MIXED)
_FIXED = struct.Struct("<4sBBB8s4s")  # magic, version, flags, model, digest, check
_MIXED = struct.Struct("<4sBBBB8s4s")  # magic, version, flags, model, mixer, digest, check

# Stable ids: a file stores the number, so never renumber or reuse one (append new models).
MODEL_IDS = {
    "smollm2-135m-instruct": 1,
    "openai-community/gpt2": 2,
    "distilbert/distilgpt2": 3,
    "HuggingFaceTB/SmolLM2-135M": 4,
}
MIXER_IDS = {"mix-1": 1, "mix-2": 2}  # mixing.NAMED settings by id; never renumber
# Names in lm_codec.RULES; index = the id in the flags (never renumber). "fast" is the fast preset as it was
# before its lanes were primed with the text's opening ("fast-primed", what the fast preset writes now).
PRESET_IDS = ("fast", "compact", "fast-primed")
MODES = ("text", "mixed", "bytes")
PRECISIONS = ("bf16", "fp32")
MAX_THREADS = 16

# The digest's slices: (name shown to the user, fingerprint fields, bits).
GROUPS = (
    ("the model's weights or tokenizer", ("model", "weights_sha256", "tokenizer_sha256"), 24),
    ("the machine type (device, CPU/GPU kernel family)", ("device_type", "kernel"), 16),
    ("the library versions (torch, transformers, constriction)", ("torch", "transformers", "constriction"), 16),
    ("the codec and its settings", ("codec", "precision", "settings"), 8),
)


def digest(fingerprint: dict) -> bytes:
    """64-bit digest of a full fingerprint (``lm_codec.fingerprint`` plus a ``settings`` entry):
    each group's slice is the start of the sha256 of its fields, concatenated (8 bytes)."""
    out = 0
    for _, fields, bits in GROUPS:
        text = json.dumps({f: fingerprint.get(f) for f in fields}, sort_keys=True, separators=(",", ":"))
        out = (out << bits) | (int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> (64 - bits))
    return out.to_bytes(8, "big")


def differences(recorded: bytes, current: dict) -> list[str]:
    """The groups whose slice of ``recorded`` differs from the digest of ``current``."""
    here = int.from_bytes(digest(current), "big")
    there = int.from_bytes(recorded, "big")
    diffs, shift = [], 64
    for name, fields, bits in GROUPS:
        shift -= bits
        mask = (1 << bits) - 1
        if (here >> shift) & mask != (there >> shift) & mask:
            values = ", ".join(f"{f} {current.get(f)!r}" for f in fields if f != "settings")
            diffs.append(f"{name} (here: {values})" if values else name)
    return diffs


def check_fingerprint(recorded: bytes, current: dict) -> None:
    """Raise FingerprintMismatch naming the parts of the setup that differ from the file's."""
    diffs = differences(recorded, current)
    if diffs:
        raise FingerprintMismatch(
            f"this file was compressed with another setup than this decoder's: {'; '.join(diffs)} "
            f"differ. Decode it with model {current.get('model')!r} as published, on the same device type, "
            "with the same library versions; a different setup would compute slightly different "
            "probabilities and decode garbage.")


def eligible(model: str, mode: str, preset: str | None, precision: str, threads: int) -> bool:
    return (model in MODEL_IDS and mode in MODES and preset in PRESET_IDS and precision in PRECISIONS
            and 1 <= threads <= MAX_THREADS)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(blob: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(5):  # 35 bits: more than any size a record may declare
        if pos + i >= len(blob):
            raise CorruptFile("the header ends inside a number: the file is truncated")
        byte = blob[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise CorruptFile("a header number is longer than 5 bytes: the file is corrupt")


def pack(*, model: str, mode: str, preset: str, precision: str, threads: int, fingerprint_digest: bytes,
         data_sha256: bytes, n_bytes: int, n_tokens: int, payload: bytes, sized: bool = False,
         mixer: str | None = None) -> bytes:
    """One record; ``sized`` writes the payload length so that records can follow each other;
    ``mixer`` (a MIXER_IDS name) makes it a version 4 record of the mixing coder."""
    if not eligible(model, mode, preset, precision, threads):
        raise ValueError("these settings need the version 2 header")
    flags = MODES.index(mode) | PRESET_IDS.index(preset) << 2 | (threads - 1) << 4
    byte = MODEL_IDS[model] | PRECISIONS.index(precision) << 6 | int(sized) << 7
    if len(payload) % 4:
        raise ValueError("the payload must be whole 32-bit words")
    cut = payload
    while len(payload) - len(cut) < 3 and cut.endswith(b"\0"):  # only within the last word: the count stays
        cut = cut[:-1]
    if mixer is None:
        out = _FIXED.pack(MAGIC, VERSION, flags, byte, fingerprint_digest, data_sha256[:4])
    else:
        out = _MIXED.pack(MAGIC, VERSION_MIXED, flags, byte, MIXER_IDS[mixer], fingerprint_digest, data_sha256[:4])
    out += _varint(n_bytes) + _varint(n_tokens) + (_varint(len(cut)) if sized else b"")
    return out + cut


def unpack(blob: bytes) -> tuple[dict, bytes, int]:
    """(header, payload, record length). The header has the keys the version 2 reader gives where
    the file knows them; window, keep and start_id are filled in by the decoder from the preset."""
    fixed = _MIXED if blob[4:5] == bytes([VERSION_MIXED]) else _FIXED
    if len(blob) < fixed.size:
        raise CorruptFile(f"not a whole LM Lab text header: only {len(blob)} bytes (truncated?)")
    mixer_id = 0
    if fixed is _MIXED:
        magic, version, flags, byte, mixer_id, fp_digest, check = _MIXED.unpack_from(blob)
    else:
        magic, version, flags, byte, fp_digest, check = _FIXED.unpack_from(blob)
    if magic != MAGIC or version not in VERSIONS:
        raise CorruptFile("not a version 3 or 4 LM Lab text record")
    mixer = next((k for k, v in MIXER_IDS.items() if v == mixer_id), None)
    if version == VERSION_MIXED and mixer is None:
        raise CorruptFile(f"the header names mixer id {mixer_id}: unknown here (a newer LM Lab wrote it, or the "
                          "file is corrupt)")
    mode, preset, threads = flags & 3, (flags >> 2) & 3, (flags >> 4) + 1
    model_id, precision, sized = byte & 0x3F, (byte >> 6) & 1, byte >> 7
    model = next((k for k, v in MODEL_IDS.items() if v == model_id), None)
    if model is None or mode >= len(MODES) or preset >= len(PRESET_IDS):
        raise CorruptFile(f"the header names model id {model_id}, mode {mode}, preset {preset}: unknown here "
                          "(a newer LM Lab wrote it, or the file is corrupt)")
    n_bytes, pos = _read_varint(blob, fixed.size)
    n_tokens, pos = _read_varint(blob, pos)
    if sized:
        size, pos = _read_varint(blob, pos)
        if pos + size > len(blob):
            raise CorruptFile(f"the record declares {size:,} payload bytes; {len(blob) - pos:,} are left "
                              "(truncated or corrupt)")
    else:
        size = len(blob) - pos
    end = pos + size
    payload = blob[pos:end] + b"\0" * (-size % 4)
    header = {"format": "lmlab-text", "version": version, "mode": MODES[mode], "n_bytes": n_bytes,
              "n_tokens": n_tokens, "sha256": check.hex(), "preset": PRESET_IDS[preset], "threads": threads,
              "payload_bytes": size, "header_bytes": pos,
              "fingerprint": {"model": model, "precision": PRECISIONS[precision], "digest": fp_digest.hex()}}
    if mixer is not None:
        header["mixer_id"] = mixer
    return header, payload, end


def record_length(blob: bytes, pos: int) -> int:
    """Bytes of the version 3 or 4 record starting at ``pos`` (to the end unless it is sized)."""
    return unpack(blob[pos:])[2]


def sized(record: bytes) -> bytes:
    """The same version 3 or 4 record with its payload length written, so another record may follow."""
    header, payload, end = unpack(record)
    if end != len(record):
        raise ValueError("expected exactly one record")
    byte = record[6] | 0x80
    if record[6] & 0x80:
        return record
    pos = header["header_bytes"]
    stored = record[pos:]
    return record[:6] + bytes([byte]) + record[7:pos] + _varint(len(stored)) + stored

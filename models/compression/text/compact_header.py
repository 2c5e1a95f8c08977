"""Format versions 3, 4, 8, 13, 17, 22, 26, 28, 31, 32 and 37 of ``.lmlt``: a header of about 20 bytes for a catalogue model with preset settings.

A teacher's paragraph codes to a few dozen bytes, so the header decides whether the model beats
deflate on the screen (version 2 spent ~110 bytes on a deflated JSON header). These versions write
only what the decoder cannot work out itself; everything else it recomputes from the model id
and the preset (weights and tokenizer hashes, machine, library versions, window rule)::

    magic b"LMLT"   4 bytes
    version         1 byte: 8 (the model alone) or 13 (the mixing coder, ``mixing.py``), what LM Lab writes;
                            17 when the text was unwrapped (``line_breaks.py``), for either coder;
                            22, 26 and 28 are 8, 13 and 17 with every token coded in two steps
                            (``two_step.py``): what LM Lab writes now; 31, 32 and 37 are 22, 26 and 28 for
                            the presets with ids 4 to 7 (the preset bits hold the id less 4);
                            3 and 4 are the same without the payload length and checksum (read, never written)
    flags           1 byte: bits 0-1 mode (0 text, 1 mixed, 2 bytes), bits 2-3 preset (PRESET_IDS; 2,
                            "fast-primed", since the lanes read the text's opening; 3, "two-models", compact's
                            lanes with a second model mixed in; 4, "two-models-shared", the same with the
                            shared fold, in versions 31, 32 and 37; 5, "two-models-learned", the same with the
                            first model's share learned per context; 6, "two-models-geometric", the same with
                            half of each token coded by the geometric mixture and an opening), bits 4-7 CPU threads - 1
    model           1 byte: bits 0-5 model id (MODEL_IDS), bit 6 precision (0 bf16, 1 fp32),
                            bit 7 "sized" (a payload length follows; always set in versions 8 and 13)
    mixer           1 byte, versions 4, 13, 17, 26 and 28: the mixer's id (MIXER_IDS): named settings
                            (``mixing.NAMED``); 0 in versions 17 and 28: the model alone
    digest          8 bytes: the fingerprint digest (below)
    check           4 bytes: the first 32 bits of the sha256 of the original bytes
    n_bytes, n_tokens       unsigned LEB128 varints
    line breaks     versions 17 and 28 only: width * 2 + (1 if CR LF was coded as LF), the number of flips, and each
                    flip's distance from the previous one, all varints (``LineBreaks.to_fields``)
    payload length          varint; in versions 3 and 4 only when sized, else the payload runs to the end
    payload         the range coder's 32-bit words, little-endian, trailing zero bytes of the last word cut
    crc32           4 bytes, versions 8 and later: CRC32 of every byte of the record before it

The 64-bit digest covers the whole fingerprint in four slices, so that a mismatch can be named
without storing the fingerprint: the model's weights and tokenizer (24 bits), the machine (device
type and CPU/GPU kernel family, 16 bits), the library versions (16 bits) and the codec with its
settings (8 bits; with the mixer's settings in version 4). The decoder recomputes each slice from its own setup and names the ones that
differ. The lane count is not stored: the preset's rule derives it from the token count.

Why versions 8 and 13 spend 5 bytes (the length varint, 1 byte below 128 payload bytes, and the CRC):
an arithmetic decoder fed a cut or damaged payload does not fail, it decodes other text, and only the
check of the original, after one model step per token, says so: minutes on a loaded classroom
machine. The length and the CRC refuse such a file before the model is loaded. Versions 3 and 4
files still decode as before (a damaged payload is caught by the check after decoding).
The version numbers differ from every other readable version (2, 3, 4, 8, 13, 17, 22, 26, 28, 31, 32, 37 and
the JSON header's 14) in at least two bits, so that one changed bit of the version byte gives a version no reader accepts: the file
is refused at once instead of being read without its checksum (tests/test_lmlt_damage.py flips each bit).
Anything else (a model outside the catalogue, custom settings, LZMA mode, more than 16 threads)
keeps the self-describing JSON header of ``text_container`` (version 14; version 2 files are still read).
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib

from models.compression.text.line_breaks import LineBreaks
from models.core.errors import CorruptFile, FingerprintMismatch

MAGIC = b"LMLT"
VERSION = 3
VERSION_MIXED = 4
VERSION_CHECKED = 8  # version 3 with the payload length and a CRC32: what LM Lab writes for the model alone
VERSION_CHECKED_MIXED = 13  # version 4 likewise, for the mixing coder
VERSION_LINES = 17  # version 13 with the text's line breaks (``line_breaks.py``); mixer id 0: the model alone
# The same three layouts with every token coded in two steps (``two_step.py``): what LM Lab writes now.
TWO_STEP = {VERSION_CHECKED: 22, VERSION_CHECKED_MIXED: 26, VERSION_LINES: 28}
# The same again for the presets with ids 4 to 7 (PRESET_IDS), whose ids do not fit the flags' two bits.
LATER_PRESETS = {VERSION_CHECKED: 31, VERSION_CHECKED_MIXED: 32, VERSION_LINES: 37}
LAYOUT = {two: one for table in (TWO_STEP, LATER_PRESETS) for one, two in table.items()}  # -> the version laid
# out the same way
VERSIONS = (VERSION, VERSION_MIXED, VERSION_CHECKED, VERSION_CHECKED_MIXED, VERSION_LINES, *TWO_STEP.values(),
            *LATER_PRESETS.values())
MIXED = (VERSION_MIXED, VERSION_CHECKED_MIXED, VERSION_LINES, TWO_STEP[VERSION_CHECKED_MIXED],
         TWO_STEP[VERSION_LINES], LATER_PRESETS[VERSION_CHECKED_MIXED], LATER_PRESETS[VERSION_LINES])  # with a mixer
# byte
CHECKED = (VERSION_CHECKED, VERSION_CHECKED_MIXED, VERSION_LINES, *TWO_STEP.values(), *LATER_PRESETS.values())
TWO_STEP_CODING = "two-step"  # the JSON header's "coding" entry for it (absent: one step, as before)
_CRC = struct.Struct("<I")
_FIXED = struct.Struct("<4sBBB8s4s")  # magic, version, flags, model, digest, check
_MIXED = struct.Struct("<4sBBBB8s4s")  # magic, version, flags, model, mixer, digest, check

# Stable ids: a file stores the number, so never renumber or reuse one (append new models).
MODEL_IDS = {
    "smollm2-135m-instruct": 1,
    "openai-community/gpt2": 2,
    "distilbert/distilgpt2": 3,
    "HuggingFaceTB/SmolLM2-135M": 4,
    "gemma-3-270m": 5,
}
MIXER_IDS = {"mix-1": 1, "mix-2": 2, "mix-3": 3, "mix-4": 4}  # mixing.NAMED settings by id; never renumber
# Names in lm_codec.RULES; index = the id in the flags (never renumber). "fast" is the fast preset as it was
# before its lanes were primed with the text's opening ("fast-primed", what the fast preset writes now).
PRESET_IDS = ("fast", "compact", "fast-primed", "two-models", "two-models-shared", "two-models-learned",
              "two-models-geometric")
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


def _read_varint(blob: bytes, pos: int, start: int = 0) -> tuple[int, int]:
    """(value, position after it); CorruptFile when the file ends inside it or it is too long."""
    value = 0
    for i in range(5):  # 35 bits: more than any size a record may declare
        if pos + i >= len(blob):
            raise CorruptFile(truncated(len(blob), start=start))
        byte = blob[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise CorruptFile("The file is damaged: a number in its header makes no sense (it is longer than 5 bytes).")


def truncated(length: int, declared: int | None = None, start: int = 0) -> str:
    """The message for a file that ends before its record does (sizes in the whole file's bytes)."""
    length = f"{length:,} byte{'s' if length != 1 else ''}"
    if declared is None:
        where = f"in the middle of the header of the record at byte {start:,}" if start else "in the middle of its header"
        return f"The file is truncated: it ends after {length}, {where}. Upload the whole file."
    return (f"The file is truncated: it ends after {length}, its header says {declared:,}. "
            "Upload the whole file.")


DAMAGED = ("The file is damaged: its checksum does not match, so some of its bytes were changed after LM Lab "
           "wrote it. Nothing was decoded.")


def pack(*, model: str, mode: str, preset: str, precision: str, threads: int, fingerprint_digest: bytes,
         data_sha256: bytes, n_bytes: int, n_tokens: int, payload: bytes, mixer: str | None = None,
         line_breaks: LineBreaks | None = None, two_step: bool = True) -> bytes:
    """One version 8 record (version 13 with ``mixer``, a MIXER_IDS name: the mixing coder; version 17 with
    ``line_breaks``, either coder; 22, 26 or 28 when the payload codes tokens in two steps, ``two_step``).
    It states its payload length, so records can follow each other, and ends with the CRC32 of its bytes.
    ValueError when the settings need the version 2 header or the payload is not whole 32-bit words."""
    if not eligible(model, mode, preset, precision, threads):
        raise ValueError("these settings need the version 2 header")
    preset_id = PRESET_IDS.index(preset)
    if preset_id >= 4 and not two_step:
        raise ValueError("presets from id 4 on are written with tokens coded in two steps")
    flags = MODES.index(mode) | (preset_id & 3) << 2 | (threads - 1) << 4
    byte = MODEL_IDS[model] | PRECISIONS.index(precision) << 6 | 1 << 7
    if len(payload) % 4:
        raise ValueError("the payload must be whole 32-bit words")
    cut = payload
    while len(payload) - len(cut) < 3 and cut.endswith(b"\0"):  # only within the last word: the count stays
        cut = cut[:-1]
    layout = VERSION_LINES if line_breaks is not None else VERSION_CHECKED if mixer is None else VERSION_CHECKED_MIXED
    version = LATER_PRESETS[layout] if preset_id >= 4 else TWO_STEP[layout] if two_step else layout
    if layout == VERSION_CHECKED:
        out = _FIXED.pack(MAGIC, version, flags, byte, fingerprint_digest, data_sha256[:4])
    else:
        out = _MIXED.pack(MAGIC, version, flags, byte, MIXER_IDS[mixer] if mixer else 0, fingerprint_digest,
                          data_sha256[:4])
    out += _varint(n_bytes) + _varint(n_tokens)
    if line_breaks is not None:
        head, steps = line_breaks.to_fields()
        out += _varint(head) + _varint(len(steps)) + b"".join(_varint(step) for step in steps)
    out += _varint(len(cut)) + cut
    return out + _CRC.pack(zlib.crc32(out))


def unpack(blob: bytes, start: int = 0) -> tuple[dict, bytes, int]:
    """(header, payload, end) of the record at ``start``: ``end`` is where it ends in ``blob``. The header
    has the keys the version 2 reader gives where the file knows them; window, keep and start_id are
    filled in by the decoder from the preset. CorruptFile when the file ends inside the record, its
    checksum (versions 8 and 13) does not match, or it names a model, mode, preset or mixer unknown here.
    Everything a reader can check without the model is checked here, before the model is loaded."""
    version = blob[start + 4] if len(blob) > start + 4 else None
    fixed = _MIXED if version in MIXED else _FIXED
    if len(blob) - start < fixed.size:
        raise CorruptFile(truncated(len(blob), start=start))
    mixer_id = 0
    if fixed is _MIXED:
        magic, version, flags, byte, mixer_id, fp_digest, check = _MIXED.unpack_from(blob, start)
    else:
        magic, version, flags, byte, fp_digest, check = _FIXED.unpack_from(blob, start)
    if magic != MAGIC or version not in VERSIONS:
        raise CorruptFile("This is not a record written by LM Lab's text compressor (format versions 3, 4, 8, 13, "
                          "17, 22, 26, 28, 31, 32 and 37).")
    checked = version in CHECKED
    layout = LAYOUT.get(version, version)
    n_bytes, pos = _read_varint(blob, start + fixed.size, start)
    n_tokens, pos = _read_varint(blob, pos, start)
    breaks = None
    if layout == VERSION_LINES:
        head, pos = _read_varint(blob, pos, start)
        count, pos = _read_varint(blob, pos, start)
        if count > n_bytes:  # a flip is a space of the text
            raise CorruptFile("The file is damaged: its record of the text's line breaks makes no sense.")
        steps = []
        for _ in range(count):
            step, pos = _read_varint(blob, pos, start)
            steps.append(step)
    sized = checked or byte >> 7
    if sized:
        size, pos = _read_varint(blob, pos, start)
        end = pos + size + (_CRC.size if checked else 0)
        if end > len(blob):
            raise CorruptFile(truncated(len(blob), end))
    else:
        size = len(blob) - pos
        end = len(blob)
    if checked and _CRC.unpack_from(blob, end - _CRC.size)[0] != zlib.crc32(memoryview(blob)[start:end - _CRC.size]):
        raise CorruptFile(DAMAGED)
    if layout == VERSION_LINES:
        breaks = LineBreaks.from_fields(head, steps)
    # The checksum matched (or the version has none): an unknown id means a newer LM Lab wrote the file.
    mixer = next((k for k, v in MIXER_IDS.items() if v == mixer_id), None)
    mode, preset, threads = flags & 3, (flags >> 2) & 3 | (4 if version in LATER_PRESETS.values() else 0), (flags >> 4) + 1
    model_id, precision = byte & 0x3F, (byte >> 6) & 1
    model = next((k for k, v in MODEL_IDS.items() if v == model_id), None)
    if model is None or mode >= len(MODES) or preset >= len(PRESET_IDS) \
            or (version in MIXED and mixer is None and not (layout == VERSION_LINES and mixer_id == 0)):
        raise CorruptFile("This file was made with a model or settings this LM Lab does not know (a newer LM Lab "
                          "made it), or it is damaged. Decode it with the LM Lab version that made it.")
    payload = blob[pos:pos + size] + b"\0" * (-size % 4)
    header = {"format": "lmlab-text", "version": version, "mode": MODES[mode], "n_bytes": n_bytes,
              "n_tokens": n_tokens, "sha256": check.hex(), "preset": PRESET_IDS[preset], "threads": threads,
              "payload_bytes": size, "header_bytes": pos - start,
              "fingerprint": {"model": model, "precision": PRECISIONS[precision], "digest": fp_digest.hex()}}
    if mixer is not None:
        header["mixer_id"] = mixer
    if breaks is not None:
        header["line_breaks"] = breaks.to_header()
    if version in LAYOUT:
        header["coding"] = TWO_STEP_CODING
    return header, payload, end


def record_length(blob: bytes, pos: int) -> int:
    """Bytes of the record starting at ``pos`` (to the end of ``blob`` for an unsized version 3 or 4 record).
    CorruptFile as ``unpack``."""
    return unpack(blob, pos)[2] - pos


def sized(record: bytes) -> bytes:
    """The same record with its payload length written, so that another record may follow (versions 8
    and 13 always state it). ValueError unless ``record`` is exactly one record."""
    header, payload, end = unpack(record)
    if end != len(record):
        raise ValueError("expected exactly one record")
    if record[4] in CHECKED or record[6] & 0x80:
        return record
    pos = header["header_bytes"]
    stored = record[pos:]
    return record[:6] + bytes([record[6] | 0x80]) + record[7:pos] + _varint(len(stored)) + stored

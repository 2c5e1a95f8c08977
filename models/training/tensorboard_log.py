"""Trim a run's TensorBoard event files back to a checkpoint, so a resumed run logs each step once.

A run killed at step 15 with its last checkpoint at step 10 has written steps 11-15 to its event file;
the resumed process trains them again and writes them to a new file. TensorBoard would then show two
values for each of those steps (``SummaryWriter(purge_step=...)`` only asks the reader to hide them).
Rewriting the old files without the events after the checkpoint leaves every step once, on disk.

Event files are TFRecord files: each record is ``uint64 length, uint32 masked crc of the length, data,
uint32 masked crc of the data`` (little-endian), ``data`` one serialised ``Event`` protobuf. Records are
copied byte for byte, so their checksums stay valid; a record cut short by the kill is dropped.
"""

from __future__ import annotations

import struct
from pathlib import Path

from models.core import settings

_HEADER = 12  # uint64 length + uint32 crc
_FOOTER = 4


def _records(blob: bytes):
    """(raw record bytes, event data) for each whole record of an event file, in order."""
    pos = 0
    while pos + _HEADER <= len(blob):
        (length,) = struct.unpack_from("<Q", blob, pos)
        end = pos + _HEADER + length + _FOOTER
        if end > len(blob):
            return  # the last record was cut short (the process was killed while writing it)
        yield blob[pos:end], blob[pos + _HEADER:pos + _HEADER + length]
        pos = end


def trim(log_dir: Path, step: int) -> int:
    """Drop the events after ``step`` from every event file under ``log_dir`` (each rewritten atomically);
    returns how many events were dropped. Events without a step (the file header) are kept."""
    from tensorboard.compat.proto.event_pb2 import Event  # late: TensorBoard is heavy and only this path needs it

    dropped = 0
    for path in sorted(Path(log_dir).rglob("events.out.tfevents.*")):
        blob = path.read_bytes()
        kept, total = [], 0
        for raw, data in _records(blob):
            total += 1
            if Event.FromString(data).step <= step:
                kept.append(raw)
        joined = b"".join(kept)
        if joined != blob:
            dropped += total - len(kept)
            settings.atomic_write_bytes(path, joined)
    return dropped

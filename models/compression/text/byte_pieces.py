"""A byte range of a text as characters, for the pictures of parses over bytes (LZ77, LZ78).

A byte parser may end a phrase inside a multi-byte UTF-8 character ("ö" is the two bytes C3 B6). Decoding
each phrase alone prints U+FFFD for both halves ("W��rt" for "Wört"), which hides what happened; here a
phrase is split into runs of whole characters and pieces that hold only some bytes of one character, so a
picture can show "ö, byte 1 of 2" in one phrase and "ö, byte 2 of 2" in the next. Bytes that are not UTF-8
at all (an uploaded binary file) are pieces of their own, with no character.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Piece:
    """Part of a byte range: whole characters (``whole``), or some bytes of one character."""
    text: str  # the whole characters, or the one character this piece holds part of ("" for a non-UTF-8 byte)
    raw: bytes  # the piece's bytes
    first: int = 0  # for a part: which of the character's bytes it holds, 1-based, first..last
    last: int = 0
    of: int = 0  # the character's length in bytes (0: whole characters, or a byte that is not UTF-8)

    @property
    def whole(self) -> bool:
        return self.of == 0 and bool(self.text)


def _length(lead: int) -> int:
    """A UTF-8 sequence's length from its first byte (RFC 3629); 0 for a byte that cannot start one."""
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


class CharMap:
    """Where each character of ``data`` starts and ends; then ``pieces(start, end)`` for any byte range."""

    def __init__(self, data: bytes):
        self.data = bytes(data)
        n = len(self.data)
        self._start = [0] * n  # the first byte of the character byte i belongs to
        self._length = [1] * n  # that character's length in bytes
        self._char: list[str | None] = [None] * n  # the character (None: byte i is not UTF-8)
        i = 0
        while i < n:
            size = _length(self.data[i])
            try:
                char = self.data[i:i + size].decode("utf-8") if size and i + size <= n else None
            except UnicodeDecodeError:  # a bad continuation byte or a surrogate
                char = None
            size = size if char is not None else 1
            for k in range(i, i + size):
                self._start[k], self._length[k], self._char[k] = i, size, char
            i += size

    def pieces(self, start: int, end: int) -> list[Piece]:
        """Bytes ``start:end`` of the data as whole-character runs and parts of characters, in order."""
        out: list[Piece] = []
        run_from = None  # start of the current run of whole characters
        i = start
        while i < end:
            s, size, char = self._start[i], self._length[i], self._char[i]
            if char is not None and s == i and i + size <= end:
                run_from = i if run_from is None else run_from
                i += size
                continue
            if run_from is not None:
                out.append(Piece(self.data[run_from:i].decode("utf-8"), self.data[run_from:i]))
                run_from = None
            stop = min(end, s + size)
            if char is None:
                out.append(Piece("", self.data[i:stop]))
            else:
                out.append(Piece(char, self.data[i:stop], i - s + 1, stop - s, size))
            i = stop
        if run_from is not None:
            out.append(Piece(self.data[run_from:end].decode("utf-8"), self.data[run_from:end]))
        return out

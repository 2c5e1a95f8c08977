"""LZ78 and LZW: dictionary coders that learn phrases as they read, written for clarity.

LZ78 (Ziv and Lempel, "Compression of individual sequences via variable-rate coding", IEEE
Trans. Inf. Theory 24(5), 1978) cuts the input into phrases, each the longest phrase already
in the dictionary plus one new byte, and emits (index of that old phrase, new byte); the new
phrase joins the dictionary. LZ77 points back into the text itself; LZ78 points into a
dictionary that both sides grow identically, so the decoder needs no window.

LZW (Welch, "A technique for high-performance data compression", IEEE Computer 17(6), 1984;
the coder of Unix ``compress`` and GIF) starts from a dictionary of all 256 bytes, so it emits
only indices: the byte that ends a phrase is the first byte of the next one, and the decoder
learns each phrase one step late (the "KwKwK" case, a phrase used the step it is made).

Both codes here write each index in just enough bits for the dictionary's current size
(``ceil(log2(size))``), after a varint with the input length. Speed is fine for the app's
input limit (tens of kB), not for big files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from models.core.errors import CorruptFile

MAX_INPUT = 1 << 24  # a pure-Python coder: the app sends at most tens of kB


@dataclass(frozen=True)
class Phrase:
    index: int  # the phrase's number in the dictionary (0 = the empty phrase)
    parent: int  # the old phrase it extends
    byte: int | None  # the one new byte (None: the input ended inside an old phrase)
    start: int  # where it starts in the input
    length: int  # bytes it covers


def lz78_parse(data: bytes) -> list[Phrase]:
    """The LZ78 phrases of ``data``: each = longest known phrase + one byte. Index 0 is the empty
    phrase; phrase i (i >= 1) is the i-th one parsed. The last phrase may end without a new byte."""
    children: dict[tuple[int, int], int] = {}  # (phrase, next byte) -> the longer phrase
    phrases: list[Phrase] = []
    pos, n = 0, len(data)
    while pos < n:
        node, length = 0, 0
        while pos + length < n and (node, data[pos + length]) in children:
            node = children[node, data[pos + length]]
            length += 1
        if pos + length == n:  # the input ended inside a known phrase
            phrases.append(Phrase(len(phrases) + 1, node, None, pos, length))
            break
        byte = data[pos + length]
        children[node, byte] = len(phrases) + 1
        phrases.append(Phrase(len(phrases) + 1, node, byte, pos, length + 1))
        pos += length + 1
    return phrases


def phrase_bytes(data: bytes, phrases: list[Phrase]) -> list[bytes]:
    return [data[p.start:p.start + p.length] for p in phrases]


class _BitWriter:
    def __init__(self) -> None:
        self.value, self.bits = 0, 0

    def write(self, value: int, width: int) -> None:
        self.value = (self.value << width) | value
        self.bits += width

    def getvalue(self) -> bytes:
        pad = -self.bits % 8
        return (self.value << pad).to_bytes((self.bits + pad) // 8, "big")


class _BitReader:
    def __init__(self, blob: bytes) -> None:
        self.value, self.left = int.from_bytes(blob, "big"), 8 * len(blob)

    def read(self, width: int) -> int:
        if width > self.left:
            raise CorruptFile("the LZ78/LZW stream ends early: the file is truncated")
        self.left -= width
        return (self.value >> self.left) & ((1 << width) - 1)


def _width(size: int) -> int:
    """Bits for an index below ``size``."""
    return max(1, math.ceil(math.log2(size))) if size > 1 else 0


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n >> 7 else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _read_varint(blob: bytes) -> tuple[int, int]:
    value = 0
    for i, byte in enumerate(blob[:4]):
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if value > MAX_INPUT:
                break
            return value, i + 1
    raise CorruptFile("the length at the start of the LZ78/LZW stream is damaged")


def _check(data: bytes) -> bytes:
    if len(data) > MAX_INPUT:
        raise ValueError(f"this teaching coder takes at most {MAX_INPUT:,} bytes")
    return bytes(data)


def lz78_encode(data: bytes) -> bytes:
    """Input length (varint), then per phrase its parent index in ceil(log2(phrases so far + 1)) bits and
    its new byte in 8 bits (a last phrase without a new byte writes only its index)."""
    data = _check(data)
    out = _BitWriter()
    for p in lz78_parse(data):
        out.write(p.parent, _width(p.index))
        if p.byte is not None:
            out.write(p.byte, 8)
    return _varint(len(data)) + out.getvalue()


def lz78_decode(blob: bytes) -> bytes:
    n, pos = _read_varint(blob)
    bits = _BitReader(blob[pos:])
    phrases = [b""]
    out = bytearray()
    while len(out) < n:
        parent = bits.read(_width(len(phrases)))
        if parent >= len(phrases):
            raise CorruptFile("an LZ78 index points past the dictionary: the file is corrupt")
        if len(out) + len(phrases[parent]) == n:  # the last phrase, without a new byte
            out += phrases[parent]
            break
        phrase = phrases[parent] + bytes([bits.read(8)])
        phrases.append(phrase)
        out += phrase
    if len(out) != n:
        raise CorruptFile("the LZ78 stream does not add up to the recorded length: the file is corrupt")
    return bytes(out)


def lzw_codes(data: bytes) -> list[int]:
    """LZW: the dictionary starts with the 256 single bytes; emit the longest known phrase's index and
    add that phrase + the next byte."""
    table = {bytes([b]): b for b in range(256)}
    codes: list[int] = []
    current = b""
    for b in data:
        longer = current + bytes([b])
        if longer in table:
            current = longer
            continue
        codes.append(table[current])
        table[longer] = len(table)
        current = bytes([b])
    if current:
        codes.append(table[current])
    return codes


def lzw_encode(data: bytes) -> bytes:
    """Input length (varint), then each code in as many bits as the dictionary needs at that point
    (the encoder's table has 256 + k entries before its k-th code: code k is written in the width
    of 256 + k, the size the decoder knows when it reads it)."""
    data = _check(data)
    out = _BitWriter()
    for k, code in enumerate(lzw_codes(data)):
        out.write(code, _width(256 + k))
    return _varint(len(data)) + out.getvalue()


def lzw_decode(blob: bytes) -> bytes:
    n, pos = _read_varint(blob)
    bits = _BitReader(blob[pos:])
    table = [bytes([b]) for b in range(256)]
    out = bytearray()
    previous = b""
    k = 0
    while len(out) < n:
        code = bits.read(_width(256 + k))
        if code < len(table):
            entry = table[code]
        elif code == len(table) and previous:  # KwKwK: the phrase being defined right now
            entry = previous + previous[:1]
        else:
            raise CorruptFile("an LZW code points past the dictionary: the file is corrupt")
        if previous:
            table.append(previous + entry[:1])
        out += entry
        previous = entry
        k += 1
    if len(out) != n:
        raise CorruptFile("the LZW stream does not add up to the recorded length: the file is corrupt")
    return bytes(out)


@dataclass(frozen=True)
class DictionaryRow:
    """One line of the dictionary-growth picture: phrase ``index`` = phrase ``parent`` + ``new``."""
    index: int
    parent: int
    old: str  # the parent phrase's text ("" for the empty phrase 0)
    new: str  # the one new character ("" when the input ended inside an old phrase)
    start: int  # byte offset in the input


def dictionary_rows(data: bytes, limit: int = 100) -> list[DictionaryRow]:
    """The first ``limit`` LZ78 phrases as (old phrase, new byte) pairs, bytes shown as text
    (invalid UTF-8 as U+FFFD). Every row's old phrase is an earlier row's whole phrase."""
    phrases = lz78_parse(bytes(data[:MAX_INPUT]))
    texts = phrase_bytes(data, phrases)
    rows = []
    for p in phrases[:limit]:
        old = texts[p.parent - 1] if p.parent else b""
        new = bytes([p.byte]) if p.byte is not None else b""
        rows.append(DictionaryRow(p.index, p.parent, old.decode("utf-8", "replace"),
                                  new.decode("utf-8", "replace"), p.start))
    return rows

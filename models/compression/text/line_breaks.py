"""Soft line breaks: hard-wrapped text coded as the paragraphs it is, and wrapped again when decoded.

Books from Project Gutenberg, RFCs, e-mails and README files are *hard-wrapped*: an editor broke every
paragraph into lines of at most W characters, at the last space that fits. The language model has to
pay for each of those line breaks (about two bits each on alice29, and the carriage return before every
line feed costs more), although the rule that put them there is known: a greedy line fill.
So the codec codes the text *unwrapped*, and the decoder wraps it again:

- **CR LF → LF**: when every line ends in CR LF (and no CR stands alone), the CRs are dropped and put
  back;
- **soft breaks → spaces**: a line break between two non-empty lines (no space or tab on either side of
  it) becomes a space when the greedy rule at width W would break there anyway, that is, when the line
  plus a space plus the next line's first word is wider than W. The decoder runs the greedy rule over
  every space of the coded text: it breaks where the next word would end past column W. Every other line
  break stays: after a short line (a heading, a list item, a verse) the model predicts it well.
- **flips**: where a line is longer than W, the file lists the spaces at which the decoder must do the
  opposite of the rule.

W is chosen to save the most: ``SOFT_BITS`` per soft break, less ``EARLY_BITS`` per full line broken early
(the next word would have fitted: an editor's or a person's choice), whose break, left in the middle of an
unwrapped paragraph, surprises the model, and ``FLIP_BITS`` per flip (its place in the file). When no width
saves anything, only the CR LF step is used, or nothing. Columns count characters: a
UTF-8 continuation byte (0x80-0xBF) takes no column. The decoder's output is compared with the
original's checksum like any decoded text. The idea is the end-of-line coding of text preprocessors
for PAQ-family compressors (e.g. the EOL transform of XWRT, Skibiński 2005); the rule here is simply
the greedy fill that ``fmt`` and editors use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from models.core.errors import CorruptFile

# Measured on the first 30 kB of alice29, one lane, teacher-forced (docs/BENCHMARKS.md, "Soft line breaks"):
# a soft break saves about 2 bits (SmolLM2-135M and Gemma 3 270M); a line broken early, left in the middle
# of an unwrapped paragraph, costs SmolLM2 about 16 (Gemma about 8: its whole-file result is the same whether
# those breaks stay or become flips).
SOFT_BITS = 2.0
EARLY_BITS = 12.0
FLIP_BITS = 16.0  # a flip's place in the file: a varint of its distance from the previous one, about two bytes
SHORT = 12  # a line narrower than W - SHORT ends where its writer wanted: its break costs nothing extra
MIN_SOFT = 4  # fewer soft breaks than this: not worth the header bytes
MAX_PLAN_WIDTH = 255  # the widths ``plan`` tries (the decoder reads up to MAX_WIDTH)
MAX_WIDTH = 4096
_CONTINUATION = bytes(range(0x80, 0xC0))


def _col(b: bytes) -> int:
    """Columns a piece of text takes: its bytes less UTF-8 continuation bytes."""
    return len(b) if b.isascii() else len(b.translate(None, _CONTINUATION))


@dataclass(frozen=True)
class LineBreaks:
    """How a text was unwrapped. ``width`` 0: the lines were kept (only CR LF was changed)."""
    crlf: bool
    width: int = 0
    flips: tuple[int, ...] = ()  # indices (0-based, over every space of the coded text) where the rule is undone
    soft: int = field(default=0, compare=False)  # line breaks coded as spaces (a count for the reader; not stored)

    def describe(self) -> str:
        """What was done, in a teacher's words (no final full stop); "" when nothing was."""
        parts = []
        if self.width:
            parts.append(f"the text is hard-wrapped: {self.soft:,} line break{'s' if self.soft != 1 else ''} only "
                         f"wrapped it at {self.width} characters, so the model read them as spaces and the decoder "
                         "wraps the text again"
                         + (f" ({len(self.flips):,} exception{'s are' if len(self.flips) > 1 else ' is'} stored in "
                            "the file)" if self.flips else ""))
        if self.crlf:
            parts.append("Windows line ends (CR LF) were read as LF and restored")
        return "; ".join(parts)

    # --- in a file ---------------------------------------------------------------------------
    def to_header(self) -> dict:
        return {"crlf": self.crlf, "width": self.width, "flips": list(self.flips)}

    @classmethod
    def from_header(cls, d: object) -> LineBreaks:
        """CorruptFile when malformed."""
        try:
            crlf, width, flips = d["crlf"], d["width"], d["flips"]
            ok = (type(crlf) is bool and type(width) is int and 0 <= width <= MAX_WIDTH and isinstance(flips, list)
                  and all(type(f) is int for f in flips) and all(a < b for a, b in pairwise([-1] + flips)))
        except (TypeError, KeyError):
            ok = False
        if not ok or (flips and not width):
            raise CorruptFile("The file is damaged: its record of the text's line breaks makes no sense.")
        return cls(crlf, width, tuple(flips))

    @classmethod
    def from_fields(cls, head: int, steps: list[int]) -> LineBreaks:
        """From a compact header's numbers: ``head`` = width * 2 + crlf, ``steps`` = each flip's distance
        from the previous one (the first from -1). CorruptFile when they make no sense."""
        if head // 2 > MAX_WIDTH or (steps and head < 2) or any(step < 1 for step in steps):
            raise CorruptFile("The file is damaged: its record of the text's line breaks makes no sense.")
        flips = np.cumsum(np.array([-1] + steps, dtype=np.int64))[1:]
        return cls(bool(head & 1), head // 2, tuple(int(f) for f in flips))

    def to_fields(self) -> tuple[int, list[int]]:
        """(head, steps) for a compact header, as ``from_fields`` reads them."""
        return self.width * 2 + self.crlf, [b - a for a, b in pairwise((-1, *self.flips))]


def _is_crlf(data: bytes) -> bool:
    n = data.count(b"\n")
    return n > 0 and data.count(b"\r\n") == n == data.count(b"\r")


def _candidates(lines: list[bytes]) -> list[bool]:
    """Per boundary between two lines: may it become a space (both lines non-empty, no blank beside it)?"""
    return [bool(a) and bool(b) and a[-1:] not in (b" ", b"\t") and b[:1] not in (b" ", b"\t")
            for a, b in pairwise(lines)]


def _joined(width: int, next_line: bytes) -> int:
    """The width of a line ``width`` columns wide with a space and ``next_line``'s first word after it: the
    greedy fill at W breaks there when this is more than W."""
    return width + 1 + _col(next_line.split(b" ", 1)[0])


def _measure(lines: list[bytes], cand: list[bool]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A, B, E): per candidate boundary, the width of the line before it (A) and of that line plus a space
    plus the next line's first word (B: the rule breaks there when B > W); per space inside a line, the
    column where the word after it ends (E: the rule breaks there, against the original, when E > W)."""
    a_cols, b_cols, e_cols = [], [], []
    for i, line in enumerate(lines):
        words = line.split(b" ")
        c = _col(words[0])
        for w in words[1:]:
            c += 1 + _col(w)
            e_cols.append(c)
        if i < len(cand) and cand[i]:
            a_cols.append(c)
            b_cols.append(_joined(c, lines[i + 1]))
    return np.array(a_cols, dtype=np.int64), np.array(b_cols, dtype=np.int64), np.array(e_cols, dtype=np.int64)


def plan(data: bytes) -> LineBreaks | None:
    """How to code ``data``: which width to unwrap at (if any) and whether to drop CRs; None: as it is."""
    crlf = _is_crlf(data)
    text = data.replace(b"\r\n", b"\n") if crlf else data
    lines = text.split(b"\n")
    cand = _candidates(lines)
    a, b, e = _measure(lines, cand)
    best, best_gain = 0, 0.0
    if len(b) >= MIN_SOFT:
        for width in range(SHORT + 1, min(MAX_PLAN_WIDTH, int(b.max())) + 1):
            ruled = b > width
            soft = int(ruled.sum())
            early = int((~ruled & (a > width - SHORT)).sum())  # full lines the rule would have filled more
            gain = SOFT_BITS * soft - EARLY_BITS * early - FLIP_BITS * (int((e > width).sum()) + 1)
            if soft >= MIN_SOFT and gain > best_gain:
                best, best_gain = width, gain
    if not best:
        return LineBreaks(crlf=True) if crlf else None
    flips, soft, k = [], 0, 0  # k: the spaces of the coded text so far
    for i, line in enumerate(lines):
        words = line.split(b" ")
        c = _col(words[0])
        for w in words[1:]:
            c += 1 + _col(w)
            if c > best:
                flips.append(k)
            k += 1
        if i < len(cand) and cand[i] and _joined(c, lines[i + 1]) > best:
            soft += 1
            k += 1
    return LineBreaks(crlf, best, tuple(flips), soft)


def apply(data: bytes, lb: LineBreaks | None) -> bytes:
    """The text the model codes: ``data`` with CR LF as LF and soft breaks as spaces (``plan``'s choice)."""
    if lb is None:
        return data
    text = data.replace(b"\r\n", b"\n") if lb.crlf else data
    if not lb.width:
        return text
    lines = text.split(b"\n")
    cand = _candidates(lines)
    out = [lines[0]]
    for i in range(len(cand)):
        soft = cand[i] and _joined(_col(lines[i]), lines[i + 1]) > lb.width
        out.append((b" " if soft else b"\n") + lines[i + 1])
    return b"".join(out)


def restore(coded: bytes, lb: LineBreaks | None) -> bytes:
    """The original text from the coded one: wrapped again at ``lb.width`` (flips undone), CRs put back.
    CorruptFile when a flip points past the text's last space."""
    if lb is None:
        return coded
    text = coded
    if lb.width:
        flips, k, out = set(lb.flips), 0, []
        for seg in coded.split(b"\n"):
            words = seg.split(b" ")
            c = _col(words[0])
            parts = [words[0]]
            for w in words[1:]:
                cw = _col(w)
                if (c + 1 + cw > lb.width) != (k in flips):
                    parts.append(b"\n")
                    c = cw
                else:
                    parts.append(b" ")
                    c += 1 + cw
                parts.append(w)
                k += 1
            out.append(b"".join(parts))
        if lb.flips and lb.flips[-1] >= k:
            raise CorruptFile("The file is damaged: its record of the text's line breaks does not fit the text.")
        text = b"\n".join(out)
    return text.replace(b"\n", b"\r\n") if lb.crlf else text

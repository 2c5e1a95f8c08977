"""A small CoNLL reader: one token per line, its tag in the last column, blank lines between sentences.

Reads the 4-column CoNLL-2003 files and 2-column files (token<TAB>tag) alike; a malformed
line is reported with its line number, so a user can fix an uploaded file.
"""

from __future__ import annotations

from pathlib import Path

from models.errors import InputError

Sentence = tuple[list[str], list[str]]  # (words, IOB tags)


def parse(text: str, source: str = "file") -> list[Sentence]:
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("-DOCSTART-"):
            if words:
                sentences.append((words, tags))
                words, tags = [], []
            continue
        parts = line.split()
        if len(parts) < 2:
            raise InputError(f"{source}, line {number}: expected 'token tag' (tag in the last column), "
                             f"got {raw[:80]!r}")
        tag = parts[-1]
        if tag != "O" and not (len(tag) > 2 and tag[:2] in {"B-", "I-", "E-", "S-"}):
            raise InputError(f"{source}, line {number}: tag {tag!r} is not IOB (O, B-TYPE or I-TYPE)")
        words.append(parts[0])
        tags.append(tag)
    if words:
        sentences.append((words, tags))
    return sentences


def read(path: Path, source: str | None = None) -> list[Sentence]:
    data = Path(path).read_bytes()
    if b"\x00" in data[:4096]:
        raise InputError(f"{source or Path(path).name} is a binary file, not a CoNLL text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{source or Path(path).name}, line {line}: not UTF-8 text") from exc
    return parse(text, source or Path(path).name)

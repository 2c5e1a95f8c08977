"""CoNLL files (one token per line, the NER tag in the last column), BIO helpers and seqeval scoring.

Reader errors name the line and what was expected, because a person fixes these files by hand.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from models.core.errors import InputError

MAX_FILE_BYTES = 200 * 2**20
_TAG = re.compile(r"^(O|[BIES]-\S+)$")
# Words as BERT's pre-tokenizer sees them: runs of letters/digits, or one punctuation mark.
_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str] = field(default_factory=list)  # gold tags; empty when the file has none
    line: int = 0  # 1-based line of the first token, for messages
    document: int = 0  # 0-based: how many -DOCSTART- lines came before it

    def text_and_spans(self) -> tuple[str, list[tuple[int, int]]]:
        """The tokens joined by single spaces, and each token's character span in that text."""
        spans, pos = [], 0
        for tok in self.tokens:
            spans.append((pos, pos + len(tok)))
            pos += len(tok) + 1
        return " ".join(self.tokens), spans


def decode_upload(data: bytes, what: str = "the file") -> str:
    """Bytes of an uploaded text file -> str, or an InputError saying why it is not text."""
    if not data.strip():
        raise InputError(f"{what} is empty")
    if b"\x00" in data[:65536]:
        raise InputError(f"{what} looks binary (it contains NUL bytes); upload a UTF-8 text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{what} is not UTF-8 text: byte 0x{data[exc.start]:02x} on line {line} "
                         f"cannot be decoded; save it as UTF-8 and upload it again") from None


def read_file(path: str | Path, require_tags: bool = True) -> list[Sentence]:
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InputError(f"{path.name} is {size / 2**20:.0f} MiB; the limit is {MAX_FILE_BYTES // 2**20} MiB")
    return parse(decode_upload(path.read_bytes(), path.name), require_tags=require_tags)


DOCSTART = "-DOCSTART-"
_SEPARATOR = re.compile(r"[ \t]+")  # the format's column separators: runs of ASCII spaces and tabs
_ODD_SPACE = re.compile(r"[^\S \t]")  # any other whitespace


def _lines(text: str):
    """(1-based number, line) for lines ended by \\n (an \\r before it is dropped). Not str.splitlines:
    it also breaks at U+2028, U+0085, \\v, \\f..., which other CoNLL readers keep inside a line."""
    for number, raw in enumerate(text.split("\n"), 1):
        yield number, raw[:-1] if raw.endswith("\r") else raw


def columns(line: str, number: int) -> list[str]:
    """The columns of one CoNLL line (separated by runs of ASCII spaces or tabs; [] for a blank line).

    Any other whitespace (no-break space U+00A0, ideographic space U+3000, thin spaces, \\r, \\v,
    \\f, U+2028...) is an error naming the line and the character: tools disagree on whether it
    separates columns or belongs to a token, so reading it either way could split or merge tokens.
    """
    odd = _ODD_SPACE.search(line)
    if odd:
        ch = odd.group()
        name = unicodedata.name(ch, "a control character")
        raise InputError(f"CoNLL line {number}: contains U+{ord(ch):04X} ({name}); separate columns with "
                         f"spaces or tabs, and tokens cannot contain whitespace: {line.strip()[:60]!r}")
    return _SEPARATOR.split(line.strip(" \t")) if line.strip(" \t") else []


def parse(text: str, require_tags: bool = True) -> list[Sentence]:
    """CoNLL text -> sentences, never merging, splitting or dropping a token.

    The format (CoNLL-2003): one token per line, its columns separated by spaces or tabs (see
    ``columns``), the NER tag in the last column (O, B-TYPE, I-TYPE; E-/S- also read); every token
    line of a file has the same number of columns. A blank line (or one of spaces and tabs) ends a
    sentence. A line whose first column is ``-DOCSTART-`` ends the sentence and the document wherever
    it appears, and is not a token. Anything else is an InputError naming the line.
    """
    sentences: list[Sentence] = []
    document, width, width_line = 0, 0, 0
    current = Sentence([], [], 0, document)

    def close() -> None:
        nonlocal current
        if current.tokens:
            sentences.append(current)
        current = Sentence([], [], 0, document)

    for number, raw in _lines(text):
        cols = columns(raw, number)
        if not cols:
            close()
            continue
        if cols[0] == DOCSTART:
            document += 1
            close()
            continue
        if len(cols) == 1 and require_tags:
            raise InputError(f"CoNLL line {number}: expected a token and its tag separated by a space or tab "
                             f"(e.g. 'Paris B-LOC'), got {raw.strip()[:60]!r}")
        if not width:
            width, width_line = len(cols), number
        elif len(cols) != width:
            raise InputError(f"CoNLL line {number} has {len(cols)} columns but line {width_line} has {width}: every "
                             f"token line needs the same columns, and a token cannot contain a space "
                             f"({raw.strip()[:60]!r})")
        tag = cols[-1] if len(cols) > 1 else ""
        if tag and not _TAG.match(tag):
            raise InputError(f"CoNLL line {number}: the last column must be a tag O, B-TYPE or I-TYPE; "
                             f"got {tag[:40]!r} in {raw.strip()[:60]!r}")
        if not current.tokens:
            current.line = number
        current.tokens.append(cols[0])
        if tag:
            current.tags.append(tag)
    close()
    if not sentences:
        raise InputError("the CoNLL file has no tokens (expected lines like 'Paris B-LOC', sentences separated "
                         "by blank lines)")
    return sentences


def looks_like_conll(text: str) -> bool:
    """True when the first non-blank lines have a tag in the last column (a CoNLL upload, not plain text)."""
    lines = [_SEPARATOR.split(ln.strip(" \t")) for _, ln in zip(range(200), text.split("\n"), strict=False)
             if ln.strip(" \t\r") and not ln.startswith(DOCSTART)]
    return bool(lines) and all(len(c) >= 2 and _TAG.match(c[-1].rstrip("\r")) for c in lines[:50])


def write(sentences: list[Sentence], predictions: list[list[str]] | None = None) -> str:
    """Sentences back to CoNLL text: 'token tag' or, with predictions, 'token gold predicted'."""
    blocks = []
    for i, sent in enumerate(sentences):
        columns = [sent.tokens] + ([sent.tags] if sent.tags else []) + ([predictions[i]] if predictions else [])
        blocks.append("\n".join(" ".join(row) for row in zip(*columns, strict=True)))
    return "\n\n".join(blocks) + "\n"


def words(text: str) -> list[tuple[str, int, int]]:
    """Split free text into CoNLL-style tokens (word, start, end)."""
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


def spans_to_bio(token_spans: list[tuple[int, int]], entities) -> list[str]:
    """Project entities (objects with start, end, label) onto tokens: B- on the first token, I- after.

    A token belongs to the entity that covers its first character; this works whichever backend
    tokenised the text, so every tagger is scored the same way against the gold tokens.
    """
    ents = sorted(entities, key=lambda e: e.start)
    tags, j, previous = [], 0, None
    for start, _end in token_spans:
        while j < len(ents) and ents[j].end <= start:
            j += 1
        ent = ents[j] if j < len(ents) and ents[j].start <= start < ents[j].end else None
        if ent is None:
            tags.append("O")
        else:
            tags.append(("I-" if ent is previous else "B-") + ent.label)
        previous = ent
    return tags


def entity_types(tag_lists) -> set[str]:
    return {t.split("-", 1)[1] for tags in tag_lists for t in tags if t != "O"}


DEFAULT_MODE = "conlleval-compatible, seqeval's default mode"


@dataclass
class Scores:
    per_type: dict[str, dict[str, float]]  # type -> precision, recall, f1, support
    micro: dict[str, float]
    macro: dict[str, float]
    mode: str = DEFAULT_MODE  # how entities were read from the tags, in words


def score(gold: list[list[str]], pred: list[list[str]], strict: bool = False) -> Scores:
    """seqeval's entity-level precision/recall/F1 (CoNLL-2003 convention: exact span and type).

    Default mode, as the CoNLL shared task's conlleval script: an ``I-X`` after ``O`` or after another
    type starts an entity. ``strict``: seqeval's strict mode with the IOB2 scheme (IOBES when the tags
    use E-/S-), where an entity must start with ``B-`` (``S-``) and such an ``I-X`` starts none; tools
    that score strictly give lower numbers for the same predictions (Nakayama, seqeval, 2018).
    """
    # late: seqeval (scikit-learn, ~2 s) is heavy and only this path needs it
    from seqeval.metrics import classification_report

    if strict:
        # late: seqeval (scikit-learn, ~2 s) is heavy and only this path needs it
        from seqeval.scheme import IOB2, IOBES

        iobes = any(t[:2] in ("E-", "S-") for tags in (*gold, *pred) for t in tags)
        report = classification_report(gold, pred, output_dict=True, zero_division=0, mode="strict",
                                       scheme=IOBES if iobes else IOB2)
        mode = f"strict {'IOBES' if iobes else 'IOB2'} (an entity must begin with {'B- or S-' if iobes else 'B-'})"
    else:
        report, mode = classification_report(gold, pred, output_dict=True, zero_division=0), DEFAULT_MODE

    def clean(row: dict) -> dict[str, float]:
        return {k: float(row[k]) for k in ("precision", "recall", "f1-score", "support")}

    per_type = {k: clean(v) for k, v in report.items() if not k.endswith(" avg")}
    return Scores(per_type, clean(report["micro avg"]), clean(report["macro avg"]), mode)

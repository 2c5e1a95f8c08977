"""CoNLL files (one token per line, the NER tag in the last column), BIO helpers and seqeval scoring.

Reader errors name the line and what was expected, because a person fixes these files by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from models.errors import InputError

MAX_FILE_BYTES = 200 * 2**20
_TAG = re.compile(r"^(O|[BIES]-\S+)$")
# Words as BERT's pre-tokenizer sees them: runs of letters/digits, or one punctuation mark.
_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str] = field(default_factory=list)  # gold tags; empty when the file has none
    line: int = 0  # 1-based line of the first token, for messages

    def text_and_spans(self) -> tuple[str, list[tuple[int, int]]]:
        """The tokens joined by single spaces, and each token's character span in that text."""
        spans, pos = [], 0
        for tok in self.tokens:
            spans.append((pos, pos + len(tok)))
            pos += len(tok) + 1
        return " ".join(self.tokens), spans


def decode_upload(data: bytes, what: str = "file") -> str:
    """Bytes of an uploaded text file -> str, or an InputError saying why it is not text."""
    if not data.strip():
        raise InputError(f"the {what} is empty")
    if b"\x00" in data[:65536]:
        raise InputError(f"the {what} looks binary (it contains NUL bytes); upload a UTF-8 text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"the {what} is not UTF-8 text: byte 0x{data[exc.start]:02x} on line {line} "
                         f"cannot be decoded; save it as UTF-8 and upload it again") from None


def read_file(path: str | Path, require_tags: bool = True) -> list[Sentence]:
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InputError(f"{path.name} is {size / 2**20:.0f} MiB; the limit is {MAX_FILE_BYTES // 2**20} MiB")
    return parse(decode_upload(path.read_bytes(), path.name), require_tags=require_tags)


def parse(text: str, require_tags: bool = True) -> list[Sentence]:
    """CoNLL text -> sentences. Blank lines end sentences; ``-DOCSTART-`` lines are skipped."""
    sentences: list[Sentence] = []
    current = Sentence([], [], 0)
    for number, raw in enumerate(text.splitlines(), 1):
        cols = raw.split()
        if not cols:
            if current.tokens:
                sentences.append(current)
            current = Sentence([], [], 0)
            continue
        if cols[0] == "-DOCSTART-":
            continue
        if len(cols) == 1 and require_tags:
            raise InputError(f"CoNLL line {number}: expected a token and its tag separated by a space or tab "
                             f"(e.g. 'Paris B-LOC'), got {raw.strip()[:60]!r}")
        tag = cols[-1] if len(cols) > 1 else ""
        if tag and not _TAG.match(tag):
            raise InputError(f"CoNLL line {number}: the last column must be a tag O, B-TYPE or I-TYPE; "
                             f"got {tag[:40]!r} in {raw.strip()[:60]!r}")
        if not current.tokens:
            current.line = number
        current.tokens.append(cols[0])
        if tag:
            current.tags.append(tag)
        if current.tags and len(current.tags) != len(current.tokens):
            raise InputError(f"CoNLL line {number}: some tokens of this sentence have a tag and some do not")
    if current.tokens:
        sentences.append(current)
    if not sentences:
        raise InputError("the CoNLL file has no tokens (expected lines like 'Paris B-LOC', sentences separated "
                         "by blank lines)")
    return sentences


def looks_like_conll(text: str) -> bool:
    """True when the first non-blank lines have a tag in the last column (a CoNLL upload, not plain text)."""
    lines = [ln.split() for ln in text.splitlines()[:200] if ln.strip() and not ln.startswith("-DOCSTART-")]
    return bool(lines) and all(len(c) >= 2 and _TAG.match(c[-1]) for c in lines[:50])


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


@dataclass
class Scores:
    per_type: dict[str, dict[str, float]]  # type -> precision, recall, f1, support
    micro: dict[str, float]
    macro: dict[str, float]


def score(gold: list[list[str]], pred: list[list[str]]) -> Scores:
    """seqeval's entity-level precision/recall/F1 (CoNLL-2003 convention: exact span and type)."""
    from seqeval.metrics import classification_report

    report = classification_report(gold, pred, output_dict=True, zero_division=0)

    def clean(row: dict) -> dict[str, float]:
        return {k: float(row[k]) for k in ("precision", "recall", "f1-score", "support")}

    per_type = {k: clean(v) for k, v in report.items() if not k.endswith(" avg")}
    return Scores(per_type, clean(report["micro avg"]), clean(report["macro avg"]))

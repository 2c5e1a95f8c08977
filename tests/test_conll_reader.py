"""The CoNLL reader never merges, splits or drops a token: what it cannot read exactly is an error naming the line."""

from __future__ import annotations

import re

import pytest

from models.core.errors import InputError
from models.ner import conll


def _read(text: str, **kw) -> list[tuple[list[str], list[str], int]]:
    return [(s.tokens, s.tags, s.document) for s in conll.parse(text, **kw)]


@pytest.mark.parametrize("text", [
    "Paris B-LOC\n-DOCSTART- -X- -X- O\nBerlin B-LOC\n",  # no blank line before it
    "Paris B-LOC\n\n-DOCSTART- -X- -X- O\n\nBerlin B-LOC\n",  # the usual layout
    "Paris B-LOC\n-DOCSTART- -X- -X- O\n\n\nBerlin B-LOC\n",
])
def test_docstart_ends_sentence_and_document_wherever_it_appears(text):
    assert _read(text) == [(["Paris"], ["B-LOC"], 0), (["Berlin"], ["B-LOC"], 1)]


def test_docstart_between_tokens_of_a_four_column_file():
    text = "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n-DOCSTART- -X- -X- O\nPeter NNP B-NP B-PER\n"
    assert _read(text) == [(["EU", "rejects"], ["B-ORG", "O"], 1), (["Peter"], ["B-PER"], 2)]


@pytest.mark.parametrize("text", [
    "Paris B-LOC\nis O\n", "Paris\tB-LOC\nis\tO\n", "Paris  \t B-LOC\nis \t O  \n", "Paris B-LOC\r\nis O\r\n",
    "  Paris B-LOC\n\tis O\n",
])
def test_ascii_spaces_and_tabs_separate_columns(text):
    assert _read(text) == [(["Paris", "is"], ["B-LOC", "O"], 0)]


def test_blank_lines_of_spaces_and_tabs_end_a_sentence():
    assert _read("Paris B-LOC\n \t \nis O\n") == [(["Paris"], ["B-LOC"], 0), (["is"], ["O"], 0)]


@pytest.mark.parametrize("text, line, char", [
    ("Paris B-LOC\nNew\u00a0York B-LOC\n", 2, "U+00A0"),  # no-break space inside a token
    ("Paris\u3000B-LOC\n", 1, "U+3000"),  # ideographic space as a separator
    ("Paris\u2009B-LOC\n", 1, "U+2009"),  # thin space
    ("Paris B-LOC\nis O\u2028was O\n", 2, "U+2028"),  # a line separator str.splitlines would break at
    ("Paris B-LOC\nis\x0bO\n", 2, "U+000B"),
    ("Paris B-LOC\nis O\x85\n", 2, "U+0085"),
    ("Paris B-LOC\ris O\n", 1, "U+000D"),  # a lone carriage return
])
def test_other_whitespace_is_an_error_naming_line_and_character(text, line, char):
    with pytest.raises(InputError, match=re.escape(f"line {line}: contains {char}")):
        conll.parse(text)


@pytest.mark.parametrize("text, message", [
    ("New York B-LOC\nis O\n", "line 2 has 2 columns but line 1 has 3"),  # a token with a space would lose 'York'
    ("EU NNP B-NP B-ORG\nrejects B-VP O\n", "line 2 has 3 columns but line 1 has 4"),
    ("Paris B-LOC\nis\n", "line 2: expected a token and its tag"),
    ("Paris B-LOC\n\nBerlin LOCATION\n", "line 3: the last column must be a tag"),
    ("-DOCSTART- -X- -X- O\n\n", "no tokens"),
])
def test_lines_it_cannot_read_are_errors(text, message):
    with pytest.raises(InputError, match=message):
        conll.parse(text)


def test_tokens_only_files_without_tags():
    assert _read("Paris\nis\n\nnice\n", require_tags=False) == [(["Paris", "is"], [], 0), (["nice"], [], 0)]
    with pytest.raises(InputError, match="line 2 has 2 columns but line 1 has 1"):
        conll.parse("Paris\nis O\n", require_tags=False)


def test_write_then_parse_gives_the_same_sentences():
    sentences = conll.parse("-DOCSTART- O\nÉcole B-ORG\nnormale I-ORG\n\n東京 B-LOC\n🙂 O\n")
    again = conll.parse(conll.write(sentences))
    assert [(s.tokens, s.tags) for s in again] == [(s.tokens, s.tags) for s in sentences]

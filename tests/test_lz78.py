"""LZ78 and LZW: exact round trips, the dictionary rule, damaged streams."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.compression.text import baselines as text_baselines
from models.compression.text import lz78
from models.core.errors import CorruptFile

CASES = [b"", b"a", b"\x00", b"aaaaaaaaaaaaaaaaaaaaaaaaa", b"abababababababa", bytes(range(256)) * 3,
         "the rain in Spain stays mainly in the plain — ünïcödé".encode()]


@pytest.mark.parametrize("data", CASES)
def test_roundtrip(data):
    assert lz78.lz78_decode(lz78.lz78_encode(data)) == data
    assert lz78.lzw_decode(lz78.lzw_encode(data)) == data


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=600))
def test_roundtrip_random_bytes(data):
    assert lz78.lz78_decode(lz78.lz78_encode(data)) == data
    assert lz78.lzw_decode(lz78.lzw_encode(data)) == data


def test_every_phrase_is_an_old_phrase_plus_one_byte():
    data = b"abracadabra abracadabra abracadabra"
    phrases = lz78.lz78_parse(data)
    texts = lz78.phrase_bytes(data, phrases)
    assert b"".join(texts) == data
    for p, text in zip(phrases, texts, strict=True):
        old = texts[p.parent - 1] if p.parent else b""
        assert p.parent < p.index
        assert text == old + (bytes([p.byte]) if p.byte is not None else b"")
    assert len(set(texts[:-1])) == len(texts) - 1  # every new phrase is new
    assert [p.index for p in phrases] == list(range(1, len(phrases) + 1))


def test_input_ending_inside_a_known_phrase():
    # "aaaa" parses as a | aa | a: the last phrase is the known "a" with no new byte
    phrases = lz78.lz78_parse(b"aaaa")
    assert [(p.parent, p.byte, p.length) for p in phrases] == [(0, 97, 1), (1, 97, 2), (1, None, 1)]
    assert lz78.lz78_decode(lz78.lz78_encode(b"aaaa")) == b"aaaa"


def test_lzw_kwkwk_case():
    # "aaaa...": LZW emits a code the decoder is only defining at that step
    data = b"a" * 50
    assert lz78.lzw_codes(data)[:3] == [97, 256, 257]
    assert lz78.lzw_decode(lz78.lzw_encode(data)) == data


def test_dictionary_coders_learn_repeats():
    text = ("It was the best of times, it was the worst of times, " * 30).encode()
    assert len(lz78.lzw_encode(text)) < len(lz78.lz78_encode(text)) < len(text) / 3
    rows = lz78.dictionary_rows(text, limit=100)
    assert len(rows) == 100 and rows[0].old == "" and rows[0].new == "I"
    by_index = {r.index: r.old + r.new for r in rows}
    assert all(r.parent == 0 or by_index[r.parent] == r.old for r in rows)


def test_damaged_streams_are_refused():
    blob = lz78.lz78_encode(b"hello hello hello")
    with pytest.raises(CorruptFile):
        lz78.lz78_decode(blob[:-3])
    with pytest.raises(CorruptFile):
        lz78.lzw_decode(lz78.lzw_encode(b"hello hello hello")[:-3])
    with pytest.raises(CorruptFile):
        lz78.lz78_decode(b"\xff\xff\xff\xff\xff")
    with pytest.raises(CorruptFile):
        lz78.lzw_decode(b"\x05\xff\xff\xff")  # first code 511 > the 256-entry table


def test_rows_in_the_comparison_table():
    data = ("To be, or not to be, that is the question. " * 20).encode()
    for name in ("LZ78", "LZW (compress, GIF)"):
        row = text_baselines.run_coder(name, data)
        assert row.verified and 0 < row.compressed_bytes < len(data)

"""Soft line breaks (``line_breaks.py``): hard-wrapped text is coded as paragraphs and wrapped again, exactly.

The transform must give back every byte of any input (wrapped or not, CR LF or not, UTF-8 or not), find
the width a greedy fill used, and leave alone what it cannot describe cheaply; the codec must record it in
both header formats and refuse a record that does not fit the text."""

from __future__ import annotations

import dataclasses
import random
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.compression.text import cli, compact_header, lm_codec, mixing
from models.compression.text import line_breaks as lb
from models.core.errors import CorruptFile
from tests.codec_helpers import compact_settings

ALICE = ("Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do: "
         "once or twice she had peeped into the book her sister was reading, but it had no pictures or "
         "conversations in it, `and what is the use of a book,' thought Alice `without pictures or conversation?'")
CAT = ("So she was considering in her own mind (as well as she could, for the hot day made her feel very sleepy and "
       "stupid), whether the pleasure of making a daisy-chain would be worth the trouble of getting up and picking "
       "the daisies, when suddenly a White Rabbit with pink eyes ran close by her.")


def wrapped(width: int = 48, crlf: bool = True, copies: int = 1) -> bytes:
    """Three paragraphs hard-wrapped at ``width`` (a greedy fill, as ``fmt`` does), blank lines between them."""
    text = "\n\n".join(textwrap.fill(p, width, break_long_words=False, break_on_hyphens=False)
                       for p in (ALICE, CAT, CAT + " " + ALICE) * copies)
    text += "\n"
    return (text.replace("\n", "\r\n") if crlf else text).encode()


def round_trip(data: bytes) -> lb.LineBreaks | None:
    plan = lb.plan(data)
    assert lb.restore(lb.apply(data, plan), plan) == data
    return plan


def test_a_greedy_fill_is_found_and_undone():
    data = wrapped(48)
    plan = round_trip(data)
    assert plan is not None and plan.crlf and plan.flips == ()
    assert plan.width in range(48 - 3, 49)  # any width between the longest line and the shortest break works
    coded = lb.apply(data, plan)
    assert coded.count(b"\n") == 5  # the paragraph breaks (two each) and the final line end; no CR at all
    assert b"\r" not in coded and plan.soft == data.count(b"\r\n") - 5
    assert coded.split(b"\n")[0] == ALICE.encode()  # the first paragraph as one line, as it was written


def test_a_line_longer_than_the_width_is_an_exception():
    lines = wrapped(48, crlf=False, copies=4).decode().split("\n")
    lines[1] = lines[1] + " " + lines[2].split(" ", 1)[0]  # one word pulled up: that line is now too long
    lines[2] = lines[2].split(" ", 1)[1]
    data = "\n".join(lines).encode()
    plan = round_trip(data)
    assert plan is not None and not plan.crlf and len(plan.flips) >= 1


def test_text_that_is_not_wrapped_is_left_alone():
    assert round_trip((ALICE + "\n" + CAT + "\n").encode()) is None  # one paragraph per line
    verse = b"Twinkle, twinkle, little bat!\nHow I wonder what you're at!\nUp above the world you fly,\n" \
            b"Like a tea-tray in the sky.\n"
    assert round_trip(verse) is None  # short lines of any length: no width explains their breaks
    assert round_trip(b"") is None and round_trip(b"\n") is None
    only_crlf = round_trip(b"one line\r\nanother\r\n")
    assert only_crlf == lb.LineBreaks(crlf=True)  # the CRs are still dropped
    assert round_trip(b"a\r\nb\rc\n") is None  # a lone CR: the line ends are not uniform, kept as they are


def test_columns_count_characters_not_bytes():
    german = ("Über die Brücke gingen fünf Männer, müde und hungrig, während der Regen fiel und die Straßen "
              "glänzten wie Spiegel im Licht der späten Laternen am Fluss.")
    data = textwrap.fill(" ".join([german] * 8), 40).encode()
    assert max(map(len, data.split(b"\n"))) > 40  # in bytes, some lines are wider than the fill's width
    plan = round_trip(data)
    assert plan is not None and plan.width <= 40 and plan.flips == ()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "bb", "ccc", "dddddd", " ", "  ", "\n", "\r\n", "\r", "\t", "é", "\xff", "x" * 30,
                                 "\n\n", "ü"]), max_size=80), st.integers(0, 3))
def test_any_bytes_come_back(pieces, encoding):
    text = "".join(pieces)
    data = text.encode("utf-8") if encoding else text.encode("latin-1", "replace")
    round_trip(data)


def test_random_wrapped_texts_come_back():
    rng = random.Random(7)
    words = (ALICE + " " + CAT).split()
    for _ in range(200):
        paragraph = " ".join(rng.choice(words) for _ in range(rng.randrange(1, 80)))
        width = rng.randrange(8, 90)
        text = textwrap.fill(paragraph, width, break_long_words=False)
        if rng.random() < 0.5:  # an editor's touch: a line joined or split by hand
            lines = text.split("\n")
            i = rng.randrange(len(lines))
            lines[i] = lines[i].replace(" ", "\n", 1) if rng.random() < 0.5 else lines[i] + "  " + "extra"
            text = "\n".join(lines)
        round_trip(text.encode() if rng.random() < 0.5 else text.replace("\n", "\r\n").encode())


def test_records_of_the_breaks_are_checked():
    plan = lb.LineBreaks(crlf=True, width=65, flips=(3, 40, 41))
    assert lb.LineBreaks.from_fields(*plan.to_fields()) == plan
    assert lb.LineBreaks.from_header(plan.to_header()) == plan
    for bad in ({"crlf": 1, "width": 65, "flips": []}, {"crlf": True, "width": -1, "flips": []},
                {"crlf": True, "width": 65, "flips": [5, 5]}, {"crlf": True, "width": 0, "flips": [1]},
                {"crlf": True, "width": 65}, [1, 2]):
        with pytest.raises(CorruptFile, match="line breaks makes no sense"):
            lb.LineBreaks.from_header(bad)
    with pytest.raises(CorruptFile, match="line breaks makes no sense"):
        lb.LineBreaks.from_fields(130, [0])
    with pytest.raises(CorruptFile, match="does not fit the text"):
        lb.restore(b"two words", lb.LineBreaks(crlf=False, width=20, flips=(1,)))


# --- in the codec ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mixer", [None, mixing.DEFAULT])
def test_compact_file_records_the_breaks_and_decodes(catalogued, mixer):
    data = wrapped(40)
    unwrapped = lm_codec.compress(data, catalogued, compact_settings(), mixer=mixer)
    as_is = lm_codec.compress(data, catalogued, compact_settings(), mixer=mixer, unwrap=False)
    assert unwrapped.blob[4] == compact_header.TWO_STEP[compact_header.VERSION_LINES] and as_is.blob[4] in (22, 26)
    assert unwrapped.breaks == lb.plan(data) and as_is.breaks is None
    header = lm_codec.read_header(unwrapped.blob)
    assert lb.LineBreaks.from_header(header["line_breaks"]) == unwrapped.breaks
    assert header.get("mixer_id") == (None if mixer is None else "mix-4")
    assert header["n_bytes"] == len(data) and header["n_tokens"] < lm_codec.read_header(as_is.blob)["n_tokens"]
    assert "".join(t.text for t in unwrapped.tokens) == lb.apply(data, unwrapped.breaks).decode()
    assert lm_codec.decompress(unwrapped.blob, catalogued) == data
    assert lm_codec.decompress(as_is.blob, catalogued) == data


def test_json_header_file_records_the_breaks(catalogued):
    data = wrapped(40)
    res = lm_codec.compress(data, catalogued, compact_settings(window=64, keep=16))
    assert res.blob[4] == 14 and lm_codec.read_header(res.blob)["line_breaks"] == res.breaks.to_header()
    assert lm_codec.decompress(res.blob, catalogued) == data


def test_a_record_of_breaks_that_does_not_fit_is_refused(catalogued):
    """A file whose CRC is right but whose exceptions point past the text (a writer's bug, or a forgery)."""
    data = wrapped(40)
    res = lm_codec.compress(data, catalogued, compact_settings())
    h = lm_codec.read_header(res.blob)
    payload = res.blob[h["header_bytes"]:h["header_bytes"] + h["payload_bytes"]]
    payload += b"\0" * (-len(payload) % 4)
    forged = compact_header.pack(
        model="tiny-gpt2", mode=h["mode"], preset=h["preset"], precision="fp32", threads=h["threads"],
        fingerprint_digest=bytes.fromhex(h["fingerprint"]["digest"]), data_sha256=bytes.fromhex(h["sha256"]),
        n_bytes=h["n_bytes"], n_tokens=h["n_tokens"], payload=payload,
        line_breaks=dataclasses.replace(res.breaks, flips=(10**6,)))
    with pytest.raises(CorruptFile, match="does not fit the text"):
        lm_codec.decompress(forged, catalogued)


def test_the_command_line_unwraps_unless_told_not_to(catalogued, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(lm_codec.registry, "load_causal_lm", lambda *_a, **_k: catalogued)
    src = tmp_path / "alice.txt"
    src.write_bytes(wrapped(40))
    args = [str(src), "--preset", "compact", "--precision", "fp32", "--model-only"]
    assert cli.main(["compress", *args, "-o", str(tmp_path / "a.lmlt")]) == 0
    assert "the text is hard-wrapped" in capsys.readouterr().err
    assert cli.main(["compress", *args, "--keep-lines", "-o", str(tmp_path / "b.lmlt")]) == 0
    assert "hard-wrapped" not in capsys.readouterr().err
    assert (tmp_path / "a.lmlt").read_bytes()[4] == compact_header.TWO_STEP[compact_header.VERSION_LINES]
    assert (tmp_path / "b.lmlt").read_bytes()[4] == compact_header.TWO_STEP[compact_header.VERSION_CHECKED]
    for name in ("a", "b"):
        assert cli.main(["decompress", str(tmp_path / f"{name}.lmlt"), "-o", str(tmp_path / f"{name}.txt")]) == 0
        assert (tmp_path / f"{name}.txt").read_bytes() == src.read_bytes()

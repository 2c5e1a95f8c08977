"""A truncated or damaged .lmlt file is refused at once, before the model is loaded, with a message a teacher
reads: the tester's 46-byte file cut to 30 bytes, or with one byte changed, ran the model for minutes and
then blamed "another machine type". Every refusal here happens with the model loader replaced by one that
fails the test, so no model step can run; good files still round-trip."""

from __future__ import annotations

import dataclasses
import random
import re
import textwrap

import pytest

from models.compression.text import cli, compact_header, lm_codec, mixing
from models.compression.text import compare as text_compare
from models.compression.text import container as text_container
from models.core.errors import CorruptFile
from tests.codec_helpers import compact_settings

TEXT = b"A language model is a lossless compressor: likely words cost almost nothing."
# A hard-wrapped text with CR LF line ends, coded unwrapped (``line_breaks.py``): format version 17.
WRAPPED = b"\r\n".join(textwrap.fill(TEXT.decode() + " It pays for what it did not expect, in bits. " * 10, 30)
                       .encode().split(b"\n")) + b"\r\n"
# Versions 8, 13 and 17 code each token in one step (files made before two-step coding); 22, 26 and 28 are
# the same layouts with two-step coding, what LM Lab writes now; the JSON header (14) says which it used;
# 31, 32 and 37 are 22, 26 and 28 for presets from id 4 on (the two-models preset with the shared fold).
KINDS = ["v8", "v13", "v14", "v17", "v17-alone", "v22", "v26", "v28", "v28-alone", "v14-two-step", "v31", "v32", "v37"]
ORIGINAL = {"v8": TEXT, "v13": TEXT, "v14": TEXT, "v17": WRAPPED, "v17-alone": WRAPPED, "v22": TEXT, "v26": TEXT,
            "v28": WRAPPED, "v28-alone": WRAPPED, "v14-two-step": TEXT, "v31": TEXT, "v32": TEXT, "v37": WRAPPED}
NOT_LMLT = "This is not a file written by LM Lab's text compressor (.lmlt): it should start with the letters LMLT."
DAMAGED = "The file is damaged: its checksum does not match"


@pytest.fixture(scope="module")
def files(tiny_gpt2, smollm) -> dict[str, bytes]:
    """One good file of each format LM Lab writes: compact (model alone, mixing coder) and JSON header."""
    saved = dict(compact_header.MODEL_IDS)
    compact_header.MODEL_IDS["tiny-gpt2"] = 63  # the tiny test model under a catalogue id: the compact header

    def one_step(data, mixer=None, settings=None):
        return lm_codec.compress_many(data, tiny_gpt2, [mixer], settings or compact_settings(),
                                      codings=(lm_codec.ONE_STEP,))[0].blob

    two_models = dataclasses.replace(lm_codec.PRESETS["two-models"], precision="fp32")
    try:
        out = {"v8": one_step(TEXT),
               "v13": one_step(TEXT, mixing.DEFAULT),
               "v14": one_step(TEXT, settings=compact_settings(window=64, keep=16)),
               "v17": one_step(WRAPPED, mixing.DEFAULT),
               "v17-alone": one_step(WRAPPED),
               "v22": lm_codec.compress(TEXT, tiny_gpt2, compact_settings()).blob,
               "v26": lm_codec.compress(TEXT, tiny_gpt2, compact_settings(), mixer=mixing.DEFAULT).blob,
               "v28": lm_codec.compress(WRAPPED, tiny_gpt2, compact_settings(), mixer=mixing.DEFAULT).blob,
               "v28-alone": lm_codec.compress(WRAPPED, tiny_gpt2, compact_settings()).blob,
               "v14-two-step": lm_codec.compress(TEXT, tiny_gpt2, compact_settings(window=64, keep=16)).blob,
               "v31": lm_codec.compress(TEXT, tiny_gpt2, two_models, second=smollm).blob,
               "v32": lm_codec.compress(TEXT, tiny_gpt2, two_models, mixer=mixing.DEFAULT, second=smollm).blob,
               "v37": lm_codec.compress(WRAPPED, tiny_gpt2, two_models, mixer=mixing.DEFAULT, second=smollm).blob}
    finally:
        compact_header.MODEL_IDS.clear()
        compact_header.MODEL_IDS.update(saved)
    assert [b[4] for b in out.values()] == [8, 13, 14, 17, 17, 22, 26, 28, 28, 14, 31, 32, 37]
    assert "coding" not in lm_codec.read_header(out["v14"])
    assert lm_codec.read_header(out["v14-two-step"])["coding"] == lm_codec.TWO_STEP
    return out


@pytest.fixture
def no_model(catalogued, monkeypatch):
    """Loading a model fails the test: a refusal must come from reading the file alone."""
    def load(*_a, **_k):
        raise AssertionError("the model was loaded for a file that should have been refused first")

    monkeypatch.setattr(lm_codec.registry, "load_causal_lm", load)


def refused(blob: bytes) -> str:
    """The message of each reader the app and the command line use (they must agree), model never loaded."""
    messages = set()
    for read in (lm_codec.decompress, lm_codec.read_records,
                 lambda b: text_compare.decompress_file(b, "bad.lmlt")):
        with pytest.raises(CorruptFile) as info:
            read(blob)
        messages.add(str(info.value))
    assert len(messages) == 1, messages
    message = messages.pop()
    assert not re.search(r"\bb'|\\x[0-9a-f]{2}|magic", message), message  # no Python bytes reprs, no jargon
    return message


@pytest.mark.parametrize("kind", KINDS)
def test_good_files_round_trip(files, catalogued, kind):
    assert lm_codec.decompress(files[kind], catalogued) == ORIGINAL[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_truncated_files_are_refused_before_the_model(files, no_model, kind):
    blob = files[kind]
    header_end = lm_codec.read_header(blob).get("header_bytes", 9 + int.from_bytes(blob[5:9], "little"))
    for cut in sorted({1, 3, 4, 5, 8, 12, 19, 21, header_end - 1, header_end + 1, len(blob) // 2, len(blob) - 5,
                       len(blob) - 4, len(blob) - 1}):
        message = refused(blob[:cut])
        assert message.startswith(f"The file is truncated: it ends after {cut:,} byte"), (cut, message)
        if not kind.startswith("v14") and cut > header_end:  # the compact record states its whole length
            assert f"ends after {cut:,} bytes, its header says {len(blob):,}." in message, (cut, message)


@pytest.mark.parametrize("kind", KINDS)
def test_one_changed_byte_anywhere_is_refused_before_the_model(files, no_model, kind):
    blob = files[kind]
    payload_from = len(blob) - lm_codec.read_header(blob)["payload_bytes"] - 4
    for pos in range(len(blob)):
        for change in (0xFF, 0x01, 0x80):
            bad = bytearray(blob)
            bad[pos] ^= change
            message = refused(bytes(bad))
            if pos < 4:
                assert message == NOT_LMLT
            elif pos >= payload_from:
                assert message.startswith(DAMAGED), (pos, change, message)


@pytest.mark.parametrize("kind", ["v8", "v13", "v17", "v22", "v26", "v28", "v31", "v32", "v37"])
def test_every_bit_of_the_version_byte(files, no_model, kind):
    """One bit of the version byte must not turn a checked record into one read without its checksum."""
    for bit in range(8):
        bad = bytearray(files[kind])
        bad[4] ^= 1 << bit
        refused(bytes(bad))


def test_empty_and_random_files(no_model):
    assert refused(b"").startswith("The file is empty")
    assert refused(b"\x00\x01\x02\x03") == NOT_LMLT
    rng = random.Random(0)
    for n in (1, 5, 46, 1000):
        assert refused(bytes(rng.randrange(256) for _ in range(n))) == NOT_LMLT
    for version in (2, 8, 13, 14, 17, 22, 26, 28, 7, 200):  # the right letters, then noise
        for n in (0, 4, 30, 300):
            tail = bytes(rng.randrange(256) for _ in range(n))
            refused(b"LMLT" + bytes([version]) + tail)


def test_messages_a_teacher_reads(files, no_model):
    """The tester's cases: one bit of the magic changed, random bytes, an unknown version."""
    blob = files["v8"]
    assert refused(b"LMLU" + blob[4:]) == NOT_LMLT
    assert refused(blob[:4] + b"\x63" + blob[5:]) == (
        "This file says it was written in format version 99, which this LM Lab cannot read (it reads versions 2, "
        "3, 4, 8, 13, 14, 17, 22, 26, 28, 31, 32, 37): a newer LM Lab made it, or the file is damaged.")
    assert refused(blob + b"xyz") == (f"The file has 3 bytes after byte {len(blob)} that are not part of any record: "
                                      "it is damaged, or something was added to its end.")
    assert refused(blob[:30]) == (f"The file is truncated: it ends after 30 bytes, its header says {len(blob)}. "
                                  "Upload the whole file.")
    assert refused(blob[:10]) == ("The file is truncated: it ends after 10 bytes, in the middle of its header. "
                                  "Upload the whole file.")
    two = text_container.join_records([blob, files["v13"]])
    assert refused(two[:len(blob)] + b"PK" + two[len(blob) + 2:]) == (
        f"The file has {len(two) - len(blob)} bytes after byte {len(blob)} that are not part of any record: it is "
        "damaged, or something was added to its end.")


def test_the_command_line_says_the_same(files, no_model, tmp_path, capsys):
    bad = tmp_path / "cut.lmlt"
    bad.write_bytes(files["v13"][:30])
    assert cli.main(["decompress", str(bad), "-o", str(tmp_path / "out.txt")]) == 2
    assert f"The file is truncated: it ends after 30 bytes, its header says {len(files['v13'])}" in capsys.readouterr().err
    assert not (tmp_path / "out.txt").exists()


def test_bytes_added_by_the_checksum(files, catalogued):
    """Versions 8 and 13 (and 22, 26 laid out like them) add the payload length (1 byte below 128 payload bytes)
    and a 4-byte CRC32."""
    for kind in ("v8", "v13", "v22", "v26"):
        blob = files[kind]
        header = lm_codec.read_header(blob)
        fixed = 19 + (kind in ("v13", "v26"))  # magic, version, flags, model, (mixer), digest, check
        varints = len(compact_header._varint(header["n_bytes"])) + len(compact_header._varint(header["n_tokens"]))
        assert header["payload_bytes"] < 128
        assert header["header_bytes"] == fixed + varints + 1
        assert len(blob) == header["header_bytes"] + header["payload_bytes"] + 4


def test_checked_records_join_and_split(files, catalogued):
    joined = text_container.join_records([files[k] for k in KINDS])
    assert compact_header.sized(files["v8"]) == files["v8"]  # already states its length
    assert len(joined) == sum(map(len, files.values()))
    assert lm_codec.decompress_records(lm_codec.read_records(joined), catalogued) == b"".join(ORIGINAL[k] for k in KINDS)

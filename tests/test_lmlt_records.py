"""One reader serves every .lmlt file: the multi-record files the command line writes for long input
decode in the app (its function and its API) as they do with the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from models.compression.text import compare as text_compare
from models.compression.text import container as text_container
from models.compression.text import lm_codec
from models.core.errors import CorruptFile

ROOT = Path(__file__).resolve().parent.parent
TINY = lm_codec.CodecSettings(window=48, keep=24, lane_tokens=32, max_lanes=4, precision="fp32")
PARTS = (b"The cat sat on the mat. ", "and the dog, Grüße, sat on the log.\n".encode())


@pytest.fixture
def two_records(tiny_gpt2, monkeypatch) -> bytes:
    monkeypatch.setattr(lm_codec.registry, "load_causal_lm", lambda key, device=None: tiny_gpt2)
    blob = b"".join(lm_codec.compress(part, tiny_gpt2, TINY).blob for part in PARTS)
    assert len(text_container.split_records(blob)) == 2
    return blob


def test_two_record_file_decodes_in_the_app_function(two_records, tmp_path):
    data, path, header = text_compare.decompress_file(two_records, "two.lmlt")
    assert data == b"".join(PARTS) and path.read_bytes() == data and header["n_bytes"] == len(PARTS[0])

    from components import compress_text

    upload = tmp_path / "two.lmlt"
    upload.write_bytes(two_records)
    shown, restored, message = compress_text.decompress_text(str(upload), progress=lambda *a, **k: None)
    assert shown == b"".join(PARTS).decode() and Path(restored).read_bytes() == b"".join(PARTS)
    assert f"restored {len(data):,} bytes" in message


def test_the_app_limit_counts_every_record(two_records, monkeypatch):
    monkeypatch.setattr(text_compare, "UI_LIMIT_CPU", len(PARTS[0]) + 1)  # the first record alone would fit
    with pytest.raises(Exception, match=f"restores {sum(map(len, PARTS))} bytes") as refused:
        text_compare.decompress_file(two_records, "two.lmlt")
    # said to a learner in the page: what the page takes, and no command to type (a host's business)
    assert "this page decodes at most" in str(refused.value) and "python -m" not in str(refused.value)


def test_damaged_second_record_is_refused(two_records):
    blob = bytearray(two_records)
    blob[-1] ^= 1
    with pytest.raises(CorruptFile, match="checksum"):
        text_compare.decompress_file(bytes(blob), "bad.lmlt")
    with pytest.raises(CorruptFile, match="empty"):
        lm_codec.read_records(b"")


@pytest.fixture(scope="module")
def tiny_folder(tiny_gpt2, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-gpt2-records")
    tiny_gpt2.model.save_pretrained(folder)
    tiny_gpt2.tokenizer.save_pretrained(folder)
    return folder


def test_cli_chunked_file_decodes_through_the_api(client, tiny_folder, tmp_path):
    from gradio_client import handle_file

    src = tmp_path / "long.txt"
    src.write_text("Hello, world! Grüße. " * 30)
    packed = tmp_path / "long.lmlt"
    run = subprocess.run([sys.executable, "-m", "models.compression", "text", "compress", str(src), "-o", str(packed),
                          "--model", f"local:{tiny_folder}", "--window", "64", "--precision", "fp32",
                          "--chunk-bytes", "400"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert len(text_container.split_records(packed.read_bytes())) == 2
    text, restored, message = client.predict(handle_file(str(packed)), api_name="/decompress_text")
    assert text == src.read_text() and "checksum matches" in message
    assert Path(restored).read_bytes() == src.read_bytes()

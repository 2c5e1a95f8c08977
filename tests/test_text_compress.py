"""Classic coders, the comparison the UI shows, the text CLI, and bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.compression.text import baselines as text_baselines
from models.compression.text import compare as text_compare
from models.compression.text import container as text_container
from models.compression.text import lm_codec
from models.core import settings
from models.core.errors import CorruptFile, InputError

ROOT = Path(__file__).resolve().parent.parent
TINY = lm_codec.CodecSettings(window=48, keep=24, lane_tokens=32, max_lanes=4, precision="fp32")


def test_every_classic_coder_verifies():
    data = ("To be, or not to be, that is the question. " * 40).encode()
    rows = text_baselines.run_all(data)
    assert [r.coder for r in rows] == list(text_baselines.CODERS)
    assert all(r.verified and 0 < r.compressed_bytes < len(data) for r in rows)
    by = {r.coder: r for r in rows}
    # A repetitive text: LZ77-based coders crush it; order-0 Huffman cannot use repeats.
    assert by["deflate (zlib -9)"].bpb < 0.5 < by["Huffman (order-0, bytes)"].bpb


def test_huffman_on_bytes_matches_its_entropy():
    rng = np.random.default_rng(0)
    data = rng.choice(4, size=8000, p=[0.5, 0.25, 0.125, 0.125]).astype(np.uint8).tobytes()
    coded = text_baselines.huffman_bytes(data)
    assert coded.stats.entropy == pytest.approx(1.75, abs=0.02)
    assert coded.stats.avg_length == pytest.approx(1.75, abs=0.02)  # dyadic: Huffman is optimal
    assert text_baselines.run_coder("Huffman (order-0, bytes)", data).verified
    assert coded.size == pytest.approx(8000 * 1.75 / 8 + 128, rel=0.02)


def test_lz77_parse_rebuilds_the_input():
    data = b"abracadabra abracadabra, the cat sat on the mat; the cat sat."
    ops = text_baselines.lz77_parse(data)
    assert any(op.distance for op in ops)
    assert sum(op.length for op in ops) == len(data)
    assert text_baselines.lz77_decode(ops, text_baselines.lz77_literals(data, ops)) == data
    overlap = b"aaaaaaaaaaaaaaaaaaaa"  # a copy that overlaps its own output
    ops = text_baselines.lz77_parse(overlap)
    assert len(ops) == 2 and ops[1].distance == 1
    assert text_baselines.lz77_decode(ops, text_baselines.lz77_literals(overlap, ops)) == overlap
    with pytest.raises(InputError, match="at most"):
        text_baselines.lz77_parse(b"x" * (text_baselines.LZ77_MAX_INPUT + 1))


def test_compare_verifies_every_row_and_writes_the_file(tiny_gpt2):
    data = text_compare.PARAGRAPH.encode()
    c = text_compare.compare(data, tiny_gpt2, TINY, limit=10_000)
    # the model alone's file, the mixing coder's, and the payload of the smaller one (the download)
    assert len(c.rows) == len(text_baselines.CODERS) + 3
    assert all(r.verified for r in c.rows)
    alone, mixed = (r for r in c.rows if r.coder.startswith("language model") and "payload" not in r.coder)
    assert "alone" in alone.coder and "mixing coder" in mixed.coder
    assert c.lm_row.compressed_bytes == len(c.lm.blob) == min(alone.compressed_bytes, mixed.compressed_bytes)
    assert c.path.is_relative_to(settings.home()) and c.path.read_bytes() == c.lm.blob
    assert lm_codec.decompress(c.path.read_bytes(), tiny_gpt2) == data
    assert c.lz77 is not None and c.huffman.stats.leaves > 20


def test_compare_model_only(tiny_gpt2):
    data = text_compare.PARAGRAPH.encode()
    c = text_compare.compare(data, tiny_gpt2, TINY, limit=10_000, mixer=None)
    assert len(c.rows) == len(text_baselines.CODERS) + 2 and "mixer" not in c.lm.header
    assert c.lm.blob[4] in (22, 14)


def test_compare_bad_input(tiny_gpt2):
    with pytest.raises(InputError, match="nothing to compress"):
        text_compare.compare(b"", tiny_gpt2, TINY)
    with pytest.raises(InputError, match="command line"):
        text_compare.compare(b"x" * 101, tiny_gpt2, TINY, limit=100)


def test_examples_load():
    for name in text_compare.EXAMPLES:
        assert len(text_compare.example_text(name)) > 200


def test_concatenated_records_split():
    a = text_container.pack({"n": 1}, b"abcd")
    b = text_container.pack({"n": 2}, b"")
    parts = text_container.split_records(a + b)
    assert [text_container.unpack(p)[0]["n"] for p in parts] == [1, 2]
    with pytest.raises(CorruptFile):
        text_container.split_records(a + b[:5])


@pytest.fixture(scope="module")
def tiny_folder(tiny_gpt2, tmp_path_factory) -> Path:
    """The tiny GPT-2 saved as a local model folder, so the CLI can load it by key."""
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tiny_gpt2.model.save_pretrained(folder)
    tiny_gpt2.tokenizer.save_pretrained(folder)
    return folder


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "models.compression", "text", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_cli_roundtrip_and_bad_files(tiny_folder, tmp_path):
    src = tmp_path / "in.bin"
    src.write_bytes("Hello, world! Grüße. ".encode() * 30 + b"\xff\x00 tail")
    packed = tmp_path / "in.lmlt"
    run = _cli("compress", str(src), "-o", str(packed), "--model", f"local:{tiny_folder}", "--window", "64",
               "--precision", "fp32", "--chunk-bytes", "400")
    assert run.returncode == 0, run.stderr
    assert "B/s" in run.stderr + run.stdout and "bits/byte" in run.stdout
    assert len(text_container.split_records(packed.read_bytes())) == 2  # 660 bytes in 400-byte chunks
    out = tmp_path / "out.bin"
    run = _cli("decompress", str(packed), "-o", str(out))
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == src.read_bytes()

    damaged = tmp_path / "damaged.lmlt"
    blob = bytearray(packed.read_bytes())
    blob[-1] ^= 1
    damaged.write_bytes(bytes(blob))
    out2 = tmp_path / "out2.bin"
    run = _cli("decompress", str(damaged), "-o", str(out2))
    assert run.returncode == 2 and "checksum" in run.stderr
    assert not out2.exists()  # no partial output

    damaged.write_bytes(packed.read_bytes()[:-7])
    run = _cli("decompress", str(damaged), "-o", str(out2))
    assert run.returncode == 2 and not out2.exists()


def test_the_huffman_kernels_load_before_the_first_text():
    """The app loads numba's compiled kernels at start (``text_baselines.load_kernels``): otherwise the first text a
    class compresses times Huffman loading them (~0.3 s) rather than coding (~1 ms). Counted, not timed: the
    kernels for the byte coder's symbols (uint8) are ready, so a text's Huffman row compiles and loads nothing."""
    from models.compression import huffman

    text_baselines.load_kernels()
    ready = {str(s) for s in huffman._encode_kernel.signatures}
    assert any("uint8" in s for s in ready) and huffman._decode_kernel.signatures
    before = (len(huffman._encode_kernel.signatures), len(huffman._decode_kernel.signatures))
    data = b"Huffman gives the common bytes short codes. " * 10
    assert text_baselines._huffman_decompress(text_baselines._huffman_compress(data)) == data
    assert (len(huffman._encode_kernel.signatures), len(huffman._decode_kernel.signatures)) == before

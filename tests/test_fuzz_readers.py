"""Hostile input for every file reader: only typed errors, bounded memory, nothing written outside its folder.

Hypothesis mutates valid files (bytes flipped, truncated, header fields replaced by arbitrary JSON)
and feeds arbitrary bytes; every reader must either succeed or raise an ``LMLabError``.
"""

from __future__ import annotations

import functools
import json
import os
import struct
import tempfile
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save

from models.compression import huffman
from models.compression.checkpoint import analysis as ca
from models.compression.checkpoint import codec as checkpoint
from models.compression.checkpoint import container
from models.compression.checkpoint import safetensors_io as sio
from models.compression.text import compare as text_compare
from models.compression.text import container as text_container
from models.compression.text import lm_codec
from models.core import handout
from models.core.errors import CorruptFile, InputError, LMLabError
from models.core.filenames import safe_name
from models.ner import conll

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=8)


@functools.cache
def _checkpoint() -> tuple[bytes, bytes]:
    """A small safetensors file and its container, with every plane mode (raw, chunked/shared, zstd) and a gap."""
    rng = np.random.default_rng(0)
    tensors = {"w": torch.from_numpy(rng.normal(0, 0.02, (48, 40)).astype(np.float32)),
               "h": torch.from_numpy(rng.normal(0, 1, (300,))).to(torch.bfloat16),
               "ids": torch.zeros(600, dtype=torch.int64), "empty": torch.zeros(0)}
    data = save(tensors, metadata={"format": "pt"})
    blob, _ = checkpoint.compress(data, "tiny.safetensors", chunk=256, block=64)
    return data, blob


def _readers(blob: bytes) -> None:
    """Every way the app opens a container; each either works (and then is exact) or raises LMLabError."""
    data, _ = _checkpoint()
    for read in (checkpoint.inspect, checkpoint.decompress, checkpoint.decompress_tensors):
        try:
            out = read(blob, "fuzz.lmhz")
        except LMLabError:
            continue
        if read is checkpoint.decompress:  # past every check: must be the original, byte for byte
            assert bytes(out) == data


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def _mutate_header(blob: bytes, path: list, value) -> bytes:
    header, payload = container.unpack(blob)
    node = header
    for step in path[:-1]:
        if isinstance(node, list) and node:  # a list takes an integer step; a name picks its first item
            node = node[step % len(node) if isinstance(step, int) else 0]
        elif isinstance(node, dict):
            node = node.get(step, {})
    key = path[-1]
    if isinstance(node, list) and node:
        node[key % len(node) if isinstance(key, int) else 0] = value
    elif isinstance(node, dict):
        node[key if isinstance(key, str) else (sorted(node) or ["x"])[key % max(1, len(node))]] = value
    return container.pack(header, [bytes(payload)])


# --- checkpoint container ----------------------------------------------------------------------


def test_valid_container_reads_back():
    data, blob = _checkpoint()
    assert bytes(checkpoint.decompress(blob)) == data
    modes = {p["mode"] for t in container.unpack(blob)[0]["tensors"] for p in t["planes"]}
    assert {"raw", "zstd"} <= modes and modes & {"chunked", "shared"}  # the fuzzing reaches every decoder


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
       st.one_of(st.none(), st.integers(0, 10**6)))
def test_container_byte_mutations(flips, cut):
    _, blob = _checkpoint()
    buf = bytearray(blob)
    for pos, byte in flips:
        buf[pos % len(buf)] = byte
    if cut is not None:
        del buf[cut % len(buf):]
    _readers(bytes(buf))


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(["source", "tensors", "gaps", "planes", "block", "chunk", "size", "offset",
                                           "symbols", "mode", "shape", "start", "end", "name", "prefix", "table",
                                           "dtype", "transform", "crc32"]), st.integers(0, 5)),
                min_size=1, max_size=5), JSON)
def test_container_header_mutations(path, value):
    """Fields replaced by arbitrary JSON, CRC recomputed: the header passes its checksum and must still be checked."""
    _, blob = _checkpoint()
    _readers(_mutate_header(blob, path, value))


@functools.cache
def _coded_checkpoint() -> tuple[bytes, bytes]:
    """A file whose exponent planes are Huffman-coded in chunks (pair, byte and constant chunks)."""
    rng = np.random.default_rng(1)
    tensors = {"w": torch.from_numpy(rng.normal(0, 0.02, 12000).astype(np.float32)).to(torch.bfloat16),
               "v": torch.from_numpy(rng.normal(0, 0.02, (60, 50)).astype(np.float32)).to(torch.bfloat16).float()}
    data = save(tensors)
    return data, bytes(checkpoint.compress(data, "coded.safetensors", chunk=4096, block=512)[0])


@FUZZ
@given(st.booleans(), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4))
def test_damage_behind_a_matching_crc_is_refused_by_both_kernels(fast, flips):
    """Bytes changed inside coded planes with their CRC32s made to match: the decoder itself meets the damage
    (chunk records, tables, block offsets, bit streams) and, plain or unrolled, refuses it or restores the
    original exactly."""
    data, blob = _coded_checkpoint()
    header, payload = container.unpack(blob)
    payload = bytearray(payload)
    coded = [p for t in header["tensors"] for p in t["planes"] if p["mode"] in ("chunked", "shared")]
    assert len(coded) >= 2
    for pos, byte in flips:
        plane = coded[pos % len(coded)]
        payload[plane["offset"] + pos // len(coded) % plane["size"]] = byte
    for plane in coded:
        plane["crc32"] = container.crc32(bytes(payload[plane["offset"]:plane["offset"] + plane["size"]]))
    damaged = container.pack(header, [bytes(payload)])
    checkpoint.FAST = fast
    try:
        for check in (True, False):
            try:
                out = checkpoint.decompress(damaged, "damaged.lmhz", check=check)
            except CorruptFile:
                continue
            assert not check or bytes(out) == data
    finally:
        checkpoint.FAST = None


@FUZZ
@given(st.binary(max_size=400))
def test_container_arbitrary_bytes(tail):
    _readers(container.MAGIC + tail)
    _readers(tail)


@FUZZ
@given(st.text(max_size=40))
def test_restore_writes_only_under_its_folder(name):
    """Whatever name the container records ('../../etc/x', '', '.', '/abs'), the restore stays in home/restored."""
    data, _ = _checkpoint()
    blob, _ = checkpoint.compress(data, name)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "home").mkdir()
        src = root / "in.lmhz"
        src.write_bytes(blob)
        before = _files(root)
        old = os.environ.get("LMLAB_HOME")
        os.environ["LMLAB_HOME"] = str(root / "home")
        try:
            out = ca.decompress_file(src)
        finally:
            os.environ.pop("LMLAB_HOME") if old is None else os.environ.__setitem__("LMLAB_HOME", old)
        assert out.parent == root / "home" / "restored" and out.read_bytes() == data
        assert _files(root) - before == {root / "home" / "restored", out}


def _peak_mib(fn) -> float:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 2**20


def test_container_declaring_terabytes_is_refused_before_allocating():
    """A consistent header (sizes, shapes, offsets all agree) that claims a 1 TiB tensor in a few bytes."""
    _, blob = _checkpoint()
    header, payload = container.unpack(blob)
    t = next(t for t in header["tensors"] if t["name"] == "w")  # float32: four byte planes
    grow = 2**40
    header["source"]["size"] += grow - (t["end"] - t["start"])
    t["shape"], t["end"] = [grow // 4], t["start"] + grow
    for p in t["planes"]:
        p["symbols"] = grow // 4
    bomb = container.pack(header, [bytes(payload)])
    started = time.monotonic()
    for read in (checkpoint.decompress, checkpoint.decompress_tensors):
        with pytest.raises(CorruptFile, match="declares|cannot fill|does not match"):
            assert _peak_mib(lambda r=read: r(bomb)) < 64
    assert time.monotonic() - started < 5


def test_zstd_frame_declaring_more_than_its_plane_is_refused():
    _, blob = _checkpoint()
    header, payload = container.unpack(blob)
    ids = next(t for t in header["tensors"] if t["name"] == "ids")
    plane = ids["planes"][0]
    assert plane["mode"] == "zstd"
    frame = zstandard.ZstdCompressor().compress(b"\0" * (64 * 2**20))  # 64 MiB in a few kB
    payload = bytes(payload) + frame
    plane.update(offset=len(payload) - len(frame), size=len(frame), crc32=zlib.crc32(frame))
    with pytest.raises(CorruptFile, match="zstd frame declares"):
        assert _peak_mib(lambda: checkpoint.decompress(container.pack(header, [payload]))) < 32


def test_deflated_header_bomb_is_refused():
    head = zlib.compress(b" " * (container.MAX_HEADER + 1), 9)  # ~256 KB on disk
    blob = container._FIXED.pack(container.MAGIC, container.VERSION, container.DEFLATED, len(head), zlib.crc32(head)) + head
    with pytest.raises(CorruptFile, match="inflates past"):
        container.unpack(blob)


def test_deeply_nested_header_is_a_typed_error():
    head = b"[" * 100_000
    blob = container._FIXED.pack(container.MAGIC, container.VERSION, 0, len(head), zlib.crc32(head)) + head
    with pytest.raises(CorruptFile):
        container.unpack(blob)


def test_huffman_stream_shorter_than_its_symbols_reads_only_zeros():
    """A corrupt block asks for more bits than the data holds: the kernel must read padding, not the heap."""
    lengths = np.zeros(256, np.uint8)
    lengths[:16] = 4  # 16 symbols of 4 bits; a zero window decodes to symbol 0
    stream = huffman.EncodedStream(b"\xff", np.array([0, 8], np.uint64), 2 * 4096, 4096)
    padded = huffman.EncodedStream(b"\xff" + bytes(40_000), stream.block_bits, stream.n, stream.block)
    a, b = huffman.decode(stream, lengths), huffman.decode(padded, lengths)
    assert np.array_equal(a, b) and not a[2:].any()


# --- safetensors ----------------------------------------------------------------------------------


def _st_parse(buf: bytes) -> None:
    try:
        st_ = sio.parse(buf, "fuzz.safetensors")
    except LMLabError:
        return
    for entry in st_.tensors:  # a parsed file must be usable as described
        assert sio.array(st_, entry).nbytes == entry.nbytes


@FUZZ
@given(st.binary(max_size=300))
def test_safetensors_arbitrary_bytes(buf):
    _st_parse(buf)
    _st_parse(struct.pack("<Q", len(buf)) + buf)


@FUZZ
@given(st.text(max_size=6), JSON, st.binary(max_size=64))
def test_safetensors_header_mutations(name, entry, data):
    for header in ({name: entry}, {"t": {"dtype": "F32", "shape": entry, "data_offsets": [0, 8]}},
                   {"t": {"dtype": "F32", "shape": [2], "data_offsets": entry}}, {"__metadata__": entry}):
        raw = json.dumps(header).encode()
        _st_parse(struct.pack("<Q", len(raw)) + raw + data)


def test_safetensors_shape_overflow_is_refused():
    """numpy's int64 product of [2**32, 2**32] wraps to 0: it must not pass for an empty tensor."""
    raw = json.dumps({"t": {"dtype": "F32", "shape": [2**32, 2**32], "data_offsets": [0, 0]}}).encode()
    with pytest.raises(CorruptFile, match="does not fill"):
        sio.parse(struct.pack("<Q", len(raw)) + raw)


def test_safetensors_gigabyte_header_length_is_refused():
    for n in (2**40, sio.MAX_HEADER + 1):
        buf = struct.pack("<Q", n) + b"{" + b" " * 64
        with pytest.raises(CorruptFile):
            sio.parse(buf)


def test_safetensors_metadata_must_be_strings():
    raw = json.dumps({"__metadata__": ["x"]}).encode()
    with pytest.raises(CorruptFile, match="__metadata__"):
        sio.parse(struct.pack("<Q", len(raw)) + raw)


# --- CoNLL ------------------------------------------------------------------------------------------


@FUZZ
@given(st.text(alphabet=st.sampled_from(list("ab O B-PER I-LOC\t\n-DOCSTART- \x00é")), max_size=200),
       st.booleans())
def test_conll_text(text, tags):
    try:
        sentences = conll.parse(text, require_tags=tags)
    except InputError:
        return
    assert sentences and all(s.tokens and (not s.tags or len(s.tags) == len(s.tokens)) for s in sentences)


@FUZZ
@given(st.binary(max_size=300))
def test_conll_file_bytes(data):
    with tempfile.NamedTemporaryFile(suffix=".conll") as fh:
        fh.write(data)
        fh.flush()
        try:
            conll.read_file(fh.name)
        except InputError:
            pass


def test_conll_oversized_file_is_refused_before_reading(tmp_path):
    big = tmp_path / "big.conll"
    with big.open("wb") as fh:
        fh.truncate(conll.MAX_FILE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(InputError, match="limit"):
        assert _peak_mib(lambda: conll.read_file(big)) < 16


# --- safe names -------------------------------------------------------------------------------------


@FUZZ
@given(st.one_of(st.text(max_size=300), JSON))
def test_safe_name_is_one_plain_component(name):
    out = safe_name(name, "file.bin")
    assert out and out not in {".", ".."} and "/" not in out and "\\" not in out and "\0" not in out
    assert not out.startswith(".") and len(out) <= 120 and out.isascii()


def test_safe_name_examples():
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("..", "restored.safetensors") == "restored.safetensors"
    assert safe_name("C:\\Users\\x\\model.safetensors") == "model.safetensors"
    assert safe_name("my model (1).safetensors") == "my_model_1_.safetensors"
    assert safe_name("a" * 500, suffix=".lmhz").endswith(".lmhz")


# --- text container (LM-compressed text) -------------------------------------------------------------

TEXT_SMALL = lm_codec.CodecSettings(window=32, keep=12, lane_tokens=40, max_lanes=4, precision="fp32")


@pytest.fixture(scope="module")
def text_blob(tiny_gpt2) -> bytes:
    return lm_codec.compress(b"The cat sat on the mat, and the dog sat on the log.", tiny_gpt2, TEXT_SMALL).blob


def _repack(blob: bytes, **changes) -> bytes:
    header, payload = text_container.unpack(blob)
    header.update(changes)
    return text_container.pack({k: v for k, v in header.items() if not k.startswith("payload_")}, payload)


def _text_readers(blob: bytes, loaded) -> None:
    for read in (text_container.unpack, text_container.split_records,
                 lambda b: lm_codec.decompress(b, loaded)):
        try:
            read(blob)
        except LMLabError:
            pass


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 10**5), st.integers(0, 255)), min_size=1, max_size=4),
       st.one_of(st.none(), st.integers(0, 10**5)))
def test_text_container_byte_mutations(tiny_gpt2, text_blob, flips, cut):
    buf = bytearray(text_blob)
    for pos, byte in flips:
        buf[pos % len(buf)] = byte
    if cut is not None:
        del buf[cut % len(buf):]
    _text_readers(bytes(buf), tiny_gpt2)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["n_tokens", "n_bytes", "lanes", "lane_lengths", "prime", "window", "keep", "start_id", "threads",
                        "mode", "fingerprint", "sha256", "format"]), JSON)
def test_text_container_header_mutations(tiny_gpt2, text_blob, field, value):
    """A header field replaced by arbitrary JSON (payload checksum recomputed): a typed error or the exact text."""
    started = time.monotonic()
    try:
        out = lm_codec.decompress(_repack(text_blob, **{field: value}), tiny_gpt2)
    except LMLabError:
        pass
    else:
        assert out == b"The cat sat on the mat, and the dog sat on the log."
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("changes", [
    dict(n_tokens=2**40, lanes=1, lane_lengths=[2**40], n_bytes=2**41),  # consistent, but far more than the payload
    dict(n_tokens=10**6, lanes=1, lane_lengths=[10**6], n_bytes=100),  # more tokens than bytes
    dict(start_id=10**9), dict(window=0), dict(window=10**9), dict(keep=-1),
])
def test_text_header_declaring_huge_or_impossible_work_is_refused(tiny_gpt2, text_blob, changes):
    started = time.monotonic()
    with pytest.raises(CorruptFile):
        assert _peak_mib(lambda: lm_codec.decompress(_repack(text_blob, **changes), tiny_gpt2)) < 64
    assert time.monotonic() - started < 10


def test_text_lzma_bomb_is_bounded(tiny_gpt2, text_blob):
    import lzma

    bomb = lzma.compress(bytes(64 * 2**20), preset=9)  # 64 MiB of zeros in ~10 kB, the header says 51 bytes
    header, _ = text_container.unpack(text_blob)
    forged = text_container.pack({k: v for k, v in header.items() if not k.startswith("payload_")} | {"mode": "lzma"},
                                 bomb)
    with pytest.raises(CorruptFile, match="checksum"):
        assert _peak_mib(lambda: lm_codec.decompress(forged, tiny_gpt2)) < 16


def test_text_record_with_negative_size_does_not_loop(text_blob):
    header, payload = text_container.unpack(text_blob)
    raw = json.dumps(header | {"payload_bytes": -10**6}).encode()
    blob = text_container._PREFIX.pack(text_container.MAGIC, text_container.VERSION, len(raw)) + raw + payload
    done = []

    def split():
        try:
            text_container.split_records(blob + text_blob)
        except CorruptFile:
            done.append(True)

    import threading

    worker = threading.Thread(target=split, daemon=True)
    worker.start()
    worker.join(5)
    assert done, "split_records did not finish with a CorruptFile within 5 s"


@FUZZ
@given(st.binary(max_size=300))
def test_text_container_arbitrary_bytes(tail):
    for blob in (text_container.MAGIC + tail, tail):
        for read in (text_container.unpack, text_container.split_records):
            try:
                read(blob)
            except LMLabError:
                pass


def test_restored_text_name_is_plain(tiny_gpt2, text_blob, monkeypatch):
    monkeypatch.setattr(lm_codec.registry, "load_causal_lm", lambda key, device=None: tiny_gpt2)
    data, path, _ = text_compare.decompress_file(text_blob, "../../../etc/cron.d/evil.lmlt")
    assert path.parent.parent == handout.root() and path.name == "evil.txt" and path.read_bytes() == data

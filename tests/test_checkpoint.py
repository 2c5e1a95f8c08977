"""Checkpoint codec: bit-exact round-trips, the container's defences, the CLI."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save

from models.compression.checkpoint import analysis as ca
from models.compression.checkpoint import codec as checkpoint
from models.compression.checkpoint import container, planes
from models.compression.checkpoint.fast import plane_kernels as unrolled
from models.core import assets
from models.core.errors import CorruptFile

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
SPECIAL = [float("nan"), float("inf"), float("-inf"), -0.0, 0.0, 1e-40, -1e-45, 6e-8, 1e-310, 3.0e38]


def _tensor(rng, dtype, shape, scale):
    values = torch.from_numpy(rng.normal(0, scale, size=shape)).to(dtype)
    if values.numel():
        flat = values.view(-1)
        picks = rng.integers(0, flat.numel(), size=min(flat.numel(), 12))
        flat[picks] = torch.tensor([SPECIAL[i % len(SPECIAL)] for i in range(len(picks))], dtype=torch.float64).to(dtype)
    return values


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31), st.lists(st.tuples(st.sampled_from(range(len(DTYPES))),
                                                 st.sampled_from([(), (0,), (1,), (3, 0), (17,), (64, 33), (300000,)]),
                                                 st.sampled_from([1e-3, 0.05, 1.0, 1e4])), min_size=1, max_size=5))
def test_roundtrip_random_tensors(seed, specs):
    rng = np.random.default_rng(seed)
    tensors = {f"t{i}": _tensor(rng, DTYPES[d], shape, scale) for i, (d, shape, scale) in enumerate(specs)}
    tensors["ids"] = torch.arange(50, dtype=torch.int64)
    tensors["mask"] = torch.from_numpy(rng.random(40) > 0.5)
    data = save(tensors, metadata={"format": "pt"})
    blob, report = checkpoint.compress(data, "random.safetensors", chunk=1 << 12, block=1 << 9)
    assert checkpoint.decompress(blob) == data  # byte-identical file
    back = checkpoint.decompress_tensors(blob)
    for name, t in tensors.items():
        raw = t.view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.numpy()
        assert back[name].tobytes() == raw.tobytes() and back[name].shape == tuple(t.shape)
    assert report.coded_bytes == len(blob)


def test_compressible_planes_are_coded_and_gaps_kept():
    rng = np.random.default_rng(0)
    w = torch.from_numpy(rng.normal(0, 0.02, size=(512, 512)).astype(np.float32)).to(torch.bfloat16)
    data = bytearray(save({"w": w}))
    # a data section with a gap before the tensor and trailing bytes after it
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header["w"]["data_offsets"] = [5, 5 + w.numel() * 2]
    head = json.dumps(header).encode()
    body = bytes(data[8 + n:])
    gapped = struct.pack("<Q", len(head)) + head + b"GAP!!" + body + b"TAIL"
    blob, report = checkpoint.compress(gapped, "gapped.safetensors")
    assert checkpoint.decompress(blob) == gapped
    row = report.rows[0]
    assert row.modes.split("/")[1] in {"chunked", "shared"}  # the exponent plane was Huffman-coded
    assert 0.6 < report.ratio < 0.72
    assert 2.0 < row.exponent_entropy < 3.5


def test_upcast_weights_store_their_zero_bytes_once():
    rng = np.random.default_rng(1)
    w = torch.from_numpy(rng.normal(0, 0.02, size=(300, 500)).astype(np.float32)).to(torch.bfloat16).float()
    data = save({"w": w})
    blob, report = checkpoint.compress(data, chunk=4096)
    assert checkpoint.decompress(blob) == data
    # a bf16 value upcast to fp32: sign (1 bit) + 7 mantissa bits + ~2.7 exponent bits of 32, zero bytes ~free
    assert report.ratio < 0.40


def _exponent_plane(n: int, seed: int = 5) -> np.ndarray:
    """The exponent bytes (top byte after rotl1) of n bf16 weights drawn like a trained layer's."""
    rng = np.random.default_rng(seed)
    v = torch.from_numpy(rng.normal(0, 0.02, size=n).astype(np.float32)).to(torch.bfloat16).view(torch.int16)
    bits = v.numpy().view(np.uint16).astype(np.uint32)
    return (((bits << 1) | (bits >> 15)) >> 8).astype(np.uint8)


def _records(segment: bytes):
    """The codec byte of each chunk record in a chunked plane segment."""
    out, pos = [], 0
    while pos < len(segment):
        codec, _, size = container.CHUNK_RECORD.unpack_from(segment, pos)
        out.append(codec)
        pos += container.CHUNK_RECORD.size + size
    return out


def test_pair_codes_come_within_one_percent_of_the_entropy():
    plane = _exponent_plane(2 * checkpoint.CHUNK + 2 * checkpoint.BLOCK + 1)  # odd: the last byte pairs with itself
    res = checkpoint.encode_plane(plane, "exponent")
    assert res.entry["mode"] == "chunked" and set(_records(res.segment)) == {container.PAIRS}
    back = checkpoint.decode_plane(memoryview(res.segment), res.entry, checkpoint.BLOCK, "plane")
    assert back.tobytes() == plane.tobytes()
    pairs = checkpoint.plan_plane(plane, planes.plane_params(1, False, 0), "exponent")
    assert pairs.huff_bits < 1.01 * pairs.huff_entropy_bits  # the order-0 entropy of the pairs it codes
    assert pairs.huff_bits < 1.01 * pairs.huff_byte_entropy_bits  # and of the single bytes
    # the same plane coded byte by byte (an odd chunk size turns pairs off) is >1 % above its entropy
    single = checkpoint.plan_plane(plane, planes.plane_params(1, False, 0), "exponent", chunk=checkpoint.CHUNK - 1)
    assert single.huff_bits > 1.01 * single.huff_entropy_bits
    assert pairs.size < single.size


def test_version_2_files_still_decode():
    """Version 3 only added pair-coded chunks: a file without them, labelled version 2, reads the same."""
    rng = np.random.default_rng(8)
    data = save({"w": torch.from_numpy(rng.normal(0, 0.02, size=(300, 200)).astype(np.float32)).to(torch.bfloat16)})
    blob = bytearray(checkpoint.compress(data, chunk=checkpoint.CHUNK - 1)[0])  # an odd chunk: no pairs
    struct.pack_into("<H", blob, 8, 2)
    assert checkpoint.decompress(bytes(blob)) == data


def _pair_chunk(seg: bytearray) -> tuple[int, int]:
    """(start of the first chunk's body, its alphabet size u) of a PAIRS segment."""
    assert seg[0] == container.PAIRS
    body = container.CHUNK_RECORD.size
    u = sum(bin(b).count("1") for b in seg[body:body + 32])
    return body, u


@pytest.mark.parametrize("damage", ["all bytes present", "lengths not a code", "table cut short", "shared table mode"])
def test_corrupt_pair_tables_are_refused(damage):
    plane = _exponent_plane(3 * checkpoint.BLOCK)
    res = checkpoint.encode_plane(plane, "exponent")
    seg, entry = bytearray(res.segment), dict(res.entry)
    body, u = _pair_chunk(seg)
    if damage == "all bytes present":  # 256 used bytes: more than a pair table may hold
        seg[body:body + 32] = b"\xff" * 32
    elif damage == "lengths not a code":  # every pair 1 bit long: the Kraft sum far above 1
        seg[body + 32:body + 32 + (u * u + 1) // 2] = b"\x11" * ((u * u + 1) // 2)
    elif damage == "table cut short":
        size = container.CHUNK_RECORD.size
        struct.pack_into("<I", seg, 5, 40)  # the body claims 40 bytes: the map and 8 of the nibbles
        seg = seg[:size + 40]
    else:  # a shared plane's chunks must not bring their own (pair) tables
        entry.update(mode="shared", table="11" * 128)
    with pytest.raises(CorruptFile, match="Huffman table"):
        checkpoint.decode_plane(memoryview(bytes(seg)), entry, checkpoint.BLOCK, "plane")


def test_a_write_run_never_writes_past_its_end():
    """Runs of tensors are written by different threads at once: the bit writer's 8-byte stores must
    stop short of a chunk's end, or they would overwrite the start of the next run."""
    rng = np.random.default_rng(4)
    w = torch.from_numpy(rng.normal(0, 0.02, size=40_000).astype(np.float32)).to(torch.bfloat16)
    st = checkpoint.sio.parse(save({"w": w}))
    v, plans, z = checkpoint._plan_tensor(st, st.tensors[0], checkpoint.CHUNK, checkpoint.BLOCK)
    assert z is None and plans[-1].entry["mode"] != "raw"  # the exponent plane is coded
    size = sum(p.size for p in plans)
    out = np.full(size + 64, 0xAB, np.uint8)
    crcs = checkpoint._write_run([(v, plans, None, 16)], out, memoryview(out), checkpoint.CHUNK, checkpoint.BLOCK)
    assert (out[:16] == 0xAB).all() and (out[16 + size:] == 0xAB).all()
    assert crcs == [[container.crc32(out[16:16 + plans[0].size].tobytes()),
                     container.crc32(out[16 + plans[0].size:16 + size].tobytes())]]


def test_barely_compressible_chunks_stay_raw():
    rng = np.random.default_rng(6)
    p = np.linspace(1.0, 1.6, 256)
    plane = rng.choice(256, size=3 * checkpoint.CHUNK, p=p / p.sum()).astype(np.uint8)  # saves ~1 %: not worth it
    res = checkpoint.encode_plane(plane, "mantissa")
    assert res.entry["mode"] == "raw" and len(res.segment) == len(plane)
    skewed = np.where(rng.random(len(plane)) < 0.5, 0, plane).astype(np.uint8)  # saves ~40 %: coded
    assert len(checkpoint.encode_plane(skewed, "mantissa").segment) < 0.7 * len(plane)



@pytest.mark.parametrize("kernels", [planes, unrolled])
@pytest.mark.parametrize("n, values, low", [(385, 256, 0), (385, 12, 0), (3 * 1024 + 1, 256, 0), (4096, 70, 0),
                                            (2 * 1024 + 3, 40, 100), (1025, 2, 127)])
def test_pair_stats_byte_histograms(kernels, n, values, low):
    """Both kernels count the plain histogram per chunk, odd chunk ends included (the unrolled one folds it
    from the pair counts where the chunk's byte range is narrow), and try pairs only on small alphabets."""
    rng = np.random.default_rng(n + values)
    plane = (low + rng.integers(0, values, n)).astype(np.uint8)
    chunk = 1024
    k = (n + chunk - 1) // chunk
    hists, used, *_ = kernels.pair_stats(plane, chunk, 14, np.ones(k, np.uint8))
    for ci in range(k):
        assert (hists[ci] == np.bincount(plane[ci * chunk:(ci + 1) * chunk], minlength=256)).all()
    assert (used > 0).any() == (values <= planes.PAIR_MAX_USED)


@pytest.mark.parametrize("chunk, block", [(checkpoint.CHUNK, checkpoint.BLOCK), (4096, 512), (4095, 512)])
def test_plain_and_unrolled_kernels_write_the_same_file(chunk, block, monkeypatch):
    """The unrolled kernels are a fast path only: both write the same bytes and read each other's files."""
    rng = np.random.default_rng(chunk)
    tensors = {"bf16": _tensor(rng, torch.bfloat16, (300, 257), 0.02), "f32": _tensor(rng, torch.float32, (70000,), 0.05),
               "f16": _tensor(rng, torch.float16, (513, 129), 1.0), "f64": _tensor(rng, torch.float64, (999,), 1e4),
               "upcast": torch.from_numpy(rng.normal(0, 0.02, size=(300, 500))).to(torch.bfloat16).float(),
               "ids": torch.arange(50, dtype=torch.int64)}
    data = save(tensors)
    blobs = []
    for fast in (False, True):
        monkeypatch.setattr(checkpoint, "FAST", fast)
        blobs.append(bytes(checkpoint.compress(data, chunk=chunk, block=block)[0]))
    assert blobs[0] == blobs[1]
    for fast in (False, True):
        monkeypatch.setattr(checkpoint, "FAST", fast)
        assert checkpoint.decompress(blobs[0]) == data

OLD_FILES = Path(__file__).parent / "data" / "lmhz"


@pytest.mark.parametrize("fast", [False, True])
def test_a_file_written_before_the_plain_kernels_decodes_and_is_written_again_the_same(fast, monkeypatch):
    """tests/data/lmhz/v3_chunk16384.lmhz was written once by the codec as it stood before its plain
    kernels (pair, constant and shared-table chunks, raw planes, a zstd tensor; chunk 16384, block 1024)
    from old_weights.safetensors. Never regenerate it: it stands for the files users keep."""
    monkeypatch.setattr(checkpoint, "FAST", fast)
    original = (OLD_FILES / "old_weights.safetensors").read_bytes()
    blob = (OLD_FILES / "v3_chunk16384.lmhz").read_bytes()
    assert checkpoint.decompress(blob) == original
    assert bytes(checkpoint.compress(original, "old_weights.safetensors", chunk=16384, block=1024)[0]) == blob


@pytest.mark.slow
def test_minilm_byte_identical_and_beats_zstd(tmp_path):
    src = assets.path("all-minilm-l6-v2") / "model.safetensors"
    data = src.read_bytes()
    blob, report = checkpoint.compress(data, src.name)
    assert checkpoint.decompress(blob) == data
    assert report.ratio < 0.83  # fp32: about 0.819 (zstd -3 gives 0.915)
    assert report.huffman_overhead < 0.02


# --- bad input ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_blob():
    rng = np.random.default_rng(3)
    data = save({"a": torch.from_numpy(rng.normal(0, 0.1, size=(256, 64)).astype(np.float32)),
                 "b": torch.from_numpy(rng.normal(0, 1, size=(1000,)).astype(np.float16))})
    return data, checkpoint.compress(data, "small.safetensors", chunk=4096)[0]


@pytest.mark.parametrize("data, message", [
    (b"", "not a safetensors checkpoint"),
    (b"hello world, this is text", "header length"),
    (struct.pack("<Q", 10) + b"not json!!", "not JSON"),
    (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
])
def test_not_safetensors(data, message):
    with pytest.raises(CorruptFile, match=message):
        checkpoint.compress(data)


def test_truncated_safetensors(small_blob):
    data, _ = small_blob
    with pytest.raises(CorruptFile, match="truncated"):
        checkpoint.compress(data[:-100])


def test_wrong_magic_version_and_truncation(small_blob):
    _, blob = small_blob
    with pytest.raises(CorruptFile, match="wrong magic"):
        checkpoint.decompress(b"PK\x03\x04" + blob[4:])
    with pytest.raises(CorruptFile, match="version 7"):
        checkpoint.decompress(bytes(blob[:8]) + struct.pack("<H", 7) + blob[10:])
    with pytest.raises(CorruptFile, match="truncated|CRC32"):
        checkpoint.decompress(blob[: len(blob) - 50])
    with pytest.raises(CorruptFile):
        checkpoint.decompress(blob[:12])


@pytest.mark.parametrize("where", [0.02, 0.5, 0.99])
def test_flipped_bit_is_caught(small_blob, where):
    _, blob = small_blob
    bad = bytearray(blob)
    pos = int(len(bad) * where)
    bad[pos] ^= 0x10
    with pytest.raises(CorruptFile, match="CRC32|sha256|corrupt"):
        checkpoint.decompress(bytes(bad))


@pytest.mark.parametrize("which", [0, -1])  # tensors decode in two runs: this thread's and a pool thread's
def test_sha256_catches_what_crc_cannot(small_blob, which):
    data, _ = small_blob
    blob, _ = checkpoint.compress(data)
    header, payload = container.unpack(blob)
    header["tensors"][which]["sha256"] = "0" * 64  # a consistent container that decodes to other bytes
    forged = container.pack(header, [bytes(payload)])
    with pytest.raises(CorruptFile, match="sha256"):
        checkpoint.decompress(forged)
    assert checkpoint.decompress(forged, check=False) == data


@pytest.mark.parametrize("which", [0, -1])
def test_a_bad_tensor_in_either_decode_run_is_named(small_blob, which):
    """A chunk record with an unknown codec (its CRC32 made to match) fails inside the decoder, on
    whichever thread decodes that tensor, and the error names the tensor."""
    data, _ = small_blob
    header, payload = container.unpack(checkpoint.compress(data)[0])
    payload = bytearray(payload)
    plane = header["tensors"][which]["planes"][-1]  # the exponent plane: chunk records
    assert plane["mode"] != "raw"
    at = plane["offset"]  # offsets count from the start of the payload
    payload[at] = 7
    plane["crc32"] = container.crc32(bytes(payload[at:at + plane["size"]]))
    name = header["tensors"][which]["name"]
    with pytest.raises(CorruptFile, match=f"tensor '{name}'.*unknown codec"):
        checkpoint.decompress(container.pack(header, [bytes(payload)]), check=False)


def test_hostile_layouts_are_refused(small_blob):
    data, _ = small_blob
    blob, _ = checkpoint.compress(data, chunk=4096)
    header, payload = container.unpack(blob)
    for field, value, message in [("chunk", 0, "malformed"), ("chunk", 2**40, "malformed")]:
        bad = json.loads(json.dumps(header))
        bad[field] = value
        with pytest.raises(CorruptFile, match=message):
            checkpoint.decompress(container.pack(bad, [bytes(payload)]))
    bad = json.loads(json.dumps(header))  # chunk records no longer line up with the declared chunk size
    bad["chunk"] = 1000
    with pytest.raises(CorruptFile, match="chunk"):
        checkpoint.decompress(container.pack(bad, [bytes(payload)]))
    bad = json.loads(json.dumps(header))  # two tensors claiming the same bytes: the file is not tiled
    a, b = bad["tensors"][:2]
    b["start"], b["end"] = a["start"], a["start"] + (b["end"] - b["start"])
    with pytest.raises(CorruptFile):
        checkpoint.decompress(container.pack(bad, [bytes(payload)]))


def test_failed_decompress_leaves_no_file(small_blob, tmp_path):
    _, blob = small_blob
    bad = bytearray(blob)
    bad[-10] ^= 1
    src = tmp_path / "bad.lmhz"
    src.write_bytes(bytes(bad))
    out = tmp_path / "out.safetensors"
    with pytest.raises(CorruptFile):
        ca.decompress_file(src, out)
    assert not out.exists() and list(tmp_path.iterdir()) == [src]


def test_torch_bin_loads_weights_only(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(4, 4), "b": torch.zeros(4)}, path)
    out, report = ca.compress_file(path, tmp_path / "m.lmhz")
    tensors = checkpoint.decompress_tensors(out.read_bytes())
    assert tensors["w"].sum() == 16 and tensors["b"].shape == (4,) and report.raw_bytes > 0
    evil = tmp_path / "evil.bin"
    evil.write_bytes(b"not a pickle at all")
    with pytest.raises(CorruptFile, match="loads safely"):
        ca.compress_file(evil, tmp_path / "e.lmhz")
    assert not (tmp_path / "e.lmhz").exists()


# --- CLI --------------------------------------------------------------------------------------------


def _cli(*args, home):
    return subprocess.run([sys.executable, "-m", "models.compression", *map(str, args)], capture_output=True, text=True,
                          env={"LMLAB_HOME": str(home), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
                          cwd=Path(__file__).resolve().parent.parent, timeout=300)


def test_cli_compress_verify_decompress_inspect(small_blob, tmp_path):
    data, _ = small_blob
    src = tmp_path / "small.safetensors"
    src.write_bytes(data)
    res = _cli("compress", src, "-o", tmp_path / "s.lmhz", home=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "round-trip verified" in res.stdout
    res = _cli("verify", tmp_path / "s.lmhz", "--original", src, home=tmp_path)
    assert res.returncode == 0 and "identical" in res.stdout, res.stderr
    res = _cli("decompress", tmp_path / "s.lmhz", "-o", tmp_path / "back.safetensors", home=tmp_path)
    assert res.returncode == 0 and (tmp_path / "back.safetensors").read_bytes() == data
    res = _cli("inspect", tmp_path / "s.lmhz", "--json", home=tmp_path)
    info = json.loads(res.stdout)
    assert {t["name"] for t in info["tensors"]} == {"a", "b"}
    res = _cli("inspect", src, home=tmp_path)
    assert "entropy H" in res.stdout and "Kraft sum 1" in res.stdout
    (tmp_path / "junk.lmhz").write_bytes(b"junk" * 10)
    res = _cli("verify", tmp_path / "junk.lmhz", home=tmp_path)
    assert res.returncode == 2 and "wrong magic" in res.stderr

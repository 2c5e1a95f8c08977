"""The checkpoint codec gives the same bytes whatever the process state: a cold or warm JIT cache,
first call or later, and whatever still holds a view of its buffers when it finishes."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

from models.compression.checkpoint import codec as checkpoint

ROOT = Path(__file__).resolve().parent.parent

# every dtype the safetensors format defines that LM Lab reads, with the numpy type of its elements
ALL_DTYPES = {"F8_E4M3": "u1", "F8_E5M2": "u1", "BOOL": "u1", "U8": "u1", "I8": "i1", "I16": "<i2", "I32": "<i4",
              "I64": "<i8", "F64": "<f8", "F16": "<f2", "BF16": "<u2", "F32": "<f4"}


def _safetensors(tensors: dict[str, tuple[str, tuple[int, ...], bytes]]) -> bytes:
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(blobs)


def _values(rng, dtype: str, n: int) -> bytes:
    if dtype in ("F64", "F32", "F16"):
        return rng.normal(0, 0.05, n).astype(ALL_DTYPES[dtype]).tobytes()
    if dtype == "BF16":
        return (rng.normal(0, 0.05, n).astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
    if dtype == "BOOL":
        return (rng.random(n) < 0.2).astype(np.uint8).tobytes()
    if dtype.startswith("F8"):
        return (rng.integers(0, 24, n) + 0x28).astype(np.uint8).tobytes()
    return rng.integers(-3, 9 if dtype != "U8" else 40, n).astype(ALL_DTYPES[dtype]).tobytes()


def every_dtype_file(seed: int = 0) -> bytes:
    """One tensor of each dtype in three sizes (empty, a few values, a few thousand), two BF16 more."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for dtype in ALL_DTYPES:
        for label, shape in (("empty", (0, 3)), ("small", (3,)), ("big", (40, 97))):
            tensors[f"{dtype.lower()}.{label}"] = (dtype, shape, _values(rng, dtype, int(np.prod(shape))))
    tensors["extra.bf16.a"] = ("BF16", (64, 64), _values(rng, "BF16", 64 * 64))
    tensors["extra.bf16.b"] = ("BF16", (5,), _values(rng, "BF16", 5))
    return _safetensors(tensors)


def test_every_dtype_round_trips_in_process():
    data = every_dtype_file(1)
    blob, report = checkpoint.compress(data, "every.safetensors", chunk=1024, block=256)
    assert checkpoint.decompress(blob) == data
    assert {r.dtype for r in report.rows} == set(ALL_DTYPES)


def test_a_view_still_held_when_the_output_is_finished(monkeypatch):
    """Something outside the codec (a JIT compile's traceback, a pool thread's frame) may hold a view of
    the output buffer until the garbage collector runs; the result must not depend on it."""
    held = []
    original = checkpoint._write_run

    def holding(run, out, view, chunk, block):
        held.append((out, view[:1]))  # as a frame kept alive by a reference cycle would
        return original(run, out, view, chunk, block)

    monkeypatch.setattr(checkpoint, "_write_run", holding)
    data = every_dtype_file(2)
    blob, _ = checkpoint.compress(data, "held.safetensors")
    assert held and checkpoint.decompress(blob) == data
    back = checkpoint.decompress(blob)
    held.append(np.frombuffer(back, np.uint8))  # a view of the restored file does not spoil a second call
    assert checkpoint.decompress(blob) == back == data


def _float_file(seed: int, dtypes: tuple[str, ...]) -> bytes:
    rng = np.random.default_rng(seed)
    return _safetensors({f"w{i}": (d, (33, 31), _values(rng, d, 33 * 31)) for i, d in enumerate(dtypes)})


def test_cold_jit_cache_cli_every_dtype_three_times(tmp_path):
    """A fresh process with an empty numba cache, the CLI, every dtype: byte-exact three times over.

    As the fault was first seen: two small float files first (they compile and cache some kernels),
    then the file with every dtype compiles the rest while the output buffer is being written.
    """
    cache = tmp_path / "numba-cache"
    cache.mkdir()
    env = {"LMLAB_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
           "NUMBA_CACHE_DIR": str(cache)}
    files = [_float_file(1, ("F32",)), _float_file(2, ("BF16", "F16"))] + [every_dtype_file(10 + k) for k in range(3)]
    for k, data in enumerate(files):
        src, packed, back = (tmp_path / f"f{k}.safetensors", tmp_path / f"f{k}.lmhz", tmp_path / f"back{k}.safetensors")
        src.write_bytes(data)
        for args in (["compress", src, "-o", packed], ["decompress", packed, "-o", back]):
            res = subprocess.run([sys.executable, "-m", "models.compression", *map(str, args), "-q"], env=env, cwd=ROOT,
                                 capture_output=True, text=True, timeout=900)
            assert res.returncode == 0 and "Traceback" not in res.stderr, f"file {k}, {args[0]}: {res.stderr[-3000:]}"
        assert back.read_bytes() == data, f"file {k} did not come back byte for byte"
    assert any(cache.rglob("*.nbi")), "the kernels were not cached: the later rounds did not test a warm cache"

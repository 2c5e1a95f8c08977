"""Checkpoint codec, plain kernels against the unrolled ones, vs zstd -3 and zipnn, on the embedded checkpoints.

For each checkpoint (MiniLM fp32, SmolLM2-135M fp32) and dtype (bf16, fp32, fp16), the same
safetensors bytes go through each codec in the same run, the codecs taking turns within each rep
(A B A B ..., the order rotated from rep to rep) so that machine load and clock drift reach them all
alike. This codec runs twice, with its plain kernels (``planes.py``, the default) and with the
unrolled ones (``fast/plane_kernels.py``, ``codec.FAST``); both must write the same file. Sizes are
fractions of the file, speeds MB/s of the file from the median time of the reps (a small file gets
more reps, up to 30, so that each side reads about 1 GB). Every decompression is compared with the
input. zstd and zipnn run single-threaded; this codec uses two pool threads on a two-core machine
(three on more): one computes the sha256 of the file and of each tensor while the other plans the
tensors, then both write the payload; decompression decodes two runs of tensors side by side. Its
decompression is timed with the CRC32 checks ("d") and with every sha256 checked as well ("+sha256").
Also reported: the order-0 exponent bound (file size if the exponent plane took exactly its
global order-0 entropy and every other byte stayed raw) and how far the Huffman coder is above
the chunk-local order-0 entropy of the symbols it coded (bytes, or byte pairs where a chunk codes
pairs) and above that of the single bytes.

    python -m benchmarks.checkpoint_codec [--reps R (7)] [--only minilm|smollm]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import zstandard

from models.compression import huffman
from models.compression.checkpoint import codec as checkpoint
from models.compression.checkpoint import safetensors_io as sio
from models.core import assets

OUT = Path(__file__).resolve().parent / "results" / "checkpoint_codec.json"
CHECKPOINTS = {"minilm": ("all-minilm-l6-v2", "model.safetensors"),
               "smollm": ("smollm2-135m-instruct", "model/model.safetensors")}
ZIPNN_DTYPE = {"BF16": "bfloat16", "F32": "float32", "F16": "float16"}


class _Side:
    """One codec under test: ``compress(data)`` and ``decompress(blob)``, timed by the caller."""

    def __init__(self, name: str, compress, decompress, fresh_input: bool = False, blob_of: str | None = None) -> None:
        self.name, self.compress, self.decompress, self.fresh_input = name, compress, decompress, fresh_input
        self.blob_of = blob_of  # a side that only decompresses: whose blob it reads
        self.tc: list[float] = []
        self.td: list[float] = []
        self.blob = self.back = None


def _ours(fast: bool):
    """compress, decompress and checked decompress with the plain (False) or unrolled (True) kernels."""
    def run(fn, *args, **kwargs):
        checkpoint.FAST = fast
        try:
            return fn(*args, **kwargs)
        finally:
            checkpoint.FAST = None
    return (lambda b: run(checkpoint.compress, b)[0], lambda b: run(checkpoint.decompress, b, check=False),
            lambda b: run(checkpoint.decompress, b, check=True))


def _sides(data: bytes, dtype: str) -> list[_Side]:
    c = zstandard.ZstdCompressor(level=3, threads=0)
    d = zstandard.ZstdDecompressor()
    sides = [_Side("zstd3", c.compress, d.decompress)]
    try:
        from zipnn import ZipNN
    except ImportError:
        ZipNN = None
    if ZipNN is not None:
        z = ZipNN(method="HUFFMAN", input_format="byte", bytearray_dtype=ZIPNN_DTYPE[dtype], threads=1)
        # zipnn rearranges its input buffer in place: each run gets its own copy (copy time not counted)
        sides.append(_Side("zipnn", z.compress, z.decompress, fresh_input=True))
    for name, fast in (("plain", False), ("unrolled", True)):
        comp, decomp, checked = _ours(fast)
        sides += [_Side(name, comp, decomp), _Side(name + "_checked", None, checked, blob_of=name)]
    return sides


def _timed(fn, arg) -> tuple[object, float]:
    started = time.perf_counter()
    out = fn(arg)
    return out, time.perf_counter() - started


def _measure(data: bytes, dtype: str, reps: int) -> dict[str, _Side]:
    """``reps`` times for every side, the sides taking turns within each rep so that the machine's
    drift (other load, clock) reaches them all alike, in an order rotated from rep to rep so that
    none always runs right after another (whose memory traffic leaves the caches in its own state)."""
    sides = _sides(data, dtype)
    by_name = {s.name: s for s in sides}
    for side in sides:  # the first calls load the compiled kernels
        if side.compress is not None and side.name in ("plain", "unrolled"):
            side.decompress(side.compress(data))
    for r in range(reps):
        for side in sides[r % len(sides):] + sides[:r % len(sides)]:
            if side.compress is not None:
                side.blob, t = _timed(side.compress, bytearray(data) if side.fresh_input else data)
                side.tc.append(t)
    for side in sides:
        if side.blob_of:
            side.blob = by_name[side.blob_of].blob
    for r in range(reps):
        for side in sides[r % len(sides):] + sides[:r % len(sides)]:
            side.back, t = _timed(side.decompress, side.blob)
            side.td.append(t)
    return by_name


def _exponent_bound(st: sio.Safetensors, report: checkpoint.Report) -> float:
    """File size with the exponent plane at its global order-0 entropy and all else raw."""
    saved = 0.0
    for hist in report.exponent_hist.values():
        n = int(hist.sum())
        saved += n * (8 - huffman.entropy_bits(hist)) / 8
    return (st.size - saved) / st.size


def reps_for(size: int, reps: int) -> int:
    """At least ``reps``, and enough to read about 1 GB (at most 30)."""
    return max(reps, min(30, math.ceil(1e9 / max(1, size))))


def run(reps: int, only: str | None) -> dict:
    rows = []
    for key, (asset, rel) in CHECKPOINTS.items():
        if only and key != only:
            continue
        src = assets.path(asset) / rel
        original = src.read_bytes()
        base = sio.parse(original, src.name)
        stored = {t.dtype for t in base.tensors if t.dtype in sio.FLOATS}
        for dtype in ("BF16", "F32", "F16"):
            data = original if stored == {dtype} else sio.cast(base, dtype)
            st = sio.parse(data)
            mb = len(data) / 1e6
            r = {"checkpoint": key, "dtype": dtype, "bytes": len(data),
                 "values": sum(t.numel for t in st.tensors if t.dtype in sio.FLOATS)}
            r["reps"] = n = reps_for(len(data), reps)
            m = _measure(data, dtype, n)
            for name in ("zstd3", "zipnn", "plain", "unrolled"):
                if name in m:
                    side = m[name]
                    r[name] = dict(ratio=len(side.blob) / len(data), c_mbs=mb / statistics.median(side.tc),
                                   d_mbs=mb / statistics.median(side.td), ok=bytes(side.back) == data)
            for name in ("plain", "unrolled"):
                checked = m[name + "_checked"]
                r[name].update(dv_mbs=mb / statistics.median(checked.td), ok=r[name]["ok"] and checked.back == data)
            r["same_file"] = bytes(m["plain"].blob) == bytes(m["unrolled"].blob)
            report = checkpoint.compress(data)[1]
            r["plain"].update(huff_bits=report.huff_bits, huff_entropy_bits=report.huff_entropy_bits,
                              huff_byte_entropy_bits=report.huff_byte_entropy_bits,
                              huffman_overhead=report.huffman_overhead,
                              huffman_overhead_bytes=report.huffman_overhead_bytes)
            r["exponent_bound"] = _exponent_bound(st, report)
            rows.append(r)
            print(_row(r), flush=True)
    return {"python": platform.python_version(), "machine": platform.machine(), "reps": reps, "statistic": "median",
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "rows": rows}


HEAD = ("| checkpoint | dtype | MB | reps | zstd -3 ratio, c/d MB/s | zipnn 0.5.4 ratio, c/d MB/s | this codec ratio | "
        "plain c/d (+sha256 d) MB/s | unrolled c/d (+sha256 d) MB/s | unrolled gain c / d | order-0 exponent bound | "
        "Huffman bits vs entropy of coded symbols / of bytes | same file, all verified |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def _cell(m: dict | None) -> str:
    return "-" if not m else f"{m['ratio']:.4f}, {m['c_mbs']:.0f}/{m['d_mbs']:.0f}"


def _speeds(m: dict) -> str:
    return f"{m['c_mbs']:.0f}/{m['d_mbs']:.0f} ({m['dv_mbs']:.0f})"


def _row(r: dict) -> str:
    p, u = r["plain"], r["unrolled"]
    ok = r["same_file"] and all(r[k]["ok"] for k in ("zstd3", "zipnn", "plain", "unrolled") if k in r)
    return (f"| {r['checkpoint']} | {r['dtype']} | {r['bytes'] / 1e6:.1f} | {r['reps']} | {_cell(r['zstd3'])} | "
            f"{_cell(r.get('zipnn'))} | **{p['ratio']:.4f}** | {_speeds(p)} | {_speeds(u)} | "
            f"{u['c_mbs'] / p['c_mbs']:.2f}x / {u['d_mbs'] / p['d_mbs']:.2f}x | {r['exponent_bound']:.4f} | "
            f"+{p['huffman_overhead']:.2%} / +{p['huffman_overhead_bytes']:.2%} | {'yes' if ok else 'NO'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--only", choices=list(CHECKPOINTS))
    args = parser.parse_args()
    print(HEAD)
    result = run(args.reps, args.only)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    if args.only and OUT.exists():  # keep the other checkpoint's rows from an earlier run
        old = json.loads(OUT.read_text())
        result["rows"] = [r for r in old.get("rows", []) if r["checkpoint"] != args.only] + result["rows"]
    OUT.write_text(json.dumps(result, indent=2, default=float))
    print("\n" + HEAD)
    for r in result["rows"]:
        print(_row(r))


if __name__ == "__main__":
    main()

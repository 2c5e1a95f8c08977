"""Checkpoint codec vs zstd -3 and zipnn on the embedded checkpoints, as stored and cast.

For each checkpoint (MiniLM fp32, SmolLM2-135M fp32) and dtype (bf16, fp32, fp16), the same
safetensors bytes go through each codec in the same run, alternating sides rep by rep so machine
load hits all alike; sizes are fractions of the file, speeds MB/s of the file (best of the reps).
Every decompression is compared with the input. zstd and zipnn run single-threaded; this codec
codes on one thread while a second hashes the file (sha256); its decompression is timed with the
CRC32 checks ("decomp") and with every sha256 checked as well ("+sha256").
Also reported: the order-0 exponent bound (file size if the exponent plane took exactly its
global order-0 entropy and every other byte stayed raw) and how far the Huffman coder is above
the chunk-local order-0 entropy of the symbols it coded (bytes, or byte pairs where a chunk codes
pairs) and above that of the single bytes.

    python -m benchmarks.checkpoint_codec [--reps R] [--only minilm|smollm]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import zstandard

from models import assets
from models.compression import checkpoint, huffman
from models.compression import safetensors_io as sio

OUT = Path(__file__).resolve().parent / "results" / "checkpoint_codec.json"
CHECKPOINTS = {"minilm": ("all-minilm-l6-v2", "model.safetensors"),
               "smollm": ("smollm2-135m-instruct", "model/model.safetensors")}
ZIPNN_DTYPE = {"BF16": "bfloat16", "F32": "float32", "F16": "float16"}


def _best(fn, reps: int):
    best, out = float("inf"), None
    for _ in range(reps):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
    return out, best


def _zstd(data: bytes, reps: int):
    c = zstandard.ZstdCompressor(level=3, threads=0)
    d = zstandard.ZstdDecompressor()
    blob, tc = _best(lambda: c.compress(data), reps)
    back, td = _best(lambda: d.decompress(blob), reps)
    return len(blob), tc, td, back == data


def _zipnn(data: bytes, dtype: str, reps: int):
    try:
        from zipnn import ZipNN
    except ImportError:
        return None
    z = ZipNN(method="HUFFMAN", input_format="byte", bytearray_dtype=ZIPNN_DTYPE[dtype], threads=1)
    # zipnn rearranges its input buffer in place: each run gets its own copy (copy time not counted)
    times, blob = [], b""
    for _ in range(reps):
        copy = bytearray(data)
        started = time.perf_counter()
        blob = z.compress(copy)
        times.append(time.perf_counter() - started)
    back, td = _best(lambda: z.decompress(blob), reps)
    return len(blob), min(times), td, bytes(back) == data


def _ours(data: bytes, reps: int):
    checkpoint.compress(data)  # the first call loads the compiled kernels
    (blob, report), tc = _best(lambda: checkpoint.compress(data), reps)
    back, td = _best(lambda: checkpoint.decompress(blob, check=False), reps)
    back2, tv = _best(lambda: checkpoint.decompress(blob, check=True), max(1, reps - 1))
    return len(blob), tc, td, tv, back == data and back2 == data, report


def _exponent_bound(st: sio.Safetensors, report: checkpoint.Report) -> float:
    """File size with the exponent plane at its global order-0 entropy and all else raw."""
    saved = 0.0
    for hist in report.exponent_hist.values():
        n = int(hist.sum())
        saved += n * (8 - huffman.entropy_bits(hist)) / 8
    return (st.size - saved) / st.size


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
            n, tc, td, ok = _zstd(data, reps)
            r["zstd3"] = dict(ratio=n / len(data), c_mbs=mb / tc, d_mbs=mb / td, ok=ok)
            z = _zipnn(data, dtype, reps)
            if z:
                n, tc, td, ok = z
                r["zipnn"] = dict(ratio=n / len(data), c_mbs=mb / tc, d_mbs=mb / td, ok=ok)
            n, tc, td, tv, ok, report = _ours(data, reps)
            r["ours"] = dict(ratio=n / len(data), c_mbs=mb / tc, d_mbs=mb / td, dv_mbs=mb / tv, ok=ok,
                             huff_bits=report.huff_bits, huff_entropy_bits=report.huff_entropy_bits,
                             huff_byte_entropy_bits=report.huff_byte_entropy_bits,
                             huffman_overhead=report.huffman_overhead,
                             huffman_overhead_bytes=report.huffman_overhead_bytes)
            r["exponent_bound"] = _exponent_bound(st, report)
            rows.append(r)
            print(_row(r), flush=True)
    return {"python": platform.python_version(), "machine": platform.machine(), "reps": reps,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "rows": rows}


HEAD = ("| checkpoint | dtype | MB | zstd -3 ratio, c/d MB/s | zipnn 0.5.4 ratio, c/d MB/s | this codec ratio, c/d MB/s "
        "(+sha256 d) | order-0 exponent bound | Huffman bits vs entropy of coded symbols / of bytes | all verified |\n|---|---|---|---|---|---|---|---|---|")


def _cell(m: dict | None) -> str:
    return "-" if not m else f"{m['ratio']:.4f}, {m['c_mbs']:.0f}/{m['d_mbs']:.0f}"


def _row(r: dict) -> str:
    o = r["ours"]
    ok = all(r[k]["ok"] for k in ("zstd3", "zipnn", "ours") if k in r)
    return (f"| {r['checkpoint']} | {r['dtype']} | {r['bytes'] / 1e6:.1f} | {_cell(r['zstd3'])} | {_cell(r.get('zipnn'))} | "
            f"**{o['ratio']:.4f}**, {o['c_mbs']:.0f}/{o['d_mbs']:.0f} ({o['dv_mbs']:.0f}) | {r['exponent_bound']:.4f} | "
            f"+{o['huffman_overhead']:.2%} / +{o['huffman_overhead_bytes']:.2%} | {'yes' if ok else 'NO'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
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

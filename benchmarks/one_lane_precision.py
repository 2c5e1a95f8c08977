"""A text coded in one lane on a CPU: float32 (what "auto" picks since the lesson's probabilities had to match
Generate's) against bfloat16 (what it picked before), in one run: time, file size, and how far each token's
cost moves between the two.

Command: ``python -m benchmarks.one_lane_precision --sizes 400,1600,4000 --repeats 2``; the first bytes of
alice29 from the data folder (``--data-dir`` / ``LMLAB_DATA_DIR``), the fast preset, every file decoded and
compared. Results: ``benchmarks/results/one_lane_precision.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.text_compression import texts
from models.compression.text import lm_codec
from models.core import registry, settings

OUT = Path(__file__).parent / "results" / "one_lane_precision.json"


def _timed(data: bytes, loaded, codec) -> tuple[lm_codec.LMResult, float, float]:
    t0 = time.perf_counter()
    result = lm_codec.compress(data, loaded, codec)
    t1 = time.perf_counter()
    restored = lm_codec.decompress(result.blob, loaded)
    t2 = time.perf_counter()
    if restored != data:
        raise SystemExit("a decoded file differs from its input")
    return result, t1 - t0, t2 - t1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--sizes", default="400,1600,4000", help="comma-separated byte counts of alice29's opening")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each precision, interleaved")
    args = parser.parse_args()
    loaded = registry.load_causal_lm(args.model)
    alice = texts()["alice29"]
    fast = lm_codec.PRESETS["fast"].for_model(loaded)
    lm_codec.compress(b"warm-up: the fingerprint and the bf16 copy are made once", loaded, replace(fast, precision="bf16"))
    rows = []
    print("| first bytes of alice29 | tokens | lanes | fp32: compress / decompress | bf16: compress / decompress | "
          "fp32 vs bf16 | file bytes fp32 / bf16 | a token's cost, bf16 - fp32: mean / largest |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in (int(x) for x in args.sizes.split(",")):
        data = alice[:size]
        runs: dict[str, list] = {"fp32": [], "bf16": []}
        for _ in range(args.repeats):
            for precision in runs:
                runs[precision].append(_timed(data, loaded, replace(fast, precision=precision)))
        result = {p: r[0][0] for p, r in runs.items()}
        enc = {p: statistics.median(x[1] for x in r) for p, r in runs.items()}
        dec = {p: statistics.median(x[2] for x in r) for p, r in runs.items()}
        moved = np.abs(np.array([t.bits for t in result["bf16"].tokens]) - np.array([t.bits for t in result["fp32"].tokens]))
        row = {"bytes": size, "tokens": result["fp32"].header["n_tokens"], "lanes": result["fp32"].header["lanes"],
               "compress_s": enc, "decompress_s": dec, "file_bytes": {p: len(r.blob) for p, r in result.items()},
               "bits_moved_mean": float(moved.mean()), "bits_moved_max": float(moved.max()), "verified": True,
               "load_average_after": os.getloadavg()}
        rows.append(row)
        ratio = (enc["fp32"] + dec["fp32"]) / (enc["bf16"] + dec["bf16"])
        print(f"| {size:,} | {row['tokens']:,} | {row['lanes']} | {enc['fp32']:.1f} s / {dec['fp32']:.1f} s | "
              f"{enc['bf16']:.1f} s / {dec['bf16']:.1f} s | {ratio:.2f}x | {row['file_bytes']['fp32']:,} / "
              f"{row['file_bytes']['bf16']:,} | {row['bits_moved_mean']:.2f} / {row['bits_moved_max']:.2f} bits |",
              flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    settings.atomic_write_text(OUT, json.dumps({"machine": {"cpu_threads": torch.get_num_threads(),
                                                            "platform": platform.platform()},
                                                "model": args.model, "preset": "fast", "rows": rows}, indent=1))
    print(f"\nwrote {OUT.name}")


if __name__ == "__main__":
    main()

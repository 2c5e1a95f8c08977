"""One decode step two ways: the model's own matrices (MKL) and the scheduler's copy on packed matrices (oneDNN).

- ``mkl``: ``model.base_model`` and its output layer as loaded (PyTorch's CPU wheel runs ``nn.Linear``
  on MKL);
- ``packed``: a copy of transformers' module tree with packed oneDNN matrices
  (``models.engines.packed_linear``), what the scheduler steps on.

All run in one process, interleaved step by step, so the machine's drift hits them alike: a class's
prompt (60 positions) is read once, then the same step of one new token per row is timed ``--repeat``
times each way for 1 and 30 rows (the cache is cut back after every step). Prints the median step
time of each and the largest logit difference from ``mkl``; JSON in
benchmarks/results/packed_linear.json.

    python -m benchmarks.packed_linear [--rows 1,30] [--repeat 15] [--no-save]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "packed_linear.json"
MODEL = "smollm2-135m-instruct"
PROMPT_POSITIONS = 60


def _step(body, head, ids, cache) -> torch.Tensor:
    positions = torch.full_like(ids, cache.get_seq_length())
    out = body(input_ids=ids, position_ids=positions, cache=cache, use_cache=True)
    logits = head(out.last_hidden_state[:, -1]).float()
    cache.crop(-1)  # the next timed step starts from the same cache
    return logits


def measure(rows: int, repeat: int) -> dict:
    from models.core import registry
    from models.engines import kv_cache, packed_linear

    loaded = registry.load_causal_lm(MODEL)
    model = loaded.model
    scheduler_parts = packed_linear.for_model(model, loaded.device.device)
    if scheduler_parts is None:
        raise SystemExit("packed matrices are not supported here (needs a float32 model on a CPU with oneDNN)")
    paths = {"mkl": (model.base_model, model.get_output_embeddings()), "packed": scheduler_parts}
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    prompt = torch.randint(0, vocab, (rows, PROMPT_POSITIONS), generator=g)
    token = torch.randint(0, vocab, (rows, 1), generator=g)
    times: dict[str, list[float]] = {name: [] for name in paths}
    logits: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        # Written in place as the scheduler's slot cache is (no concatenation per step).
        cache = kv_cache.preallocated(model.config, PROMPT_POSITIONS + 1)
        model.base_model(input_ids=prompt, cache=cache, use_cache=True)
        for body, head in paths.values():  # warm-up: oneDNN builds its kernels on first use
            _step(body, head, token, cache)
        for _ in range(repeat):
            for name, (body, head) in paths.items():
                t0 = time.perf_counter()
                logits[name] = _step(body, head, token, cache)
                times[name].append(time.perf_counter() - t0)
    mkl, fast = (statistics.median(times[k]) * 1000 for k in paths)
    return {"rows": rows, "repeat": repeat, "mkl_ms": round(mkl, 1), "packed_ms": round(fast, 1),
            "speedup": round(mkl / fast, 2), "max_logit_diff": float((logits["packed"] - logits["mkl"]).abs().max()),
            "packed_mib": round(packed_linear.nbytes(scheduler_parts) / 2**20)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1,30")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    results = [measure(int(n), args.repeat) for n in args.rows.split(",")]
    print("| rows | MKL (model's own) | packed (oneDNN) | speed-up | largest logit difference |")
    print("|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['rows']} | {r['mkl_ms']} ms | {r['packed_ms']} ms | {r['speedup']}x | {r['max_logit_diff']:.1e} |")
    print(f"packed copy: {results[0]['packed_mib']} MiB")
    if not args.no_save:
        RESULTS.write_text(json.dumps({"model": MODEL, "machine": platform.processor() or platform.machine(),
                                       "threads": torch.get_num_threads(), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()

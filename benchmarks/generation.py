"""Generation speed: the app's streaming path vs a plain `model.generate` call.

Same model, prompt and settings, in the same run, alternating the two sides so that
machine load affects both alike. Reports tokens/s and time to first token (TTFT);
the target is app/plain >= 0.95 for tokens/s.

    python -m benchmarks.generation [--model KEY] [--tokens N] [--reps R]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import threading
import time
from pathlib import Path

import torch

from models.core import registry
from models.generation import generator
from models.generation.generator import SamplingSettings

OUT = Path(__file__).resolve().parent / "results" / "generation.json"
PROMPT = "Once upon a time, in a small village by the sea, there lived an old fisherman who"


def in_thread(fn, *args):
    """Run fn in a fresh thread, as the app (and Gradio) does, so both sides share thread placement.

    Measured here under load: the same generate() call in the main thread was ~20x slower than in a
    worker thread (OpenMP's thread team in the main thread spins against other processes).
    """
    result = []
    worker = threading.Thread(target=lambda: result.append(fn(*args)))
    worker.start()
    worker.join()
    return result[0]


def plain(loaded, s: SamplingSettings) -> tuple[int, float, float]:
    ids, _ = generator.encode_prompt(loaded, PROMPT, reserve=s.max_new_tokens)
    kwargs = generator.generate_kwargs(s, loaded)
    with torch.inference_mode():
        torch.manual_seed(s.seed)
        t0 = time.perf_counter()
        loaded.model.generate(ids, attention_mask=torch.ones_like(ids), **dict(kwargs, max_new_tokens=1))
        ttft = time.perf_counter() - t0
        torch.manual_seed(s.seed)
        t0 = time.perf_counter()
        out = loaded.model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
        total = time.perf_counter() - t0
    return out.shape[1] - ids.shape[1], total, ttft


def app(loaded, s: SamplingSettings) -> tuple[int, float, float]:
    t0 = time.perf_counter()
    ev = generator.generate_text(loaded, PROMPT, s)
    return len(ev.tokens), time.perf_counter() - t0, ev.first_token_seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    loaded = registry.load_causal_lm(args.model)
    rows = []
    for mode, temperature in (("greedy", 0.0), ("sampling", 0.8)):
        s = SamplingSettings(temperature=temperature, top_p=0.95, top_k=50, max_new_tokens=args.tokens, seed=1)
        in_thread(app, loaded, s), in_thread(plain, loaded, s)  # warm-up both paths
        runs = {"app": [], "plain": []}
        for _ in range(args.reps):
            for name, fn in (("app", app), ("plain", plain)):
                runs[name].append(in_thread(fn, loaded, s))
        row = {"mode": mode, "new_tokens": runs["app"][0][0]}
        for name, rs in runs.items():
            row[f"{name}_tokens_per_s"] = statistics.median(n / t for n, t, _ in rs)
            row[f"{name}_ttft_ms"] = 1000 * statistics.median(f for _, _, f in rs)
        row["ratio"] = row["app_tokens_per_s"] / row["plain_tokens_per_s"]
        rows.append(row)
    result = {"model": loaded.spec.label, "device": loaded.device.name, "machine": platform.processor() or platform.machine(),
              "torch_threads": torch.get_num_threads(), "reps": args.reps, "rows": rows,
              "when": time.strftime("%Y-%m-%d")}
    print(f"\nGeneration speed, {result['model']} on {result['device']}, {args.tokens} new tokens, median of {args.reps}\n")
    print("| mode | app tokens/s | plain generate tokens/s | ratio (target >= 0.95) | app TTFT ms | plain TTFT ms |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['app_tokens_per_s']:.1f} | {r['plain_tokens_per_s']:.1f} | {r['ratio']:.3f} | "
              f"{r['app_ttft_ms']:.0f} | {r['plain_ttft_ms']:.0f} |")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

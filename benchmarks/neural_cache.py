"""A neural cache on top of the mixing coder, measured on one recorded pass (cross-entropy, no files).

The continuous cache of Grave et al. (2017, "Improving Neural Language Models with a Continuous Cache";
kNN-LM, Khandelwal et al. 2020, is the same idea over a datastore) predicts the next token from the model's
own hidden states: every position the coder has already coded leaves (its last hidden state h_j, the token
x_j that came there), and a new position with state h predicts

    p_cache(v) = sum_{j: x_j = v} exp(theta * cos(h, h_j)) / sum_j exp(theta * cos(h, h_j)),

then p = (1 - lambda) * p_mix + lambda * p_cache (and, for comparison, the same with the model alone). Here the cache holds every position of every lane
coded in earlier steps, so a lane that started without context can still find "a context like this one"
anywhere in the text: what the n-gram and match models find only for exact repeats.

Each text is recorded once (``mixer_replay.record``, the codec's lanes and window), replayed with the model
alone and the default mixer, and the cache is then scored in the codec's coding order for every theta and
lambda. Also reported: the best lambda chosen per bucket of the top similarity after the fact (an upper
bound on what a mixer weight learned by context could get), and the seconds the cache's similarities took
against the recording's forward passes.

    python -m benchmarks.neural_cache --texts alice29,asyoulik --thetas 20,40,80
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.mixer_replay import coding_steps, record, replay_bits
from benchmarks.text_compression import coded_text
from benchmarks.text_mixing import read_text
from models.compression.text import lm_codec, mixing
from models.core import registry, settings

OUT = Path(__file__).parent / "results" / "neural_cache.json"
SIMILARITY_BUCKETS = (0.7, 0.8, 0.85, 0.9, 0.95, 0.98)


def cache_probabilities(hidden: np.ndarray, tokens: np.ndarray, steps: list[tuple[list[int], list[int]]],
                        thetas: list[float]) -> tuple[dict[float, np.ndarray], np.ndarray]:
    """({theta: p_cache of the token that came, (n_tokens,)}, the top cosine similarity (n_tokens,)), in text
    order; positions whose step has nothing before it get p_cache 0 and similarity 0. ``hidden``: (n_tokens,
    d) last hidden states, ``tokens`` (n_tokens,) the token at each position, ``steps`` the coding order."""
    unit = hidden / np.maximum(np.linalg.norm(hidden, axis=1, keepdims=True), 1e-12)
    order = np.concatenate([np.asarray(p, dtype=np.int64) for _, p in steps])
    keys, values = unit[order], tokens[order]
    p_cache = {theta: np.zeros(len(tokens)) for theta in thetas}
    top = np.zeros(len(tokens))
    seen = 0
    for _, positions in steps:
        if seen:
            sim = unit[positions] @ keys[:seen].T  # (active, seen)
            best = sim.max(axis=1, keepdims=True)
            top[positions] = best[:, 0]
            hit = values[None, :seen] == tokens[positions][:, None]
            for theta in thetas:
                w = np.exp(theta * (sim - best))
                p_cache[theta][positions] = (w * hit).sum(axis=1) / w.sum(axis=1)
        seen += len(positions)
    return p_cache, top


def interpolated_bits(p_mix: np.ndarray, p_cache: np.ndarray, lam: float) -> float:
    return float(-np.log2((1.0 - lam) * p_mix + lam * p_cache).sum())


def best_by_similarity(p_mix: np.ndarray, p_cache: np.ndarray, top: np.ndarray) -> float:
    """Bits with the best lambda per similarity bucket, chosen after the fact (a bound, not a coder)."""
    bucket = np.searchsorted(np.array(SIMILARITY_BUCKETS), top, side="right")
    total = 0.0
    for b in range(len(SIMILARITY_BUCKETS) + 1):
        m = bucket == b
        if m.any():
            total += min(interpolated_bits(p_mix[m], p_cache[m], lam) for lam in np.linspace(0.0, 0.5, 21))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--texts", default="alice29,asyoulik")
    parser.add_argument("--preset", default="fast", choices=list(lm_codec.PRESETS))
    parser.add_argument("--thetas", default="20,40,80")
    parser.add_argument("--lambdas", default="0.02,0.05,0.1,0.2")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir) if args.data_dir else settings.data_dir()
    thetas = [float(t) for t in args.thetas.split(",")]
    lambdas = [float(x) for x in args.lambdas.split(",")]
    loaded = registry.load_causal_lm(args.model)
    s = replace(lm_codec.PRESETS[args.preset], threads=args.threads).for_model(loaded)
    results = []
    for text in args.texts.split(","):
        name, data = read_text(text, data_dir)
        ids, _, _ = lm_codec.TokenMap(loaded.tokenizer).to_tokens(coded_text(data))
        hidden = np.zeros((len(ids), loaded.model.config.hidden_size), dtype=np.float32)
        started = time.perf_counter()
        probs, tokens, opening, lengths = record(loaded, ids, s, hidden)
        record_s = time.perf_counter() - started
        alone = replay_bits(probs, tokens, opening, lengths, None)
        mixed = replay_bits(probs, tokens, opening, lengths, mixing.DEFAULT)
        del probs
        started = time.perf_counter()
        p_cache, top = cache_probabilities(hidden, tokens, coding_steps(opening, lengths), thetas)
        cache_s = time.perf_counter() - started
        p_mix = 2.0 ** -mixed
        rows = [{"theta": theta, "lambda": lam, "bits": interpolated_bits(p_mix, p_cache[theta], lam)}
                for theta in thetas for lam in lambdas]
        p_alone = 2.0 ** -alone
        alone_rows = [{"theta": theta, "lambda": lam, "bits": interpolated_bits(p_alone, p_cache[theta], lam)}
                      for theta in thetas for lam in lambdas]
        bound = {theta: best_by_similarity(p_mix, p_cache[theta], top) for theta in thetas}
        best = min(rows, key=lambda r: r["bits"])
        result = {"text": name, "bytes": len(data), "tokens": len(ids), "lanes": len(lengths),
                  "model_alone_bits": float(alone.sum()), "mixed_bits": float(mixed.sum()), "rows": rows,
                  "model_alone_with_cache_rows": alone_rows,
                  "best_lambda_by_similarity_bits": bound, "record_seconds": record_s,
                  "cache_seconds_all_thetas": cache_s}
        results.append(result)
        print(f"{name}: model alone {alone.sum() / len(data):.4f}, {mixing.name_of(mixing.DEFAULT)} "
              f"{mixed.sum() / len(data):.4f} ({mixed.sum() / alone.sum() - 1:+.2%}); + cache best "
              f"theta {best['theta']:g} lambda {best['lambda']:g}: {best['bits'] / len(data):.4f} "
              f"({best['bits'] / mixed.sum() - 1:+.2%} vs mixed, {best['bits'] / alone.sum() - 1:+.2%} vs alone); "
              f"model alone + cache {min(r['bits'] for r in alone_rows) / alone.sum() - 1:+.2%}; "
              f"lambda by similarity (bound): {min(bound.values()) / mixed.sum() - 1:+.2%} vs mixed; "
              f"cache {cache_s:.0f} s for {len(thetas)} thetas against the pass's {record_s:.0f} s", flush=True)
    out = {"model": args.model, "preset": args.preset, "mixer": mixing.name_of(mixing.DEFAULT), "texts": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    settings.atomic_write_text(Path(args.out), json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

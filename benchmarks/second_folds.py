"""Ways to count the second model's tokens for the first model's, measured on one pass of the two-models coder.

The coder codes Gemma's tokens; SmolLM2 reads along with its own tokenizer (``second_opinion.py``). How its
next-token distribution becomes one over Gemma's tokens decides what it adds. One pass of the coder (the
model alone, lanes of ``--lane-tokens``) records, for every coded token, Gemma's probability of it and each
fold's, all from the same SmolLM2 state; the mixture's cross-entropy is then computed for a grid of Gemma's
weights. Folds:

- longest: each SmolLM2 token counts for the longest Gemma token its bytes begin with (``fold_map``);
- shared: each SmolLM2 token's probability is shared among the Gemma tokens that begin with its bytes and
  that longest one, by Gemma's odds (``share_pairs``; the two-models preset since);
- exclusive: each Gemma token goes only to the longest SmolLM2 token it begins with (so " there" is not
  taken from SmolLM2's " the"), plus the longest fold;
- exclusive + prefixes, shared + prefixes: also every shorter Gemma token a SmolLM2 token begins with.

    python -m benchmarks.second_folds --text alice29:20000 --lane-tokens 500 --out benchmarks/results/second_folds.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.text_mixing import read_text
from models.compression.text import lm_codec, second_opinion
from models.core import registry, settings

OUT = Path(__file__).parent / "results" / "second_folds.json"
FOLDS = ("longest", "shared", "exclusive", "exclusive + prefixes", "shared + prefixes")


def fold_pairs(second: list[bytes | None], first: list[bytes | None], kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(second token, first token) pairs of a fold other than the longest: two int64 arrays, sorted."""
    longest = second_opinion.fold_map(second, first)
    pairs: set[tuple[int, int]] = set()
    if kind.startswith("shared"):
        rows, cols = second_opinion.share_pairs(second, first, longest)
        pairs |= set(zip(rows.tolist(), cols.tolist(), strict=True))
    if kind.startswith("exclusive"):
        owner = second_opinion.fold_map(first, second)  # each first token's longest second token it begins with
        pairs |= {(int(u), g) for g, u in enumerate(owner) if u < len(second)}
        pairs |= {(u, int(longest[u])) for u, b in enumerate(second) if b and longest[u] < len(first)}
    if kind.endswith("prefixes"):
        index = {b: g for g, b in enumerate(first) if b}
        pairs |= {(u, index[b[:k]]) for u, b in enumerate(second) if b for k in range(1, len(b) + 1) if b[:k] in index}
    ordered = sorted(pairs)
    return np.array([p[0] for p in ordered], dtype=np.int64), np.array([p[1] for p in ordered], dtype=np.int64)


def record(data: bytes, first: registry.Loaded, second: registry.Loaded, lane_tokens: int) -> dict[str, np.ndarray]:
    """Gemma's and each fold's probability of every coded token (folds: normalised over the first vocabulary)."""
    rec: dict[str, list[float]] = {k: [] for k in ("first", *FOLDS)}
    stash: dict = {}
    matrices: dict[str, tuple] = {}
    original_mixed, original_advance = second_opinion.SecondOpinion.mixed, second_opinion.SecondOpinion.advance_ids

    def mixed(self, active, probs):
        if not matrices:
            for kind in FOLDS[1:]:
                rows, cols = fold_pairs(self.pieces, self.first_pieces, kind)
                matrices[kind] = second_opinion.pair_matrices(rows, cols, len(self.pieces), self.first_vocab)
        p = self.probs[active]
        first_probs = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32))
        stash.update(active=list(active), first=probs, longest=torch.zeros(
            len(active), self.first_vocab + 1).index_add_(1, self.fold, p)[:, :self.first_vocab])
        for kind in FOLDS[1:]:
            self.shared = matrices[kind]
            stash[kind] = self._shared(p, first_probs)
        self.shared = None
        return probs  # the coder codes with Gemma alone; the folds are only recorded

    def advance_ids(self, coded):
        for i, lane in enumerate(stash.get("active", [])):
            if lane in coded:
                t = coded[lane]
                rec["first"].append(float(stash["first"][i, t]))
                for kind in FOLDS:
                    total = float(stash[kind][i].sum())
                    rec[kind].append(float(stash[kind][i, t]) / total if total > 0 else -1.0)
        stash.clear()
        return original_advance(self, coded)

    s = lm_codec.CodecSettings(window=0, lane_tokens=lane_tokens, short_tokens=0, second_model=second.spec.key)
    second_opinion.SecondOpinion.mixed, second_opinion.SecondOpinion.advance_ids = mixed, advance_ids
    try:
        lm_codec.compress(data, first, s, second=second)
    finally:
        second_opinion.SecondOpinion.mixed, second_opinion.SecondOpinion.advance_ids = original_mixed, original_advance
    return {k: np.array(v) for k, v in rec.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--second", default="smollm2-135m-instruct")
    parser.add_argument("--text", default="alice29:20000", help="NAME[:BYTES] of a text in the data folder")
    parser.add_argument("--lane-tokens", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir) if args.data_dir else settings.data_dir()
    name, data = read_text(args.text, data_dir)
    first, second = registry.load_causal_lm(args.model), registry.load_causal_lm(args.second)
    started = time.perf_counter()
    rec = record(data, first, second, args.lane_tokens)
    g = rec["first"]
    rows = {"first model alone": float(-np.log2(g).sum() / len(data))}
    weights = [round(w, 2) for w in np.arange(0.5, 0.951, 0.05)]
    for kind in FOLDS:
        q = np.where(rec[kind] >= 0, rec[kind], g)
        bits = {w: float(-np.log2(w * g + (1 - w) * q).sum() / len(data)) for w in weights}
        best = min(bits, key=bits.get)
        rows[kind] = {"bits_per_byte_by_weight": bits, "best_weight": best, "best": bits[best],
                      "tokens_given_under_1e-4": int((q < 1e-4).sum())}
        print(kind, round(bits[0.7], 4), "best", round(bits[best], 4), "at", best)
    out = {"text": name, "bytes": len(data), "tokens": len(g), "model": args.model, "second": args.second,
           "lane_tokens": args.lane_tokens, "threads": args.threads, "platform": platform.platform(),
           "seconds": time.perf_counter() - started, "cross_entropy_bits_per_byte": rows}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""The two-models coder's mixture and mixer settings compared on one recorded pass (cross-entropy, no files).

The two-models preset mixes SmolLM2's distribution, folded onto Gemma's tokens (``second_opinion.py``), into
Gemma's, and the mixing coder (``mixing.py``) works on the mixture. Neither model's distribution depends on
how they are mixed: SmolLM2 reads the text's bytes, whatever the coder did with them. So one pass of the coder
records, for every step and lane, both distributions over the text's own tokens (plus one column for the rest),
each one's largest probability over the whole vocabulary and whether the lane's text ends in a letter (the
context of ``second_opinion.LearnedWeights``), and the token that came. Any mixture (a fixed share of Gemma, or
one learned per context) and any mixer settings are then replayed over it in the coder's order in seconds,
with the coder's own classes. Files and their round trips are what ``benchmarks.text_mixing`` measures; this
only says which settings are worth a file (the mixer only reads the text's tokens' probabilities and the total
of the rest, as ``benchmarks.mixer_replay`` explains).

    python -m benchmarks.two_models_replay --text alice29 --cache /tmp/alice29_two_models.pkl \\
        --variants "weight=0.75;weight=0.75,mixer=mix-2;learn=0.1,mixer=mix-3"
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.text_compression import coded_text
from benchmarks.text_mixing import read_text
from models.compression.text import lm_codec, mixing, second_opinion
from models.core import registry, settings

OUT = Path(__file__).parent / "results" / "two_models_replay.json"
RULE = "two-models-shared"  # the fold both distributions are recorded with; the mixing settings are replayed


def record(data: bytes, first: registry.Loaded, second: registry.Loaded, every_column: bool = False) -> dict:
    """One pass of the coder (``RULE``, the model alone) with ``SecondOpinion.mixed`` watched: a dict with the
    text's tokens ``vocab`` (U,; with ``every_column`` the whole vocabulary, for the geometric mixture: 1 MB a
    row, so an excerpt) and ``steps``, one per coder step: (active lanes, Gemma's rows (n, U + 1),
    the folded rows (n, U + 1), each row's largest probability of either over the whole vocabulary (n, 2),
    whether each lane's text ends in a letter (n,), whether SmolLM2 had an opinion (n,), the tokens that came)."""
    ids = set()
    for variant in (data, coded_text(data)):  # the coder reads the text unwrapped when that pays
        tokens, mode, _ = lm_codec.TokenMap(first.tokenizer).to_tokens(variant)
        if mode != "text":
            raise SystemExit("this text is not read as text")
        ids |= {int(t) for t in tokens}
    vocab = np.array(sorted(ids), dtype=np.int64)
    steps: list[tuple] = []
    stash: dict = {}
    original_mixed, original_learn = second_opinion.SecondOpinion.mixed, second_opinion.SecondOpinion.learn

    def restricted(rows: np.ndarray) -> np.ndarray:
        kept = rows.copy() if every_column else rows[:, vocab]
        return np.concatenate([kept, 1.0 - kept.sum(1, keepdims=True, dtype=np.float64).astype(np.float32)], 1)

    def mixed(self, active, probs):
        p = self.probs[active]
        f = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32))
        folded = self._shared(p, f)
        total = folded.sum(-1, keepdim=True)
        has = (total[:, 0] > 0).numpy()
        q = torch.where(total > 0, folded / total.clamp_min(1e-30), f).numpy()
        tops = np.stack([probs.max(1), q.max(1)], 1).astype(np.float64)
        in_word = np.array([bytes(self.text[lane][-1:]).isalpha() for lane in active])
        stash.update(step=(list(active), restricted(probs), restricted(q), tops, in_word, has))
        return original_mixed(self, active, probs)

    def learn(self, coded):
        active, *rest = stash.pop("step")
        steps.append((active, *rest, np.array([coded[lane] for lane in active], dtype=np.int64)))
        return original_learn(self, coded)

    s = lm_codec.RULES[RULE]
    second_opinion.SecondOpinion.mixed, second_opinion.SecondOpinion.learn = mixed, learn
    try:
        result = lm_codec.compress(data, first, s, second=second)
    finally:
        second_opinion.SecondOpinion.mixed, second_opinion.SecondOpinion.learn = original_mixed, original_learn
    if every_column:
        vocab = np.arange(steps[0][1].shape[1] - 1, dtype=np.int64)
    column = {int(t): i for i, t in enumerate(vocab)}
    steps = [(*step[:-1], np.array([column[int(t)] for t in step[-1]], dtype=np.int64)) for step in steps]
    return {"vocab": vocab, "steps": steps, "bytes": len(data), "file_bytes": len(result.blob),
            "cross_entropy_bits": result.cross_entropy_bits}


def replay(rec: dict, weight: float, learn: float, mixer: mixing.MixerSettings | None,
           geometric: float = 0.0) -> float:
    """Cross-entropy (bits) of the mixture (Gemma's share ``weight``, learned per context at rate ``learn``
    when not 0; half of it the geometric mixture with exponents learned at rate ``geometric`` when not 0)
    through ``mixer`` (None: the mixture alone), fed in the coder's order. The coder's last step is not
    recorded (it learns nothing after it), so its tokens are not counted. The geometric mixture is the coder's
    only on a recording of every column (``record(every_column=True)``): over the text's tokens and one column
    for the rest it is far too optimistic (f^a q^b summed over 260,000 tokens, not taken as one, is much larger
    when a + b < 1: -3 % against -0.4 % on alice29's first 10 kB)."""
    lanes = 1 + max(max(step[0]) for step in rec["steps"])
    m = None if mixer is None else mixing.Mixer(mixer, lanes)
    learned = second_opinion.LearnedWeights(weight, learn) if learn else None
    geo = second_opinion.GeometricWeights(geometric) if geometric else None
    bits = 0.0
    for active, f, q, tops, in_word, has, x in rec["steps"]:
        keys = [second_opinion.LearnedWeights.context(float(a), float(b), bool(c))
                for (a, b), c in zip(tops, in_word, strict=True)]
        w = np.array([[learned.share(k) if learned else weight] for k in keys])
        mixture = second_opinion.mix(f, q, w)
        rows = {}
        if geo is not None:
            for i, k in enumerate(keys):
                if has[i]:
                    rows[i] = geo.mixture(f[i], q[i], geo.get(k))
                    mixture[i] = second_opinion.blend(mixture[i], rows[i][0])
        mixture = np.where(has[:, None], mixture, f)
        out = mixture if m is None else m.predict(active, mixture)
        p = out[np.arange(len(active)), x].astype(np.float64) / out.sum(1, dtype=np.float64)
        bits += float(-np.log2(np.maximum(p, lm_codec.MIN_P)).sum())
        if m is not None:
            m.update(active, x)
        for i, k in enumerate(keys):
            if not has[i]:
                continue
            fx, qx = float(f[i, x[i]]), float(q[i, x[i]])
            if geo is not None:
                g, mean_lf, mean_lq = rows[i]
                gx = float(g[x[i]])
                geo.update(k, fx, qx, gx, second_opinion.blended_probability(float(w[i, 0]), fx, qx, gx),
                           mean_lf, mean_lq)
            if learned is not None:
                learned.update(k, fx, qx)
    return bits


def parse(variant: str) -> tuple[float, float, mixing.MixerSettings | None, float]:
    """"weight=0.75,learn=0.1,mixer=mix-3,bias_rate=0.1,geometric=0.005" -> (weight, learn, mixer settings,
    geometric)."""
    fields = dict(part.split("=") for part in filter(None, (p.strip() for p in variant.split(","))))
    mixer = mixing.NAMED[fields.pop("mixer")] if "mixer" in fields else None
    weight, learn = float(fields.pop("weight", 0.75)), float(fields.pop("learn", 0.0))
    geometric = float(fields.pop("geometric", 0.0))
    if fields:
        mixer = replace(mixer or mixing.MIX_2, **{k: float(v) for k, v in fields.items()})
    return weight, learn, mixer, geometric


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--text", default="alice29")
    parser.add_argument("--variants", default="weight=0.75;weight=0.75,mixer=mix-2;weight=0.75,mixer=mix-3;"
                                              "learn=0.1;learn=0.1,mixer=mix-2;learn=0.1,mixer=mix-3",
                        help="';'-separated: weight=, learn=, mixer= (a named mixer) and mixer fields to change")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default="", help="a file for the recording: read when it exists (same text!)")
    parser.add_argument("--every-column", action="store_true",
                        help="record the whole vocabulary (needed for geometric=; ~2 MB a step: use an excerpt)")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    name, data = read_text(args.text, Path(args.data_dir) if args.data_dir else settings.data_dir())
    started = time.perf_counter()
    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.exists():
        rec = pickle.loads(cache.read_bytes())
    else:
        rec = record(data, registry.load_causal_lm("gemma-3-270m"), registry.load_causal_lm("smollm2-135m-instruct"),
                     args.every_column)
        if cache is not None:
            cache.write_bytes(pickle.dumps(rec))
    print(f"{len(rec['steps']):,} steps x {len(rec['vocab']) + 1:,} columns in {time.perf_counter() - started:.0f} s; "
          f"the recording pass's file: {rec['file_bytes']:,} bytes", flush=True)
    rows = []
    for variant in filter(None, (v.strip() for v in args.variants.split(";"))):
        t0 = time.perf_counter()
        bits = replay(rec, *parse(variant))
        rows.append({"variant": variant, "bits": bits, "bits_per_byte": bits / rec["bytes"],
                     "seconds": time.perf_counter() - t0})
        print(f"{variant:45s} {bits / rec['bytes']:.4f} bits/byte  vs first {bits / rows[0]['bits'] - 1:+.2%}", flush=True)
    result = {"text": name, "bytes": rec["bytes"], "rule recorded": RULE, "steps": len(rec["steps"]),
              "columns": len(rec["vocab"]) + 1, "recording file bytes": rec["file_bytes"], "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    settings.atomic_write_text(Path(args.out), json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

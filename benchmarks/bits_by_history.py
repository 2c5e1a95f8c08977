"""Where the mixing coder's bits go, by what the text had shown before each token; and two stages tried on top.

Each text is recorded once (``mixer_replay.record``: the codec's lanes and window, the model's last hidden
state kept too) and replayed in the codec's coding order with the model alone and the default mixer. Every
position is put in one of four classes by what had been coded before it (in coding order, all lanes):

- "first use": the token had never come;
- "new bigram": it had, but never after this previous token;
- "new trigram": that pair had come, but never after these two tokens;
- "seen trigram": the three tokens had come together before.

The n-gram and match models can only speak where the text repeats itself, so the classes bound what any
predictor built from the text's own statistics can save: the table gives each class's share of the model's
bits and what the mixer saves there.

Two stages are then measured on top of the default mixer, on the same replay (cross-entropy, not files):

- **a readout learned online**: p'(v) proportional to p_mix(v) exp(u_v . h / |h|) for the tokens the text has
  used, u_v learned by one gradient step of -log p'(x) a step (dynamic evaluation of the output layer only,
  Krause et al. 2018, at the cost of one (lanes x hidden) x (hidden x used tokens) product);
- **an SSE stage on novelty**: the mixed probability that the next token is one the text has not used yet,
  mapped through an adaptive table (PAQ's APM, interpolated over 33 stretch buckets) and the two groups of
  tokens rescaled to it.

    python -m benchmarks.bits_by_history --texts alice29,asyoulik,lcet10 --held-back wikitext-2/test.txt:100000
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.mixer_replay import coding_steps, record
from benchmarks.text_compression import coded_text
from benchmarks.text_mixing import read_text
from models.compression.text import lm_codec, mixing
from models.core import registry, settings

OUT = Path(__file__).parent / "results" / "bits_by_history.json"
CLASSES = ("first use", "new bigram", "new trigram", "seen trigram")


def history_classes(tokens: np.ndarray, steps: list[tuple[list[int], list[int]]]) -> np.ndarray:
    """(n_tokens,) int, an index into CLASSES for each position, from what was coded in the steps before
    (tokens coded in the same step do not see each other, as in the coder)."""
    tok, bi, tri = set(), set(), set()
    out = np.zeros(len(tokens), dtype=np.int64)
    for _, positions in steps:
        keys = []
        for pos in positions:
            t, a, b = int(tokens[pos]), int(tokens[pos - 1]) if pos else -1, int(tokens[pos - 2]) if pos > 1 else -1
            out[pos] = 0 if t not in tok else 1 if (a, t) not in bi else 2 if (b, a, t) not in tri else 3
            keys.append((t, (a, t), (b, a, t)))
        for t, pair, triple in keys:
            tok.add(t)
            bi.add(pair)
            tri.add(triple)
    return out


def staged_bits(probs: np.ndarray, tokens: np.ndarray, hidden: np.ndarray, opening: int, lengths: list[int],
                readout_rate: float = 0.0, sse_rate: float = 0.0) -> np.ndarray:
    """Bits per position (n_tokens,) of the default mixer, then the readout stage (``readout_rate`` > 0) or
    the novelty SSE stage (``sse_rate`` > 0); both 0: the default mixer alone. ``probs`` (n_tokens, U + 1)
    as ``record`` gives them (the last column: every token the text never uses), ``hidden`` (n_tokens, d)."""
    unit = hidden / np.maximum(np.linalg.norm(hidden, axis=1, keepdims=True), 1e-12)
    m = mixing.Mixer(mixing.DEFAULT, len(lengths))
    used = np.zeros(probs.shape[1], dtype=bool)  # the last column is never "used": no token of the text
    u = np.zeros((hidden.shape[1], probs.shape[1]))
    grid = np.linspace(-8.0, 8.0, 33)
    apm = 1.0 / (1.0 + np.exp(-grid))
    bits = np.zeros(len(tokens))
    for active, positions in coding_steps(opening, lengths):
        x = tokens[positions]
        rows = np.arange(len(x))
        mixed = m.predict(active, probs[positions]).astype(np.float64)
        mixed /= mixed.sum(axis=1, keepdims=True)
        q = mixed
        ids = np.flatnonzero(used)
        if readout_rate and len(ids):
            h = unit[positions]
            a = mixed[:, ids] * np.exp(h @ u[:, ids])
            z = 1.0 + (a - mixed[:, ids]).sum(axis=1)
            q = mixed / z[:, None]
            q[:, ids] = a / z[:, None]
        if sse_rate:
            p_new = np.clip(mixed[:, ~used].sum(axis=1), 1e-6, 1 - 1e-6)
            f = (np.clip(np.log(p_new / (1 - p_new)), -8, 8) + 8) / 16 * (len(grid) - 1)
            lo = np.minimum(np.floor(f).astype(np.int64), len(grid) - 2)
            w = f - lo
            p_sse = np.clip(apm[lo] * (1 - w) + apm[lo + 1] * w, 1e-5, 1 - 1e-5)
            q = mixed.copy()
            q[:, ~used] *= (p_sse / p_new)[:, None]
            q[:, used] *= ((1 - p_sse) / (1 - p_new))[:, None]
            came_new = (~used[x]).astype(np.float64)
            np.add.at(apm, lo, sse_rate * (1 - w) * (came_new - apm[lo]))
            np.add.at(apm, lo + 1, sse_rate * w * (came_new - apm[lo + 1]))
        bits[positions] = -np.log2(np.maximum(q[rows, x], lm_codec.MIN_P))
        m.update(active, x)
        used[x] = True
        if readout_rate:
            ids = np.flatnonzero(used)
            g = -q[:, ids]
            g[rows, np.searchsorted(ids, x)] += 1.0  # -d(-log q_x)/dz_v = [v = x] - q_v
            u[:, ids] += readout_rate * (unit[positions].T @ g)
    return bits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--texts", default="alice29,asyoulik,lcet10")
    parser.add_argument("--held-back", default="", help="a text under the data folder, never stored here")
    parser.add_argument("--preset", default="fast", choices=list(lm_codec.PRESETS))
    parser.add_argument("--readout-rates", default="0.03,0.1")
    parser.add_argument("--sse-rates", default="0.005,0.02")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir) if args.data_dir else settings.data_dir()
    loaded = registry.load_causal_lm(args.model)
    s = replace(lm_codec.PRESETS[args.preset], threads=args.threads).for_model(loaded)
    results = []
    for spec in [t for t in args.texts.split(",") + [args.held_back] if t]:
        name, data = read_text(spec, data_dir)
        ids, _, _ = lm_codec.TokenMap(loaded.tokenizer).to_tokens(coded_text(data))
        hidden = np.zeros((len(ids), loaded.model.config.hidden_size), dtype=np.float32)
        started = time.perf_counter()
        probs, tokens, opening, lengths = record(loaded, ids, s, hidden)
        print(f"{name}: recorded {len(ids):,} positions in {time.perf_counter() - started:.0f} s", flush=True)
        steps = coding_steps(opening, lengths)
        alone = -np.log2(np.maximum(probs[np.arange(len(tokens)), tokens].astype(np.float64), lm_codec.MIN_P))
        mixed = staged_bits(probs, tokens, hidden, opening, lengths)
        classes = history_classes(tokens, steps)
        rows = []
        for c, label in enumerate(CLASSES):
            at = classes == c
            rows.append({"class": label, "tokens": int(at.sum()), "model_bytes": alone[at].sum() / 8,
                         "mixer_bytes": mixed[at].sum() / 8, "share_of_model_bits": alone[at].sum() / alone.sum(),
                         "saved": 1 - mixed[at].sum() / alone[at].sum()})
            print(f"  {label:13s} {rows[-1]['tokens']:7,} tokens  {rows[-1]['share_of_model_bits']:6.1%} of the "
                  f"model's bits  mixer saves {rows[-1]['saved']:+.1%}", flush=True)
        stages = []
        for kind, rates in (("readout", args.readout_rates), ("novelty SSE", args.sse_rates)):
            for rate in [float(r) for r in rates.split(",") if r]:
                started = time.perf_counter()
                bits = staged_bits(probs, tokens, hidden, opening, lengths, **{
                    "readout_rate" if kind == "readout" else "sse_rate": rate})
                stages.append({"stage": kind, "rate": rate, "bpb": bits.sum() / len(data),
                               "vs_mixer": bits.sum() / mixed.sum() - 1, "seconds": time.perf_counter() - started})
                print(f"  + {kind} {rate}: {stages[-1]['bpb']:.4f} bits/byte, {stages[-1]['vs_mixer']:+.2%} against "
                      f"the mixer", flush=True)
        results.append({"text": name, "bytes": len(data), "tokens": len(ids), "lanes": len(lengths),
                        "model_alone_bpb": alone.sum() / len(data), "mixer_bpb": mixed.sum() / len(data),
                        "classes": rows, "stages": stages})
        print(f"  model alone {alone.sum() / len(data):.4f}, mixer {mixed.sum() / len(data):.4f} bits/byte "
              f"({mixed.sum() / alone.sum() - 1:+.2%})", flush=True)
    out = {"model": args.model, "preset": args.preset, "mixer": mixing.name_of(mixing.DEFAULT), "texts": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    settings.atomic_write_text(Path(args.out), json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

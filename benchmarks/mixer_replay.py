"""Mixer settings compared on one recorded pass of the model (cross-entropy, no files): a tuning tool.

A file's mixer only ever reads the model's probabilities of the tokens the text uses (the bias stage, the
n-gram and match models name only those) and the total of the rest. So one teacher-forced pass records,
for every position, the probabilities of the text's own vocabulary plus one column for everything else
(alice29 with Gemma: 37,747 positions x about 3,700 columns instead of 262,144), and every mixer variant
is then replayed over it in the codec's coding order (``lm_codec.coding_order``: the lanes step by step),
in seconds instead of a model pass of minutes. The replayed model-alone cross-entropy is the codec's up
to the last float bits of a batched forward; what a variant changes is measured against the model alone
and ``mix-2`` in the same replay. Files and their round trips are what ``benchmarks.text_mixing``
measures; this only says which settings are worth a file.

    python -m benchmarks.mixer_replay --model gemma-3-270m --text alice29 --preset compact \\
        --variants "bias_rate=0.1;bias_rate=0.3;rate=0.05"
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.text_compression import coded_text
from benchmarks.text_mixing import read_text
from models.compression.text import lm_codec, mixing
from models.core import registry, settings

OUT = Path(__file__).parent / "results" / "mixer_replay.json"
CHUNK = 512


def record(loaded, ids: list[int], s: lm_codec.CodecSettings, hidden: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray, int, list[int]]:
    """(probabilities (n_tokens, U + 1) float32 in text order, the text's tokens remapped to 0..U-1, the
    opening's length, the lanes' lengths): each position's distribution under the codec's lane and window
    rule (one forward per segment), its columns the text's U distinct tokens and, last, the rest.
    ``hidden`` (n_tokens, hidden size), when given, is filled with the body's last hidden state at each
    position (the vector the output layer turns into that position's distribution)."""
    vocab = np.unique(np.asarray(ids))
    remap = {int(t): i for i, t in enumerate(vocab)}
    columns = torch.from_numpy(vocab)
    runner = lm_codec._runner(loaded, s.precision)
    start = lm_codec._start_id(loaded.tokenizer)
    opening, lengths = s.layout(len(ids))
    out = np.zeros((len(ids), len(vocab) + 1), dtype=np.float32)

    def lane(first: int, n: int, context: list[int]) -> None:
        pos = 0
        while pos < n:
            seg = ids[first + pos:first + pos + s.window - len(context)]
            with torch.inference_mode():
                inp = torch.tensor([[start] + context + seg[:-1]])
                states = runner.body(input_ids=inp).last_hidden_state[0, len(context):]
                if hidden is not None:
                    hidden[first + pos:first + pos + len(seg)] = states.float().numpy()
                for c in range(0, len(seg), CHUNK):  # (CHUNK, vocab) float32 at a time: 0.5 GB for Gemma
                    p = torch.softmax(runner.logits(states[c:c + CHUNK]).float(), -1)
                    kept = p[:, columns]
                    rows = slice(first + pos + c, first + pos + c + len(kept))
                    out[rows, :-1] = kept.numpy()
                    out[rows, -1] = (1.0 - kept.sum(-1, dtype=torch.float64)).clamp(min=0).numpy()
            context, pos = context + seg, pos + len(seg)
            if len(context) >= s.window:  # the codec rebuilds here: start token + the last `keep` tokens
                context = context[-s.keep:] if s.keep else []

    if opening:
        lane(0, opening, [])
    offset = opening
    for n in lengths:
        lane(offset, n, list(ids[:opening]))
        offset += n
    return out, np.array([remap[int(t)] for t in ids], dtype=np.int64), opening, lengths


def recorded(loaded, ids: list[int], s: lm_codec.CodecSettings, cache: Path | None
             ) -> tuple[np.ndarray, np.ndarray, int, list[int], str]:
    """``record``'s four results, read from ``cache`` (a .npz) when it exists, else recorded and written there;
    and how they were had, for the log. A cache must be of the same model, text and preset."""
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            return z["probs"], z["tokens"], int(z["opening"]), z["lengths"].tolist(), f"read from {cache}"
    probs, tokens, opening, lengths = record(loaded, ids, s)
    if cache is not None:
        np.savez(cache, probs=probs, tokens=tokens, opening=opening, lengths=np.array(lengths))
    return probs, tokens, opening, lengths, "recorded"


def replay(probs: np.ndarray, tokens: np.ndarray, opening: int, lengths: list[int],
           mixer: mixing.MixerSettings | None) -> float:
    """Cross-entropy in bits of the (mixed) distributions, fed in the codec's coding order: the opening as
    lane 0, then every lane step by step, lane 0 going straight on (``lm_codec._code_tokens``)."""
    return float(replay_bits(probs, tokens, opening, lengths, mixer).sum())


def coding_steps(opening: int, lengths: list[int]) -> list[tuple[list[int], list[int]]]:
    """The codec's steps as (active lanes, their text positions): the opening one token a step as lane 0,
    then every lane step by step (``lm_codec._code_tokens``)."""
    offsets = [opening + sum(lengths[:i]) for i in range(len(lengths))]
    steps = [([0], [i]) for i in range(opening)]
    steps += [([lane for lane in range(len(lengths)) if lengths[lane] > t],
               [offsets[lane] + t for lane in range(len(lengths)) if lengths[lane] > t])
              for t in range(max(lengths, default=0))]
    return steps


def replay_bits(probs: np.ndarray, tokens: np.ndarray, opening: int, lengths: list[int],
                mixer: mixing.MixerSettings | None) -> np.ndarray:
    """``replay``'s bits position by position: (n_tokens,) float64, in text order."""
    steps = coding_steps(opening, lengths)
    m = None if mixer is None else mixing.Mixer(mixer, len(lengths))
    bits = np.zeros(len(tokens))
    for active, positions in steps:
        p = probs[positions]
        x = tokens[positions]
        mixed = p if m is None else m.predict(active, p)
        q = mixed[np.arange(len(positions)), x].astype(np.float64) / mixed.sum(axis=1, dtype=np.float64)
        bits[positions] = -np.log2(np.maximum(q, lm_codec.MIN_P))
        if m is not None:
            m.update(active, x)
    return bits


def parse_variant(text: str) -> mixing.MixerSettings:
    """"bias_rate=0.1,rate=0.05" -> mix-2 with those fields changed."""
    changes = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, value = part.split("=")
        default = getattr(mixing.MIX_2, key)
        changes[key] = tuple(int(v) for v in value.split("/") if v) if isinstance(default, tuple) \
            else type(default)(value == "True" if isinstance(default, bool) else value)
    return replace(mixing.MIX_2, **changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--text", default="alice29")
    parser.add_argument("--preset", default="compact", choices=list(lm_codec.PRESETS))
    parser.add_argument("--variants", default="bias_rate=0.1;bias_rate=0.3",
                        help="';'-separated changes to mix-2, each 'field=value,...' (tuples as 1/2/3)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default="", help="a .npz file: the recording is read from it when it exists "
                                                     "(same model, text and preset!), else written to it")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir) if args.data_dir else settings.data_dir()
    name, data = read_text(args.text, data_dir)
    loaded = registry.load_causal_lm(args.model)
    s = replace(lm_codec.PRESETS[args.preset], threads=args.threads).for_model(loaded)
    ids, _, _ = lm_codec.TokenMap(loaded.tokenizer).to_tokens(coded_text(data))
    started = time.perf_counter()
    probs, tokens, opening, lengths, how = recorded(loaded, ids, s, Path(args.cache) if args.cache else None)
    print(f"{how}: {len(ids):,} positions x {probs.shape[1]:,} columns in {time.perf_counter() - started:.0f} s",
          flush=True)
    variants = {"model alone": None, "mix-2": mixing.MIX_2}
    variants.update({v: parse_variant(v) for v in args.variants.split(";") if v.strip()})
    rows = []
    for label, mixer in variants.items():
        started = time.perf_counter()
        bits = replay(probs, tokens, opening, lengths, mixer)
        rows.append({"variant": label, "bits": bits, "bpb": bits / len(data), "seconds": time.perf_counter() - started})
        base = rows[1]["bits"] if len(rows) > 1 else bits
        print(f"{label:40s} {bits / len(data):.4f} bits/byte  vs mix-2 {bits / base - 1:+.2%}  "
              f"({rows[-1]['seconds']:.0f} s)", flush=True)
    result = {"model": args.model, "text": name, "bytes": len(data), "tokens": len(ids), "preset": args.preset,
              "columns": int(probs.shape[1]), "opening": opening, "lanes": len(lengths), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    settings.atomic_write_text(Path(args.out), json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

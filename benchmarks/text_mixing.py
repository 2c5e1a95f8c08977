"""The mixing coder's ablation: the model alone, + n-gram, + match, mixer variants; every row a real file,
decoded and compared, all rows of a text from one pass of the model.

For each text, ``lm_codec.compress_many`` codes it once per variant in ONE pass of the model (the model's
probabilities do not depend on the coder, so each file is byte for byte what ``compress`` writes with that
mixer), and ``lm_codec.decompress_many`` decodes every file in one pass, each with its own decoder and
mixer (the model is fed the token all decoders agreed on; a disagreement fails the run), then compares the
bytes with the original. A row's compress/decompress time is the pass's time less the other rows' own
coding time (mixing + range coding), so "mixing cost" = (row time / model-alone time - 1) is measured in
the same run as its baseline, on the same lanes and window. The model alone as one lane (teacher-forced
cross-entropy with the preset's window rule, and with the model's whole context) shows what the lanes cost;
with the whole context the model's probabilities also go through the mixers token by token (``ONE_LANE``):
an estimate of what one lane seeing everything would code, not a file.

    python -m benchmarks.text_mixing [--texts alice29,asyoulik,lcet10:100000] [--held-back wikitext-2/test.txt:60000]
                                     [--preset fast] [--rules fast,fast-primed] [--variants "model alone,mix-2"]
                                     [--adapt 64:3e-4:4] [--lines unwrapped|as-is|both] [--data-dir DIR]

``--rules`` codes each text under each named lane rule (``lm_codec.RULES``: the fast preset's lanes starting
cold, or primed with the text's opening) in the same run, one after the other; ``--variants`` keeps the rows
whose label contains one of the given words. ``--adapt every:lr:blocks`` codes each text under each rule a
second time with online adaptation of the model (``adaptation.py``), in the same run, right after.
``--lines`` codes hard-wrapped texts unwrapped (``line_breaks.py``, what LM Lab does), with their lines as they
are (how every result before unwrapping was made), or both, one after the other.

Texts come from the Canterbury folder under ``--data-dir`` (or the embedded copy); the held-back text is read
from the data folder and never stored in the repository. Results: results/text_mixing.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.text_compression import teacher_forced_bits
from models.compression.text import line_breaks, lm_codec, mixing
from models.core import assets, registry, settings

OUT = Path(__file__).resolve().parent / "results" / "text_mixing.json"

M1 = mixing.MIX_1
VARIANTS: dict[str, mixing.MixerSettings | None] = {
    "model alone": None,
    "+ n-gram (orders 1-4)": replace(M1, match_min=0),
    "+ match (4+ tokens)": replace(M1, orders=()),
    "+ n-gram + match, weights by context (mix-1)": M1,
    "mix-1 + the model's confidence in the context": replace(M1, confidence=True),
    "mix-1 + bias stage, rate 0.05": replace(M1, bias_rate=0.05),
    "mix-1 + bias stage, rate 0.2 (mix-2)": mixing.MIX_2,
    "bias stage rate 0.1 + context bias 0.1 (mix-3, the two-models preset's)": mixing.MIX_3,
    "mix-2 with each token's bias step shrinking, 0.5 / sqrt(1 + n) (mix-4, default)": mixing.MIX_4,
}
# the one-lane whole-context estimate (teacher-forced) runs these through the mixer token by token
ONE_LANE = {"model alone": None, "mix-1": M1, "mix-2": mixing.MIX_2, "mix-4 (default)": mixing.MIX_4}


def read_text(spec: str, data_dir: Path | None) -> tuple[str, bytes]:
    """``name[:bytes]`` of a Canterbury text, or ``folder/file[:bytes]`` under the data folder."""
    path, _, limit = spec.partition(":")
    if "/" in path:
        if data_dir is None:
            raise SystemExit(f"{path} is read from the data folder: pass --data-dir or set LMLAB_DATA_DIR")
        file = data_dir / path
    else:
        canterbury = data_dir / "canterbury" if data_dir and (data_dir / "canterbury").is_dir() else assets.path("canterbury")
        file = canterbury / f"{path}.txt"
    data = file.read_bytes()
    return (f"{path} (first {int(limit):,} B)" if limit else path), (data[:int(limit)] if limit else data)


def _progress(label: str):
    started, last = time.perf_counter(), [0.0]

    def callback(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] > 60 or done == total:
            last[0] = now
            print(f"  {label}: {done:,}/{total:,} tokens, {now - started:.0f} s", file=sys.stderr, flush=True)

    return callback


def run_text(name: str, data: bytes, loaded, codec: lm_codec.CodecSettings, one_lane: bool,
             files: bool = True, variants: dict[str, mixing.MixerSettings | None] = VARIANTS,
             unwrap: bool = True, codings: tuple[str, ...] = (lm_codec.TWO_STEP,)) -> dict:
    text: dict = {"bytes": len(data), "rows": []}
    if files:
        text.update(code_text(name, data, loaded, codec, variants, unwrap, codings))
    if one_lane:
        s = codec.for_model(loaded)
        runner = lm_codec._runner(loaded, s.precision)
        coded = line_breaks.apply(data, line_breaks.plan(data)) if unwrap else data
        ids, _, _ = lm_codec.TokenMap(loaded.tokenizer).to_tokens(coded)
        start, limit = lm_codec._start_id(loaded.tokenizer), lm_codec.context_limit(loaded)
        if files:  # the lanes' cost at the preset's window (the rows above); not needed for the estimate alone
            text["bpb_one_lane_tf"] = teacher_forced_bits(runner, ids, [len(ids)], start, s.window, s.keep) / len(data)
        whole = one_lane_mixed_bits(runner, ids, start, limit, limit // 2, list(ONE_LANE.values()))
        text["bpb_one_lane_full_context_tf"] = {k: b / len(data) for k, b in zip(ONE_LANE, whole, strict=True)}
    return text


def code_text(name: str, data: bytes, loaded, codec: lm_codec.CodecSettings,
              variants: dict[str, mixing.MixerSettings | None] = VARIANTS, unwrap: bool = True,
              codings: tuple[str, ...] = (lm_codec.TWO_STEP,)) -> dict:
    """Every variant's file (under each of ``codings``) from one pass of the model, every file decoded in one
    pass and compared. The first row (the model alone, the first coding) is the baseline."""
    mixers = list(variants.values())
    names = [label if len(codings) == 1 else f"{label}, {CODING_LABELS[c]}" for label in variants for c in codings]
    results = lm_codec.compress_many(data, loaded, mixers, codec, _progress(f"{name} compress"), unwrap=unwrap,
                                     codings=codings)
    decoded = lm_codec.decompress_many([r.blob for r in results], loaded, _progress(f"{name} decompress"))
    base = results[0]
    base_dec = decoded[0][1]
    rows = []
    for label, res, (out, dec_s) in zip(names, results, decoded, strict=True):
        rows.append({"variant": label, "file_bytes": len(res.blob), "bpb_file": 8 * len(res.blob) / len(data),
                     "bpb_cross_entropy": res.cross_entropy_bits / len(data),
                     "vs_model_alone": len(res.blob) / len(base.blob) - 1,
                     "ce_vs_model_alone": res.cross_entropy_bits / base.cross_entropy_bits - 1,
                     "compress_s": res.seconds, "decompress_s": dec_s, "mix_s": res.mix_seconds,
                     "compress_cost": res.seconds / base.seconds - 1, "decompress_cost": dec_s / base_dec - 1,
                     "verified": out == data, "format_version": res.blob[4],
                     "coding": res.header.get("coding", lm_codec.ONE_STEP)})
    h = base.header
    return {"bits_by_position_in_lane": bits_by_position(base, codec), "tokens": h["n_tokens"],
            "lanes": h["lanes"], "opening": h.get("prime", 0), "window": h["window"], "keep": h["keep"],
            "threads": h["threads"], "precision": h["fingerprint"]["precision"],
            "bpb_model_cross_entropy": base.model_bits / len(data), "rows": rows,
            "line_breaks": base.breaks.to_header() | {"soft": base.breaks.soft} if base.breaks else None}


CODING_LABELS = {lm_codec.ONE_STEP: "one step", lm_codec.TWO_STEP: "two steps"}
POSITION_BUCKETS = (0, 10, 50, 100, 300)  # a lane's first tokens, ..., its 300th on


def bits_by_position(result: lm_codec.LMResult, codec: lm_codec.CodecSettings) -> dict[str, float]:
    """The model's mean bits per token by how far into its lane a token is (the opening as its own lane):
    what a lane pays for starting without the text before it."""
    opening, lengths = codec.layout(result.header["n_tokens"])
    where = [*range(opening)] + [k for n in lengths for k in range(n)]
    sums: dict[str, list[float]] = {}
    for pos, token in zip(where, result.tokens, strict=True):
        lo = max(b for b in POSITION_BUCKETS if b <= pos)
        sums.setdefault(str(lo), []).append(token.bits)
    return {f"{lo}+": sum(v) / len(v) for lo, v in sorted(sums.items(), key=lambda kv: int(kv[0]))}


@torch.inference_mode()
def one_lane_mixed_bits(runner, ids: list[int], start: int, window: int, keep: int,
                        mixers: list[mixing.MixerSettings | None]) -> list[float]:
    """Bits of one lane seeing ``window`` tokens (the codec's rebuild rule), teacher-forced: the model's
    probabilities from one forward per segment, fed token by token to each mixer (None: the model alone).
    An estimate of what one lane would code, not a file: a batched forward may differ from the coder's
    step-by-step one in the last float bits."""
    coders = [None if m is None else mixing.Mixer(m, 1) for m in mixers]
    bits = [0.0] * len(mixers)
    pos, ctx = 0, []
    while pos < len(ids):
        seg = ids[pos:pos + window - len(ctx)]
        hidden = runner.body(input_ids=torch.tensor([[start] + ctx + seg[:-1]])).last_hidden_state[0, len(ctx):]
        for lo in range(0, len(seg), 256):  # 256 rows of the vocabulary at a time bound the memory
            probs = torch.softmax(runner.logits(hidden[lo:lo + 256]), dim=-1).numpy()
            for row, x in zip(probs, seg[lo:lo + 256], strict=True):
                for k, mixer in enumerate(coders):
                    p = row[x] if mixer is None else mixer.predict([0], row[None])[0, x]
                    bits[k] -= math.log2(max(float(p), lm_codec.MIN_P))
                    if mixer is not None:
                        mixer.update([0], [x])
        ctx, pos = ctx + seg, pos + len(seg)
        if len(ctx) >= window:
            ctx = ctx[-keep:] if keep else []
    return bits


def table(results: dict) -> str:
    lines = ["| text | coder | file bits/byte | cross-entropy bits/byte | CE vs alone | file vs alone | compress B/s | "
             "decompress B/s | mixing cost (compress / decompress) | verified |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, t in results["texts"].items():
        for r in t["rows"]:
            cost = "baseline" if r is t["rows"][0] else \
                f"{r['compress_cost']:+.1%} / {r['decompress_cost']:+.1%}"
            lines.append(f"| {name} | {r['variant']} | {r['bpb_file']:.3f} | {r['bpb_cross_entropy']:.3f} | "
                         f"{r['ce_vs_model_alone']:+.1%} | {r['vs_model_alone']:+.1%} | {t['bytes'] / r['compress_s']:,.0f} | "
                         f"{t['bytes'] / r['decompress_s']:,.0f} | {cost} | {r['verified']} |")
        if "bpb_one_lane_tf" in t:
            lines.append(f"| {name} | model alone, one lane (teacher-forced cross-entropy, same window) | | "
                         f"{t['bpb_one_lane_tf']:.3f} | | | | | | |")
        if "bpb_one_lane_full_context_tf" in t:
            for label, bpb in t["bpb_one_lane_full_context_tf"].items():
                lines.append(f"| {name} | one lane, whole context, {label} (teacher-forced estimate) | | "
                             f"{bpb:.3f} | | | | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--texts", default="alice29,asyoulik,lcet10:100000")
    parser.add_argument("--held-back", default="wikitext-2/test.txt:60000",
                        help="a text outside the repository, under the data folder ('' to skip)")
    parser.add_argument("--preset", default="fast", choices=list(lm_codec.PRESETS))
    parser.add_argument("--rules", default="", help="lane rules (lm_codec.RULES) to code each text under, in turn "
                                                    "(default: the preset's)")
    parser.add_argument("--variants", default="", help="keep the rows whose label contains one of these "
                                                       "comma-separated words (default: all)")
    parser.add_argument("--adapt", default="", help="every:lr:blocks: each rule again with online adaptation "
                                                    "(CodecSettings.adapt_*), e.g. 64:3e-4:4")
    parser.add_argument("--one-lane", default="alice29", help="texts whose one-lane cross-entropy is measured too")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--one-lane-only", action="store_true",
                        help="only the one-lane whole-context estimate of the --one-lane texts (no files)")
    parser.add_argument("--lines", default="unwrapped", choices=("unwrapped", "as-is", "both"),
                        help="code hard-wrapped texts unwrapped (LM Lab's default), with their lines as they are, or both")
    parser.add_argument("--codings", default="two-step", choices=("two-step", "one-step", "both"),
                        help="code each token in two steps (LM Lab's files), in one step over the whole vocabulary "
                             "(files before format versions 22-28), or both (one step first: the baseline)")
    parser.add_argument("--out", default=str(OUT), help="the JSON file to write")
    args = parser.parse_args()
    codings = {"two-step": (lm_codec.TWO_STEP,), "one-step": (lm_codec.ONE_STEP,),
               "both": (lm_codec.ONE_STEP, lm_codec.TWO_STEP)}[args.codings]
    lines = {"unwrapped": [True], "as-is": [False], "both": [False, True]}[args.lines]
    out = Path(args.out)
    data_dir = Path(args.data_dir) if args.data_dir else settings.data_dir()
    specs = [s for s in args.texts.split(",") if s] + ([args.held_back] if args.held_back else [])
    loaded = registry.load_causal_lm(args.model)
    codec = replace(lm_codec.PRESETS[args.preset], threads=args.threads)
    rules = {r: replace(lm_codec.RULES[r], threads=args.threads) for r in args.rules.split(",") if r} \
        or {args.preset: codec}
    if args.adapt:
        every, lr, blocks = args.adapt.split(":")
        trained = "all blocks" if int(blocks) == 0 else f"top {blocks} blocks"
        rules.update({f"{r}, adapting (every {every} steps, lr {lr}, {trained})":
                      replace(c, adapt_every=int(every), adapt_lr=float(lr), adapt_blocks=int(blocks))
                      for r, c in list(rules.items())})
    words = [w.strip() for w in args.variants.split(",") if w.strip()]
    variants = {k: v for k, v in VARIANTS.items() if not words or any(w in k for w in words)}
    variants = {"model alone": None, **variants}  # the baseline every row is measured against
    lm_codec.compress(b"warm-up: the weights' fingerprint and the bf16 copy are made once", loaded, codec)
    results = {"machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
                           "load_average_at_start": os.getloadavg()},
               "model": args.model, "preset": args.preset, "rules": list(rules), "lines": args.lines,
               "codings": list(codings),
               "mixer_default": mixing.DEFAULT.to_header(),
               "variants": {k: (v.to_header() if v else None) for k, v in variants.items()}, "texts": {}}
    for spec in specs:
        name, data = read_text(spec, data_dir)
        started = time.perf_counter()
        one_lane = spec.split(":")[0] in args.one_lane.split(",")
        if args.one_lane_only and not one_lane:
            continue
        for (rule, rule_codec), unwrap in ((r, u) for r in rules.items() for u in lines):
            key = name if len(rules) == 1 else f"{name}, {rule}"
            key += "" if len(lines) == 1 else (", unwrapped" if unwrap else ", lines as they are")
            results["texts"][key] = run_text(name, data, loaded, rule_codec, one_lane, not args.one_lane_only,
                                             variants, unwrap, codings)
            results["texts"][key].update(held_back=spec == args.held_back, rule=rule, unwrapped=unwrap,
                                         wall_s=time.perf_counter() - started)
            results["machine"]["load_average_after"] = os.getloadavg()
            out.parent.mkdir(parents=True, exist_ok=True)
            settings.atomic_write_text(out, json.dumps(results, indent=1))
            print(table({"texts": {key: results["texts"][key]}}), flush=True)
            one_lane, started = False, time.perf_counter()  # the one-lane estimate does not depend on the rule
    print("\n" + table(results))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

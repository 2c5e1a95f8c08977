"""The mixing coder's ablation: the model alone, + n-gram, + match, mixer variants; every row a real file,
decoded and compared, all rows of a text from one pass of the model.

For each text, ``lm_codec.compress_many`` codes it once per variant in ONE pass of the model (the model's
probabilities do not depend on the coder, so each file is byte for byte what ``compress`` writes with that
mixer), and ``lm_codec.decompress_many`` decodes every file in one pass, each with its own decoder and
mixer (the model is fed the token all decoders agreed on; a disagreement fails the run), then compares the
bytes with the original. A row's compress/decompress time is the pass's time less the other rows' own
coding time (mixing + range coding), so "mixing cost" = (row time / model-alone time - 1) is measured in
the same run as its baseline, on the same lanes and window. The model alone as one lane (teacher-forced
cross-entropy with the preset's window rule, and with the model's whole context) shows what the lanes cost.

    python -m benchmarks.text_mixing [--texts alice29,asyoulik,lcet10:100000] [--held-back wikitext-2/test.txt:60000]
                                     [--preset fast] [--data-dir DIR]

Texts come from the Canterbury folder under ``--data-dir`` (or the embedded copy); the held-back text is read
from the data folder and never stored in the repository. Results: results/text_mixing.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.text_compression import teacher_forced_bits
from models.compression.text import lm_codec, mixing
from models.core import assets, registry, settings

OUT = Path(__file__).resolve().parent / "results" / "text_mixing.json"

VARIANTS: dict[str, mixing.MixerSettings | None] = {
    "model alone": None,
    "+ n-gram (orders 1-4)": replace(mixing.DEFAULT, match_min=0),
    "+ match (4+ tokens)": replace(mixing.DEFAULT, orders=()),
    "+ n-gram + match, one weight vector": replace(mixing.DEFAULT, contexts=False),
    "+ n-gram + match, weights by context, rate 0.1": replace(mixing.DEFAULT, rate=0.1),
    "+ n-gram + match, weights by context, rate 0.3": replace(mixing.DEFAULT, rate=0.3),
}


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


def run_text(name: str, data: bytes, loaded, codec: lm_codec.CodecSettings, one_lane: bool) -> dict:
    names, mixers = list(VARIANTS), list(VARIANTS.values())
    results = lm_codec.compress_many(data, loaded, mixers, codec, _progress(f"{name} compress"))
    decoded = lm_codec.decompress_many([r.blob for r in results], loaded, _progress(f"{name} decompress"))
    base = results[0]
    base_dec = decoded[0][1]
    rows = []
    for label, res, (out, dec_s) in zip(names, results, decoded, strict=True):
        rows.append({"variant": label, "file_bytes": len(res.blob), "bpb_file": 8 * len(res.blob) / len(data),
                     "bpb_cross_entropy": res.cross_entropy_bits / len(data),
                     "vs_model_alone": len(res.blob) / len(base.blob) - 1,
                     "compress_s": res.seconds, "decompress_s": dec_s, "mix_s": res.mix_seconds,
                     "compress_cost": res.seconds / base.seconds - 1, "decompress_cost": dec_s / base_dec - 1,
                     "verified": out == data, "format_version": res.blob[4]})
    h = base.header
    text = {"bytes": len(data), "tokens": h["n_tokens"], "lanes": h["lanes"], "window": h["window"],
            "keep": h["keep"], "threads": h["threads"], "precision": h["fingerprint"]["precision"],
            "bpb_model_cross_entropy": base.model_bits / len(data), "rows": rows}
    if one_lane:
        runner = lm_codec._runner(loaded, h["fingerprint"]["precision"])
        ids, _, _ = lm_codec.TokenMap(loaded.tokenizer).to_tokens(data)
        limit = lm_codec.context_limit(loaded)
        text["bpb_one_lane_tf"] = teacher_forced_bits(runner, ids, [len(ids)], h["start_id"], h["window"],
                                                      h["keep"]) / len(data)
        text["bpb_one_lane_full_context_tf"] = teacher_forced_bits(runner, ids, [len(ids)], h["start_id"], limit,
                                                                   limit // 2) / len(data)
    return text


def table(results: dict) -> str:
    lines = ["| text | coder | file bits/byte | cross-entropy bits/byte | vs model alone | compress B/s | "
             "decompress B/s | mixing cost (compress / decompress) | verified |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, t in results["texts"].items():
        for r in t["rows"]:
            cost = "baseline" if r["variant"] == "model alone" else \
                f"{r['compress_cost']:+.1%} / {r['decompress_cost']:+.1%}"
            lines.append(f"| {name} | {r['variant']} | {r['bpb_file']:.3f} | {r['bpb_cross_entropy']:.3f} | "
                         f"{r['vs_model_alone']:+.1%} | {t['bytes'] / r['compress_s']:,.0f} | "
                         f"{t['bytes'] / r['decompress_s']:,.0f} | {cost} | {r['verified']} |")
        if "bpb_one_lane_tf" in t:
            lines.append(f"| {name} | model alone, one lane (teacher-forced cross-entropy, same window) | | "
                         f"{t['bpb_one_lane_tf']:.3f} | | | | | |")
            lines.append(f"| {name} | model alone, one lane, whole context (teacher-forced) | | "
                         f"{t['bpb_one_lane_full_context_tf']:.3f} | | | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--texts", default="alice29,asyoulik,lcet10:100000")
    parser.add_argument("--held-back", default="wikitext-2/test.txt:60000",
                        help="a text outside the repository, under the data folder ('' to skip)")
    parser.add_argument("--preset", default="fast", choices=list(lm_codec.PRESETS))
    parser.add_argument("--one-lane", default="alice29", help="texts whose one-lane cross-entropy is measured too")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default=str(OUT), help="the JSON file to write")
    args = parser.parse_args()
    out = Path(args.out)
    data_dir = Path(args.data_dir) if args.data_dir else settings.data_dir()
    specs = [s for s in args.texts.split(",") if s] + ([args.held_back] if args.held_back else [])
    loaded = registry.load_causal_lm(args.model)
    codec = replace(lm_codec.PRESETS[args.preset], threads=args.threads)
    lm_codec.compress(b"warm-up: the weights' fingerprint and the bf16 copy are made once", loaded, codec)
    results = {"machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
                           "load_average_at_start": os.getloadavg()},
               "model": args.model, "preset": args.preset, "mixer_default": mixing.DEFAULT.to_header(),
               "variants": {k: (v.to_header() if v else None) for k, v in VARIANTS.items()}, "texts": {}}
    for spec in specs:
        name, data = read_text(spec, data_dir)
        started = time.perf_counter()
        results["texts"][name] = run_text(name, data, loaded, codec, spec.split(":")[0] in args.one_lane.split(","))
        results["texts"][name]["held_back"] = spec == args.held_back
        results["texts"][name]["wall_s"] = time.perf_counter() - started
        results["machine"]["load_average_after"] = os.getloadavg()
        out.parent.mkdir(parents=True, exist_ok=True)
        settings.atomic_write_text(out, json.dumps(results, indent=1))
        print(table({"texts": {name: results["texts"][name]}}), flush=True)
    print("\n" + table(results))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

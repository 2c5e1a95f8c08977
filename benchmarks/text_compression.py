"""Text compression: classic coders vs the language model with arithmetic coding, same run.

For each text (alice29, plrabn12, WikiText-2 test) every classic coder is run and verified.
On the LM texts (alice29 by default) the model compresses the whole file with each codec
preset (fast, compact), the file is decoded and compared, and the table reports bits per
byte, the model's cross-entropy on the same tokens, the coder's overhead, and
compress/decompress speed. The lane cost (on the coded text) compares the cross-entropy of the lane split
against one lane with the same window rule, and against one lane with the model's whole
context (all teacher-forced with one forward per context segment: a measurement, not the
codec).

    python -m benchmarks.text_compression [--lm-texts alice29] [--presets fast,compact] [--limit BYTES]

``--prefixes 2000,4000,...`` instead measures short texts, where each lane's cold start shows: the first
bytes of alice29 coded with the default (fast) preset, timed and verified, and the teacher-forced
cross-entropy of its lane split, of the old rule's split (a lane per 450 tokens) and of one lane, all
with the same window; results in results/text_compression_prefixes.json.
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

from models.compression.text import baselines as text_baselines
from models.compression.text import line_breaks, lm_codec
from models.core import assets, registry, settings

OUT = Path(__file__).resolve().parent / "results" / "text_compression.json"
PREFIXES_OUT = OUT.with_name("text_compression_prefixes.json")


def texts() -> dict[str, bytes]:
    data = settings.data_dir()
    canterbury = data / "canterbury" if data and (data / "canterbury").is_dir() else assets.path("canterbury")
    out = {"alice29": (canterbury / "alice29.txt").read_bytes(), "plrabn12": (canterbury / "plrabn12.txt").read_bytes()}
    if data and (data / "wikitext-2" / "test.txt").is_file():
        out["wikitext2-test"] = (data / "wikitext-2" / "test.txt").read_bytes()
    return out


def coded_text(data: bytes) -> bytes:
    """The bytes the codec gives the model: a hard-wrapped text unwrapped (``line_breaks.py``)."""
    return line_breaks.apply(data, line_breaks.plan(data))


@torch.inference_mode()
def teacher_forced_bits(runner, ids: list[int], lengths: list[int], start: int, window: int, keep: int,
                        opening: int = 0) -> float:
    """Cross-entropy (bits) of the lanes under the codec's window rule, one forward per segment; with an
    ``opening`` (``CodecSettings.layout``) its tokens are coded first as one lane and every lane reads them."""
    total = teacher_forced_bits(runner, ids[:opening], [opening], start, window, keep) if opening else 0.0
    offset = opening
    for n in lengths:
        lane = ids[offset:offset + n]
        offset += n
        pos, ctx = 0, list(ids[:opening])  # ctx: the tokens in context after the start token
        while pos < n:
            seg = lane[pos:pos + window - len(ctx)]  # predicting seg[-1] sees at most window - 1 tokens
            inp = torch.tensor([[start] + ctx + seg[:-1]])
            logp = torch.log_softmax(runner.logits(runner.body(input_ids=inp).last_hidden_state[0, len(ctx):]), -1)
            total -= float(logp[torch.arange(len(seg)), torch.tensor(seg)].sum()) / math.log(2)
            ctx, pos = ctx + seg, pos + len(seg)
            if len(ctx) >= window:  # the codec rebuilds here: start token + the last `keep` tokens
                ctx = ctx[-keep:] if keep else []
    return total


def round_trip(data: bytes, loaded, codec, label: str) -> tuple:
    """Compress, decompress and compare: (result, compress seconds, decompress seconds, verified)."""
    t0 = time.perf_counter()
    res = lm_codec.compress(data, loaded, codec, _progress(f"{label} compress"))
    enc_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ok = lm_codec.decompress(res.blob, loaded, _progress(f"{label} decompress")) == data
    return res, enc_s, time.perf_counter() - t0, ok


def _progress(label: str):
    started, last = time.perf_counter(), [0.0]

    def callback(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] > 30 or done == total:
            last[0] = now
            print(f"  {label}: {done:,}/{total:,} tokens, {now - started:.0f} s", file=sys.stderr, flush=True)

    return callback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--lm-texts", default="alice29", help="comma-separated texts to code with the model")
    parser.add_argument("--limit", type=int, default=0, help="code only the first BYTES of each LM text (0 = all)")
    parser.add_argument("--skip-lane-cost", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads while coding (0 = torch's default)")
    parser.add_argument("--presets", default="fast,compact", help="comma-separated codec presets to run")
    parser.add_argument("--prefixes", default="", help="comma-separated byte counts: measure these prefixes of "
                                                       "alice29 with the default preset instead (see above)")
    args = parser.parse_args()
    if args.prefixes:
        prefixes(args.model, [int(x) for x in args.prefixes.split(",")], args.threads)
        return

    corpus = texts()
    results = {"machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
                           "load_average_at_start": os.getloadavg()}, "classic": {}, "lm": {}}
    print("| text | coder | bytes | compressed | bits/byte | compress s | decompress s | verified |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for name, data in corpus.items():
        rows = text_baselines.run_all(data)
        results["classic"][name] = [r.as_dict() for r in rows]
        for r in rows:
            print(f"| {name} | {r.coder} | {r.original_bytes:,} | {r.compressed_bytes:,} | {r.bpb:.3f} | "
                  f"{r.compress_s:.2f} | {r.decompress_s:.2f} | {r.verified} |")

    loaded = registry.load_causal_lm(args.model)
    runner = lm_codec._runner(loaded, "auto")
    for name in filter(None, args.lm_texts.split(",")):
        data = corpus[name][:args.limit] if args.limit else corpus[name]
        whole = data  # the lane cost is measured on the coded text (a prefix with --limit)
        ids, _, _ = lm_codec.TokenMap(loaded.tokenizer).to_tokens(coded_text(whole))
        one_lane: dict[tuple[int, int], float] = {}  # (window, keep) -> bits of the whole text as one lane
        for preset in filter(None, args.presets.split(",")):
            codec = replace(lm_codec.PRESETS[preset], threads=args.threads).for_model(loaded)
            lm_codec.compress(b"warm-up: the weights' fingerprint and the bf16 copy are made once", loaded, codec)
            res, enc_s, dec_s, ok = round_trip(data, loaded, codec, preset)
            h = res.header
            row = {"preset": preset, "bytes": len(data), "tokens": h["n_tokens"], "lanes": h["lanes"],
                   "window": h["window"], "keep": h["keep"], "threads": h["threads"],
                   "precision": h["fingerprint"]["precision"], "device": h["fingerprint"]["device_type"],
                   "file_bytes": len(res.blob), "header_bytes": len(res.blob) - h["payload_bytes"],
                   "bpb_file": 8 * len(res.blob) / len(data), "bpb_payload": res.payload_bits / len(data),
                   "bpb_cross_entropy": res.cross_entropy_bits / len(data), "coder_overhead": res.overhead,
                   "compress_s": enc_s, "decompress_s": dec_s, "compress_Bps": len(data) / enc_s,
                   "decompress_Bps": len(data) / dec_s, "verified": ok, "load_average_after": os.getloadavg()}
            results["lm"][f"{name}/{preset}"] = row
            _write(results)  # the coding result is kept even if the slower lane-cost pass is interrupted
            print(f"  coded {name} ({preset}): {json.dumps(row)}", file=sys.stderr, flush=True)
            if not args.skip_lane_cost:
                opening, lengths = codec.layout(len(ids))
                t0 = time.perf_counter()
                many = teacher_forced_bits(runner, ids, lengths, h["start_id"], codec.window, codec.keep, opening)
                limit = lm_codec.context_limit(loaded)
                for window, keep in ((codec.window, codec.keep), (limit, limit // 2)):
                    if (window, keep) not in one_lane:
                        one_lane[window, keep] = teacher_forced_bits(runner, ids, [len(ids)], h["start_id"], window, keep)
                same, full = one_lane[codec.window, codec.keep], one_lane[limit, limit // 2]
                row.update(whole_bytes=len(whole), whole_tokens=len(ids), whole_lanes=len(lengths),
                           whole_bpb_lanes_tf=many / len(whole), whole_bpb_one_lane_tf=same / len(whole),
                           whole_bpb_one_lane_full_context_tf=full / len(whole), lane_cost=many / same - 1,
                           cost_vs_full_context=many / full - 1, teacher_forced_s=time.perf_counter() - t0)
            results["lm"][f"{name}/{preset}"] = row
            _write(results)
            print(_lm_line(name, preset, row), flush=True)
    _write(results)
    print(f"\nwrote {OUT.name}")


def prefixes(model: str, sizes: list[int], threads: int) -> None:
    """The lane rule on short texts: size, speed, and what the lanes cost against one lane."""
    loaded = registry.load_causal_lm(model)
    runner = lm_codec._runner(loaded, "auto")
    codec = replace(lm_codec.PRESETS["fast"], threads=threads).for_model(loaded)
    old_rule = replace(codec, short_tokens=0, prime=0)  # before short texts got long lanes: one lane per 450 tokens
    alice = texts()["alice29"]
    lm_codec.compress(b"warm-up: the weights' fingerprint and the bf16 copy are made once", loaded, codec)
    rows = []
    print("| first bytes of alice29 | tokens | one lane (bits/byte) | old rule: lanes, cost | new rule: lanes, cost | "
          "file (bits/byte) | compress | decompress | verified |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for size in sizes:
        data = alice[:size]
        res, enc_s, dec_s, ok = round_trip(data, loaded, codec, f"{size} B")
        h = res.header
        ids, _, _ = lm_codec.TokenMap(loaded.tokenizer).to_tokens(coded_text(data))

        split = {rule: rule.layout(len(ids)) for rule in (codec, old_rule)}
        new_bits, old_bits, one = (teacher_forced_bits(runner, ids, lengths, h["start_id"], codec.window, codec.keep,
                                                       opening)
                                   for opening, lengths in (split[codec], split[old_rule], (0, [len(ids)])))
        new_lanes, old_lanes = len(split[codec][1]), len(split[old_rule][1])
        assert new_lanes == h["lanes"]
        row = {"bytes": size, "tokens": len(ids), "lanes": new_lanes, "old_rule_lanes": old_lanes,
               "bpb_one_lane_tf": one / size, "lane_cost": new_bits / one - 1, "old_rule_lane_cost": old_bits / one - 1,
               "bpb_file": 8 * len(res.blob) / size, "file_bytes": len(res.blob), "compress_s": enc_s,
               "decompress_s": dec_s, "verified": ok, "precision": h["fingerprint"]["precision"],
               "threads": h["threads"], "load_average_after": os.getloadavg()}
        rows.append(row)
        print(f"| {size:,} | {len(ids):,} | {row['bpb_one_lane_tf']:.3f} | {old_lanes}, {row['old_rule_lane_cost']:+.1%} | "
              f"{new_lanes}, {row['lane_cost']:+.1%} | {row['bpb_file']:.3f} | {enc_s:.1f} s | {dec_s:.1f} s | {ok} |",
              flush=True)
        PREFIXES_OUT.parent.mkdir(parents=True, exist_ok=True)
        settings.atomic_write_text(PREFIXES_OUT, json.dumps({"machine": {"cpu_threads": torch.get_num_threads(),
                                                                         "platform": platform.platform()},
                                                             "model": model, "preset": "fast", "rows": rows}, indent=1))


def _lm_line(name: str, preset: str, row: dict) -> str:
    line = (f"\n**{name}, preset {preset}** ({row['bytes']:,} bytes, {row['tokens']:,} tokens, {row['lanes']} lanes, "
            f"window {row['window']}/keep {row['keep']}, {row['precision']} on {row['device']}, {row['threads']} threads): "
            f"file {row['bpb_file']:.3f} bpb ({row['header_bytes']} header bytes), payload {row['bpb_payload']:.3f}, "
            f"cross-entropy {row['bpb_cross_entropy']:.3f} (coder overhead {row['coder_overhead']:+.3%}); "
            f"compress {row['compress_Bps']:,.0f} B/s, decompress {row['decompress_Bps']:,.0f} B/s; "
            f"verified {row['verified']}")
    if "lane_cost" in row:
        line += (f". Teacher-forced: {row['whole_bpb_lanes_tf']:.4f} bpb in {row['whole_lanes']} lanes, "
                 f"{row['whole_bpb_one_lane_tf']:.4f} as one lane with the same window (lane cost "
                 f"{row['lane_cost']:+.2%}), {row['whole_bpb_one_lane_full_context_tf']:.4f} as one lane with the "
                 f"model's whole context ({row['cost_vs_full_context']:+.2%})")
    return line


def _write(results: dict) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    settings.atomic_write_text(OUT, json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

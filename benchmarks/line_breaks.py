"""What a text's line breaks cost the model, and what coding it unwrapped saves (``line_breaks.py``).

For each text, the model's teacher-forced cross-entropy (one lane, the fast preset's 1,024-token window) of
three versions of the same bytes: as it is, with CR LF line ends as LF, and unwrapped (soft line breaks as
spaces too). Bits are counted per byte of the *original* text, so the rows compare directly, and the saving
per soft break is where ``line_breaks.HARD_BITS`` comes from. Each transform is undone and compared first.

    python -m benchmarks.line_breaks [--model smollm2-135m-instruct] [--texts alice29,lcet10,plrabn12,asyoulik]
                                     [--limit 30000] [--data-dir DIR]

Results: results/line_breaks_<model>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from benchmarks.text_compression import teacher_forced_bits
from benchmarks.text_mixing import read_text
from models.compression.text import line_breaks, lm_codec
from models.core import registry, settings

OUT = Path(__file__).resolve().parent / "results"


def versions(data: bytes) -> tuple[dict[str, bytes], line_breaks.LineBreaks | None]:
    """The text as it is, with LF line ends, and unwrapped (as ``plan`` chooses); each checked to come back."""
    plan = line_breaks.plan(data)
    out = {"as it is": data}
    if plan is not None and plan.crlf:
        lf = line_breaks.LineBreaks(crlf=True)
        out["CR LF as LF"] = line_breaks.apply(data, lf)
        assert line_breaks.restore(out["CR LF as LF"], lf) == data
    if plan is not None and plan.width:
        out["unwrapped"] = line_breaks.apply(data, plan)
        assert line_breaks.restore(out["unwrapped"], plan) == data
    return out, plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--texts", default="alice29,lcet10,plrabn12,asyoulik")
    parser.add_argument("--limit", type=int, default=30000, help="the first BYTES of each text (0: all)")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    data_dir = Path(args.data_dir) if args.data_dir else settings.data_dir()
    loaded = registry.load_causal_lm(args.model)
    runner = lm_codec._runner(loaded, "auto")
    tmap, start = lm_codec.TokenMap(loaded.tokenizer), lm_codec._start_id(loaded.tokenizer)
    window = lm_codec.PRESETS["fast"].window
    results = {"machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform()},
               "model": args.model, "window": window, "texts": {}}
    print("| text | version | tokens | cross-entropy (bits per original byte) | vs as it is |")
    print("|---|---|---:|---:|---:|")
    for spec in args.texts.split(","):
        name, data = read_text(f"{spec}:{args.limit}" if args.limit else spec, data_dir)
        texts, plan = versions(data)
        rows = {}
        for label, text in texts.items():
            ids = tmap.to_tokens(text)[0]
            t0 = time.perf_counter()
            bits = teacher_forced_bits(runner, ids, [len(ids)], start, window, window // 2)
            rows[label] = {"bytes": len(text), "tokens": len(ids), "bits": bits, "bpb": bits / len(data),
                           "seconds": time.perf_counter() - t0}
            print(f"| {name} | {label} | {len(ids):,} | {bits / len(data):.4f} | "
                  f"{bits / rows['as it is']['bits'] - 1:+.1%} |", flush=True)
        entry = {"bytes": len(data), "rows": rows,
                 "plan": None if plan is None else plan.to_header() | {"soft": plan.soft}}
        if "unwrapped" in rows:
            before = rows.get("CR LF as LF", rows["as it is"])["bits"]
            entry["bits_saved_per_soft_break"] = (before - rows["unwrapped"]["bits"]) / plan.soft
        results["texts"][name] = entry
        out = OUT / f"line_breaks_{args.model.replace('/', '_')}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        settings.atomic_write_text(out, json.dumps(results, indent=1))
    for name, entry in results["texts"].items():
        if "bits_saved_per_soft_break" in entry:
            print(f"{name}: {entry['plan']['soft']:,} soft breaks at width {entry['plan']['width']}, "
                  f"{len(entry['plan']['flips'])} exceptions; {entry['bits_saved_per_soft_break']:.2f} bits saved per "
                  "soft break")


if __name__ == "__main__":
    main()

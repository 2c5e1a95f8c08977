"""What reading the text's opening first, or longer lanes, would save the compact preset (teacher-forced).

The fast preset's lanes read the text's first 128 tokens before their own piece (``CodecSettings.prime``,
"Primed lanes" in docs/BENCHMARKS.md). The compact preset's lanes are long (about 7,000 tokens) and start
cold. This measures, in one run, the bits of the first ``--tokens`` tokens of every lane but the first
(the one that starts at the text's beginning anyway) with no opening and with each ``--openings`` length
before it: one forward per lane and opening, the codec's start token first, the text unwrapped as the codec
codes it. Model alone, no mixer; the opening's own steps (coded as one lane first) are not counted.

``--before``: the same tokens after that many tokens of the text just before the lane (what a lane that went on
from the one before would have seen): how much a lane boundary costs. ``--layouts``: the whole text's bits
with lanes of about that many tokens (``CodecSettings.lane_tokens``; the rest of the rule ``--rule``'s) after
an opening of ``--prime`` tokens, one forward per lane: what fewer, longer lanes would save, before any mixing.

    python -m benchmarks.lane_openings --model gemma-3-270m --text alice29 --openings 128,512,2048
    python -m benchmarks.lane_openings --text alice29 --tokens 1500 --openings 128,256,512 --before 2000,4000 \
        --layouts 7000,7600,9500 --rule two-models-learned --prime 128
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.text_compression import coded_text
from benchmarks.text_mixing import read_text
from models.compression.text import lm_codec
from models.core import registry, settings

OUT = Path(__file__).parent / "results" / "lane_openings.json"


def lane_bits(runner, start: int, context: list[int], piece: list[int]) -> float:
    """Bits of ``piece`` after the start token and ``context`` (one forward)."""
    with torch.inference_mode():
        inp = torch.tensor([[start] + context + piece[:-1]])
        logits = runner.logits(runner.body(input_ids=inp).last_hidden_state[0, len(context):]).float()
        logp = torch.log_softmax(logits, -1)
        return float(-logp[torch.arange(len(piece)), torch.tensor(piece)].sum()) / math.log(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--text", default="alice29")
    parser.add_argument("--openings", default="128,512,2048")
    parser.add_argument("--tokens", type=int, default=2048, help="tokens measured at the start of each lane")
    parser.add_argument("--before", default="", help="tokens of the text just before each lane, instead of an opening")
    parser.add_argument("--layouts", default="", help="lane lengths (lane_tokens) whose whole-text bits are measured")
    parser.add_argument("--rule", default="compact", help="the rule (lm_codec.RULES) whose lanes are measured")
    parser.add_argument("--prime", type=int, default=128, help="the opening the --layouts lanes read first")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir) if args.data_dir else settings.data_dir()
    name, data = read_text(args.text, data_dir)
    loaded = registry.load_causal_lm(args.model)
    s = replace(lm_codec.RULES[args.rule], prime=0).for_model(loaded)
    runner = lm_codec._runner(loaded, s.precision)
    start = lm_codec._start_id(loaded.tokenizer)
    ids, _, _ = lm_codec.TokenMap(loaded.tokenizer).to_tokens(coded_text(data))
    _, lengths = s.layout(len(ids))
    offsets = [sum(lengths[:i]) for i in range(len(lengths))]
    pieces = [ids[o:o + min(args.tokens, n)] for o, n in zip(offsets[1:], lengths[1:], strict=True)]
    rows = []
    for opening in [0] + [int(x) for x in args.openings.split(",") if x]:
        started = time.perf_counter()
        bits = sum(lane_bits(runner, start, ids[:opening], p) for p in pieces)
        rows.append({"opening": opening, "bits": bits, "seconds": time.perf_counter() - started})
        print(f"opening {opening:5d}: {bits:10.1f} bits over {len(pieces)} lanes' first {args.tokens} tokens "
              f"({bits - rows[0]['bits']:+.1f})", flush=True)
    for before in [int(x) for x in args.before.split(",") if x]:
        started = time.perf_counter()
        bits = sum(lane_bits(runner, start, ids[max(0, o - before):o], p) for o, p in zip(offsets[1:], pieces, strict=True))
        rows.append({"before": before, "bits": bits, "seconds": time.perf_counter() - started})
        print(f"text before {before:5d}: {bits:10.1f} bits ({bits - rows[0]['bits']:+.1f})", flush=True)
    layouts = []
    for lane_tokens in [int(x) for x in args.layouts.split(",") if x]:
        started = time.perf_counter()
        opening, lengths_l = replace(lm_codec.RULES[args.rule], lane_tokens=lane_tokens,
                                      prime=args.prime).for_model(loaded).layout(len(ids))
        bits = lane_bits(runner, start, [], ids[:opening]) if opening else 0.0
        at = opening
        for n in lengths_l:
            bits += lane_bits(runner, start, ids[:opening], ids[at:at + n])
            at += n
        layouts.append({"lane_tokens": lane_tokens, "opening": opening, "lanes": len(lengths_l), "bits": bits,
                        "bits_per_byte": bits / len(data), "seconds": time.perf_counter() - started})
        print(f"lanes of ~{lane_tokens} tokens: {len(lengths_l)} lanes after an opening of {opening}: "
              f"{bits / len(data):.4f} bits/byte", flush=True)
    result = {"model": args.model, "text": name, "bytes": len(data), "tokens": len(ids), "lanes": len(lengths),
              "rule": args.rule, "measured_tokens_per_lane": args.tokens, "rows": rows, "layouts": layouts}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    settings.atomic_write_text(Path(args.out), json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

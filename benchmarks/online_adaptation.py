"""Online adaptation of the model (dynamic evaluation): does it pay on this CPU?

Dynamic evaluation (Krause et al., "Dynamic Evaluation of Neural Sequence Models", ICML 2018, and
"Dynamic Evaluation of Transformer Language Models", 2019; FineZip, 2024, fine-tunes online the same way)
takes a few gradient steps on the text already coded, so the model drifts toward *this* text's names and
style. A coder can do it because the decoder has the same text at the same moment and can take the
same steps.

This measures the gain in cross-entropy and the cost in time before any coder is built around it.
Both sides run in one process on the same windows, chunk by chunk: the text is read in chunks of
``--chunk`` tokens, each scored with the ``--window - --chunk`` tokens before it as context (the model
alone: frozen weights); the adapting copy scores the same chunk with its current weights, then takes
``--steps`` steps of AdamW on that window's loss (text both sides have now seen), training only the last
``--layers`` transformer blocks. Cross-entropy is reported in bits per byte of the text (the tokens'
bits over the bytes they cover), the time as each side's seconds for the whole text.

    python -m benchmarks.online_adaptation [--texts alice29:25000,asyoulik:25000,lcet10:25000]
        [--chunk 256] [--window 1024] [--lr 1e-4,3e-4] [--layers 4] [--steps 1] [--threads 2]

Results: benchmarks/results/online_adaptation.json; the table in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import time
from pathlib import Path

import torch

from benchmarks.common import RESULTS
from benchmarks.text_mixing import read_text
from models.core import assets, settings

LN2 = math.log(2)


def chunk_bits(model, ids: torch.Tensor, start: int, end: int, window: int) -> tuple[float, torch.Tensor]:
    """Bits of tokens ``ids[start:end]`` given up to ``window - (end - start)`` tokens before them, and the
    window's input ids (1, n). The first token of the text has no context: it is scored from the second on."""
    lo = max(0, end - window)
    x = ids[lo:end].unsqueeze(0)
    with torch.no_grad():
        logits = model(x).logits[0, :-1].float()
    logp = torch.log_softmax(logits, -1)
    targets = x[0, 1:]
    per_token = -logp.gather(1, targets.unsqueeze(1)).squeeze(1) / LN2
    first = max(start - lo - 1, 0)
    return float(per_token[first:].sum()), x


def adapt(model, optimizer, x: torch.Tensor, steps: int) -> None:
    """``steps`` optimiser steps on the window's next-token loss (mean over its tokens)."""
    model.train()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = model(x, labels=x).loss
        loss.backward()
        optimizer.step()
    model.eval()


def run_text(name: str, data: bytes, base, tokenizer, args, lrs: list[float]) -> dict:
    ids = torch.tensor(tokenizer(data.decode("utf-8", errors="replace"))["input_ids"])
    adapted = []
    for lr in lrs:
        model = copy.deepcopy(base)
        trainable = [p for block in model.model.layers[-args.layers:] for p in block.parameters()]
        trainable += list(model.model.norm.parameters())
        for p in model.parameters():
            p.requires_grad_(False)
        for p in trainable:
            p.requires_grad_(True)
        adapted.append(dict(lr=lr, model=model, optimizer=torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0),
                            bits=0.0, seconds=0.0, adapt_seconds=0.0))
    alone_bits = alone_s = 0.0
    for start in range(1, len(ids), args.chunk):
        end = min(start + args.chunk, len(ids))
        t0 = time.perf_counter()
        bits, _ = chunk_bits(base, ids, start, end, args.window)
        alone_s += time.perf_counter() - t0
        alone_bits += bits
        for side in adapted:
            t0 = time.perf_counter()
            bits, x = chunk_bits(side["model"], ids, start, end, args.window)
            t1 = time.perf_counter()
            adapt(side["model"], side["optimizer"], x, args.steps)
            side["seconds"] += time.perf_counter() - t0
            side["adapt_seconds"] += time.perf_counter() - t1
            side["bits"] += bits
        print(f"{name}: {end}/{len(ids)} tokens, alone {alone_bits / 8:.0f} B, "
              + ", ".join(f"lr {s['lr']:g}: {s['bits'] / 8:.0f} B" for s in adapted), flush=True)
    n = len(data)
    rows = [dict(side="model alone", bpb=alone_bits / n, seconds=alone_s)]
    for s in adapted:
        rows.append(dict(side=f"+ adaptation (last {args.layers} blocks, lr {s['lr']:g}, {args.steps} step a chunk)",
                         bpb=s["bits"] / n, seconds=s["seconds"], adapt_seconds=s["adapt_seconds"]))
    for r in rows:
        r["vs_alone"] = r["bpb"] / rows[0]["bpb"] - 1
        r["time_vs_alone"] = r["seconds"] / alone_s
    return dict(bytes=n, tokens=len(ids), rows=rows)


def table(results: dict) -> str:
    lines = ["| text | model | cross-entropy bits/byte | vs alone | seconds | time vs alone |",
             "|---|---|---:|---:|---:|---:|"]
    for name, r in results["texts"].items():
        for row in r["rows"]:
            lines.append(f"| {name} | {row['side']} | {row['bpb']:.3f} | {row['vs_alone']:+.1%} | "
                         f"{row['seconds']:.0f} | {row['time_vs_alone']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", default="alice29:25000,asyoulik:25000,lcet10:25000")
    parser.add_argument("--chunk", type=int, default=256, help="tokens scored between two adaptation steps")
    parser.add_argument("--window", type=int, default=1024, help="context plus chunk, in tokens")
    parser.add_argument("--lr", default="1e-4,3e-4", help="AdamW learning rates, comma-separated (one copy each)")
    parser.add_argument("--layers", type=int, default=4, help="trainable transformer blocks, counted from the top")
    parser.add_argument("--steps", type=int, default=1, help="optimiser steps after each chunk")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=str(RESULTS / "online_adaptation.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer  # late: transformers is heavy

    folder = assets.path("smollm2-135m-instruct") / "model"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    data_dir = Path(args.data_dir) if args.data_dir else settings.data_dir()
    lrs = [float(x) for x in args.lr.split(",") if x]
    results = {"texts": {}, "settings": {k: v for k, v in vars(args).items() if k not in ("out", "data_dir")},
               "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "load_average_at_start": os.getloadavg()[0]}}
    for spec in args.texts.split(","):
        name, data = read_text(spec, data_dir)
        results["texts"][name] = run_text(name, data, base, tokenizer, args, lrs)
    results["machine"]["load_average_at_end"] = os.getloadavg()[0]
    print(table(results))
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

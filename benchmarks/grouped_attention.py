"""Time one step of the second model's masked lanes: transformers' SDPA path against grouped_attention.

The two-models preset runs SmolLM2 over six lanes whose key/value cache holds masked positions (tokens that
were tokenized again, and pads), stepping one or two tokens a lane. With a mask and more than one query token,
transformers' SDPA path copies every key/value head once per query head it serves; ``grouped_attention`` folds
the query heads instead. Both bodies are timed here in the same run, interleaved, on the same cache contents,
at several context lengths.

    python -m benchmarks.grouped_attention --contexts 1024,4096,8000 --out benchmarks/results/grouped_attention.json
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch

from models.compression.text import lm_codec
from models.core import registry
from models.engines import grouped_attention, kv_cache

OUT = Path(__file__).parent / "results" / "grouped_attention.json"


def step_seconds(body, context: int, lanes: int, width: int, repeats: int, seed: int = 0) -> float:
    """Median seconds of one ``width``-token step of ``lanes`` lanes over a cache of ``context`` positions (random
    keys and values, as a prefill would leave them; a tenth of the positions masked)."""
    torch.manual_seed(seed)
    config = body.config
    vocab, kv_heads = config.vocab_size, config.num_key_value_heads
    dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    dtype = next(body.parameters()).dtype
    cache = kv_cache.preallocated(config, context + width * (repeats + 3))
    for layer in cache.layers:
        layer.update(torch.randn(lanes, kv_heads, context, dim, dtype=dtype),
                     torch.randn(lanes, kv_heads, context, dim, dtype=dtype))
    live = torch.rand(lanes, context) > 0.1
    times = []
    with torch.inference_mode():
        for k in range(repeats + 2):  # the first two steps warm up (allocations), untimed
            live = torch.cat([live, torch.ones(lanes, width, dtype=torch.bool)], dim=1)
            positions = torch.arange(live.shape[1] - width, live.shape[1]).expand(lanes, width)
            started = time.perf_counter()
            body(input_ids=torch.randint(0, vocab, (lanes, width)), attention_mask=live.long(), position_ids=positions,
                 cache=cache, use_cache=True)
            if k >= 2:
                times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--contexts", default="1024,4096,8000")
    parser.add_argument("--lanes", type=int, default=6)
    parser.add_argument("--width", type=int, default=2, help="tokens a lane appends in a step")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = registry.load_causal_lm(args.model)
    default = lm_codec._runner(loaded, "bf16").body
    grouped = copy.deepcopy(default)
    grouped_attention.use(grouped)
    rows = []
    for context in (int(c) for c in args.contexts.split(",")):
        row = {"context": context}
        for name, body in (("transformers SDPA", default), ("grouped", grouped), ("transformers SDPA again", default)):
            row[name] = step_seconds(body, context, args.lanes, args.width, args.repeats)
        row["speed-up"] = (row["transformers SDPA"] + row["transformers SDPA again"]) / 2 / row["grouped"]
        rows.append(row)
        print(json.dumps(row))
    out = {"model": args.model, "lanes": args.lanes, "width": args.width, "threads": args.threads,
           "precision": "bf16", "platform": platform.platform(), "rows": rows}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

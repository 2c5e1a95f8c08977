"""Two models mixed: what Gemma 3 270M and SmolLM2-135M together would code a text in (cross-entropy, no files).

The two embedded models read text through different tokenizers, so their next-token distributions cannot be
mixed token by token as they are. This measures two ways round that, on recorded teacher-forced passes (the
codec's lanes, ``benchmarks.mixer_replay``), against the first model with the default mixing coder (mix-2):

- **Segment bound.** Both tokenizations end a token at most of the same byte offsets (words, mostly). Between
  two such common boundaries each model gives the segment the product of its tokens' probabilities (each
  with its own mix-2), and a linear mixture of the two segment probabilities is a code length a byte-level
  coder could reach if it could ask each model for any byte string's probability. It cannot cheaply: a
  tokenizer's model must branch wherever a token may end inside the segment. So this is a bound for the
  two-model idea, not a coder.
- **Token-level expert.** What a coder over the first model's tokens can do: where the first model's next
  token starts at a byte offset where the second model's tokenization (of the text so far) also starts a
  token, the second model's next-token distribution is folded onto the first model's tokens, every second-model
  token counting for the longest first-model token its bytes begin with. That is a distribution over the first
  model's tokens; mixed linearly with the first model's (weight ``w`` for the first) and then through mix-2, it
  is what such a coder would pay. Elsewhere the first model codes alone.

    python -m benchmarks.model_ensemble --text alice29 --preset compact --cache-first /tmp/gemma.npz

The second model's pass follows the first model's lanes by bytes: each lane reads the second model's tokens
of the same bytes, one forward per lane (its lanes must fit the second model's context).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.mixer_replay import recorded, replay_bits
from benchmarks.text_compression import coded_text
from benchmarks.text_mixing import read_text
from models.compression.text import lm_codec, mixing, second_opinion
from models.core import registry, settings

OUT = Path(__file__).parent / "results" / "model_ensemble.json"
CHUNK = 512


def token_bytes(tokenizer) -> list[bytes | None]:
    """The bytes of every token id (``second_opinion.token_bytes``)."""
    return second_opinion.token_bytes(tokenizer, lm_codec.TokenMap(tokenizer).pieces_table)


longest_prefix_map = second_opinion.fold_map  # the coder's fold, measured here before it was built


def byte_ends(tokenizer, text: str, ids: list[int]) -> np.ndarray:
    """The byte offset where each token of ``ids`` (the tokenizer's tokens of ``text``) ends: (n,) int64."""
    enc = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
    if list(enc.ids) != list(ids):
        raise ValueError("the tokenizer's offsets are not those of the codec's tokens")
    char_to_byte = np.concatenate([[0], np.cumsum([len(c.encode("utf-8")) for c in text])])
    ends = np.maximum.accumulate(np.array([char_to_byte[e] for _, e in enc.offsets], dtype=np.int64))
    ends[-1] = char_to_byte[-1]
    return ends


@torch.inference_mode()
def folded_second(second, second_ids: list[int], second_ends: np.ndarray, first_ends: np.ndarray,
                  first_probs: np.ndarray, vocab: np.ndarray, fold: np.ndarray, opening: int,
                  lengths: list[int], precision: str) -> tuple[np.ndarray, np.ndarray]:
    """(Q, aligned): Q (n_first, U + 1) float32, the second model's distribution folded onto the first
    model's text columns (``vocab``, then the rest) where ``aligned``; the first model's own row elsewhere."""
    runner = lm_codec._runner(second, precision)
    start = lm_codec._start_id(second.tokenizer)
    first_starts = np.concatenate([[0], first_ends[:-1]])
    second_starts = np.concatenate([[0], second_ends[:-1]])
    fold_t = torch.from_numpy(fold)
    vocab_t = torch.from_numpy(vocab)
    q = first_probs.copy()
    aligned = np.zeros(len(first_ends), dtype=bool)

    def lane(first: int, n: int) -> None:
        lo, hi = first_starts[first], first_ends[first + n - 1]
        opening_end = first_ends[opening - 1] if opening and first else 0  # every lane but the opening reads it
        context = [t for t, e in zip(second_ids, second_ends, strict=True) if e <= opening_end]
        own = np.nonzero((second_starts >= lo) & (second_ends <= hi))[0]
        where = {int(second_starts[k]): len(context) + i for i, k in enumerate(own)}
        seq = [start] + context + [second_ids[k] for k in own]
        hidden = runner.body(input_ids=torch.tensor([seq[:-1]])).last_hidden_state[0]
        js = [j for j in range(first, first + n) if int(first_starts[j]) in where]
        at = torch.tensor([where[int(first_starts[j])] for j in js], dtype=torch.long)
        for c in range(0, len(js), CHUNK):
            p = torch.softmax(runner.logits(hidden[at[c:c + CHUNK]]).float(), -1)
            full = torch.zeros(len(p), int(fold.max()) + 1).index_add_(1, fold_t, p)
            rows = js[c:c + CHUNK]
            q[rows, :-1] = full[:, vocab_t].numpy()
            q[rows, -1] = (1.0 - full[:, vocab_t].sum(-1, dtype=torch.float64)).clamp(min=0).numpy()
            aligned[rows] = True

    if opening:
        lane(0, opening)
    offset = opening
    for n in lengths:
        lane(offset, n)
        offset += n
    return q, aligned


def segment_bits(ends_a: np.ndarray, bits_a: np.ndarray, ends_b: np.ndarray, bits_b: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Each model's bits per segment between the byte offsets where both tokenizations end a token."""
    common = np.intersect1d(ends_a, ends_b)

    def per_segment(ends: np.ndarray, bits: np.ndarray) -> np.ndarray:
        cum = np.concatenate([[0.0], np.cumsum(bits)])
        return np.diff(np.concatenate([[0.0], cum[np.searchsorted(ends, common) + 1]]))

    return per_segment(ends_a, bits_a), per_segment(ends_b, bits_b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--first", default="gemma-3-270m")
    parser.add_argument("--second", default="smollm2-135m-instruct")
    parser.add_argument("--text", default="alice29")
    parser.add_argument("--preset", default="compact", choices=list(lm_codec.PRESETS))
    parser.add_argument("--weights", default="0.5,0.6,0.7,0.8", help="the first model's share in each mixture")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-first", default="", help="a .npz recording of the first model (mixer_replay's)")
    parser.add_argument("--cache-second", default="", help="a .npz recording of the second model")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir) if args.data_dir else settings.data_dir()
    name, data = read_text(args.text, data_dir)
    text = coded_text(data)
    started = time.perf_counter()
    models, runs = {}, {}
    for role, model, cache in (("first", args.first, args.cache_first), ("second", args.second, args.cache_second)):
        loaded = registry.load_causal_lm(model)
        s = replace(lm_codec.PRESETS[args.preset], threads=args.threads).for_model(loaded)
        ids, mode, _ = lm_codec.TokenMap(loaded.tokenizer).to_tokens(text)
        if mode != "text":
            raise SystemExit(f"{model} does not read this input as text")
        probs, tokens, opening, lengths, how = recorded(loaded, ids, s, Path(cache) if cache else None)
        print(f"{model}: {how}, {len(ids):,} tokens in {len(lengths)} lanes", flush=True)
        models[role] = loaded
        runs[role] = {"ids": ids, "probs": probs, "tokens": tokens, "opening": opening, "lengths": lengths,
                      "ends": byte_ends(loaded.tokenizer, text.decode("utf-8"), ids), "precision": s.precision,
                      "alone": replay_bits(probs, tokens, opening, lengths, None),
                      "mix-2": replay_bits(probs, tokens, opening, lengths, mixing.MIX_2)}
    a, b = runs["first"], runs["second"]
    base = float(a["mix-2"].sum())
    rows = [{"coder": f"{m} alone" if k == "alone" else f"{m} + mix-2", "bits": float(r[k].sum())}
            for m, r in ((args.first, a), (args.second, b)) for k in ("alone", "mix-2")]

    weights = [float(w) for w in args.weights.split(",")]
    for second_coder in ("mix-2", "alone"):  # alone: what the second model's own mixing coder adds to the bound
        seg_a, seg_b = segment_bits(a["ends"], a["mix-2"], b["ends"], b[second_coder])
        for w in weights:
            bits = float(-np.log2(w * 2.0 ** -seg_a + (1 - w) * 2.0 ** -seg_b).sum())
            rows.append({"coder": f"segment bound, first + mix-2, second {second_coder}, w={w}", "bits": bits})

    vocab = np.unique(np.asarray(a["ids"]))
    fold = longest_prefix_map(token_bytes(models["second"].tokenizer), token_bytes(models["first"].tokenizer))
    folding = time.perf_counter()
    q, aligned = folded_second(models["second"], b["ids"], b["ends"], a["ends"], a["probs"], vocab, fold,
                               a["opening"], a["lengths"], b["precision"])
    print(f"the second model folded onto the first's tokens in {time.perf_counter() - folding:.0f} s; "
          f"{aligned.mean():.1%} of the first model's tokens start where the second's do", flush=True)
    for w in weights:
        mixed = (w * a["probs"] + (1 - w) * q).astype(np.float32)
        bits = float(replay_bits(mixed, a["tokens"], a["opening"], a["lengths"], mixing.MIX_2).sum())
        rows.append({"coder": f"token-level expert w={w}, then mix-2", "bits": bits})
    for row in rows:
        row["bpb"] = row["bits"] / len(data)
        row["vs first + mix-2"] = row["bits"] / base - 1
        print(f"{row['coder']:55s} {row['bpb']:.4f} bits/byte  {row['vs first + mix-2']:+.2%}", flush=True)
    result = {"first": args.first, "second": args.second, "text": name, "bytes": len(data),
              "coded bytes": len(text), "preset": args.preset, "first tokens": len(a["ids"]),
              "second tokens": len(b["ids"]), "aligned share": float(aligned.mean()),
              "common boundaries": int(len(seg_a)), "seconds": time.perf_counter() - started, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    settings.atomic_write_text(Path(args.out), json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

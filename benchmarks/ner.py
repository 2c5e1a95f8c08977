"""NER benchmark: the app's tagging path vs transformers' pipeline("token-classification"), and CoNLL-2003 F1.

1. Throughput: the same model, the same CoNLL-2003 test sentences, the same batch size and aggregation
   ("first"), both sides timed in this run (best of ``--rounds``). The model is the embedded all-MiniLM-L6-v2
   encoder with a token-classification head built from its config (9 CoNLL labels, head randomly
   initialised with seed 0: fine for speed, meaningless for accuracy), plus any fine-tuned run or local
   token-classification folder in the catalogue. The entity agreement column checks both sides
   return the same entities.
2. Accuracy: seqeval micro F1 on the full CoNLL-2003 test set of every model usable offline, except
   the untrained MiniLM head.

    python -m benchmarks.ner [--sentences 1000] [--rounds 2] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from models.core import assets, registry, settings
from models.core.device import pick
from models.ner import evaluation as ner_eval
from models.ner import tagger

CONLL_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
RESULTS = Path(__file__).resolve().parent / "results" / "ner.json"


def minilm_token_classifier(folder: Path) -> None:
    """Save the embedded MiniLM encoder with a fresh 9-label head as a token-classification folder."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    source = assets.path("all-minilm-l6-v2")
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(
        source, num_labels=len(CONLL_LABELS), id2label=dict(enumerate(CONLL_LABELS)),
        label2id={v: i for i, v in enumerate(CONLL_LABELS)})
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)


def entity_set(items) -> set[tuple]:
    return {(e["entity_group"], e["start"], e["end"]) if isinstance(e, dict) else (e.label, e.start, e.end)
            for e in items}


def throughput(key: str, texts: list[str], rounds: int, batch_size: int) -> dict:
    from transformers import pipeline

    ours = tagger.load(key)
    ours.batch_size = batch_size
    pipe = pipeline("token-classification", model=ours.model, tokenizer=ours.tokenizer,
                    aggregation_strategy="first", device=ours.loaded.device.device)
    # warm-up on both sides, so neither pays for first-call allocation
    ours.tag_many(texts[:batch_size], "first")
    pipe(texts[:batch_size], batch_size=batch_size)
    best_ours = best_pipe = float("inf")
    for _ in range(rounds):  # interleaved, so a busy machine slows both sides alike
        started = time.perf_counter()
        mine = ours.tag_many(texts, "first")
        best_ours = min(best_ours, time.perf_counter() - started)
        started = time.perf_counter()
        theirs = pipe(texts, batch_size=batch_size)
        best_pipe = min(best_pipe, time.perf_counter() - started)
    same = sum(entity_set(m.entities) == entity_set(t) for m, t in zip(mine, theirs, strict=True))
    return {
        "model": registry.get(key, registry.TOKEN_CLASSIFICATION).label,
        "sentences": len(texts),
        "app_sentences_per_s": len(texts) / best_ours,
        "pipeline_sentences_per_s": len(texts) / best_pipe,
        "ratio": best_pipe / best_ours,
        "same_entities": same / len(texts),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=1000, help="CoNLL-2003 test sentences for the speed test")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    if args.device:
        os.environ["LMLAB_DEVICE"] = args.device
    info = pick(args.device)
    sentences, source = ner_eval.load_conll2003("test")
    texts = [s.text_and_spans()[0] for s in sentences[:args.sentences]]

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "minilm-token-classification"
        minilm_token_classifier(folder)
        os.environ["LMLAB_MODEL_DIRS"] = os.pathsep.join(
            filter(None, [os.environ.get("LMLAB_MODEL_DIRS", ""), str(folder)]))
        specs = registry.catalogue(registry.TOKEN_CLASSIFICATION)
        usable = [s for s in specs if registry.availability(s)[0]]
        transformer_keys = [s.key for s in usable if not tagger.is_spacy_folder(s.local_dir())]
        speed = [throughput(key, texts, args.rounds, args.batch_size) for key in transformer_keys]
        speed[0]["note"] = "embedded all-MiniLM-L6-v2 encoder + untrained 9-label head from its config"

        accuracy = []
        for spec in usable:
            if spec.location == str(folder):
                continue  # an untrained head: its F1 says nothing
            report = ner_eval.evaluate(spec.key, "test")
            s = report.scores
            accuracy.append({"model": spec.label, "data": report.source, "sentences": report.sentences,
                             "precision": s.micro["precision"], "recall": s.micro["recall"],
                             "micro_f1": s.micro["f1-score"], "macro_f1": s.macro["f1-score"],
                             "per_type_f1": {t: v["f1-score"] for t, v in s.per_type.items()},
                             "seconds": report.seconds})

    print(f"\nThroughput on {len(texts)} CoNLL-2003 test sentences, batch {args.batch_size}, aggregation first, "
          f"{info.name}\n")
    print("| model | app tagging path (sentences/s) | transformers pipeline (sentences/s) | ratio | same entities |")
    print("|---|---:|---:|---:|---:|")
    for r in speed:
        print(f"| {r['model']} | {r['app_sentences_per_s']:.1f} | {r['pipeline_sentences_per_s']:.1f} | "
              f"{r['ratio']:.2f}x | {r['same_entities']:.1%} |")
    print(f"\nF1 on the full CoNLL-2003 test set ({source})\n")
    print("| model | precision | recall | micro F1 | macro F1 | PER | ORG | LOC | MISC | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in accuracy:
        t = r["per_type_f1"]
        print(f"| {r['model']} | {r['precision']:.4f} | {r['recall']:.4f} | {r['micro_f1']:.4f} | {r['macro_f1']:.4f} | "
              + " | ".join(f"{t.get(k, 0.0):.3f}" for k in ("PER", "ORG", "LOC", "MISC")) + f" | {r['seconds']:.1f} |")
    result = {"device": info.name, "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "throughput": speed, "accuracy": accuracy}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    settings.atomic_write_text(RESULTS, json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

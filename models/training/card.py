"""The model card (README.md) that goes into an exported run: what the model is, how it was trained, how it scored.

Follows the sections of Hugging Face model cards (Mitchell et al. 2019, "Model Cards for Model
Reporting"): base model, training data, hyper-parameters, evaluation, licences.
"""

from __future__ import annotations

import math

from models.core import registry
from models.training.config import CAUSAL_LM, RunConfig

DATA_LICENCES = {
    "wikitext-2": "CC BY-SA 3.0 (text from Wikipedia; Merity et al. 2016)",
    "canterbury": "public domain (Canterbury corpus English texts)",
    "conll2003": "Reuters RCV1 text: research use under the Reuters corpus agreement (Tjong Kim Sang & De Meulder 2003)",
    "twitter-ner": "MIT (English Twitter NER sample)",
    "upload": "the licence of your own uploaded file",
}
BASE_LICENCES = {
    "all-minilm-l6-v2": "Apache-2.0",
    "bert-base-cased": "Apache-2.0",
    "scratch-gpt2": "no pretrained weights (random initialisation); GPT-2 tokenizer MIT",
}


def base_licence(base: str, task: str) -> str:
    if base in BASE_LICENCES:
        return BASE_LICENCES[base]
    if base.startswith("local:"):
        return "see the base model's own folder"
    try:
        return registry.get(base, task).licence or "see the base model's page"
    except Exception:  # a base that is no longer in the catalogue still gets a card
        return "see the base model's page"


def _table(before: dict, after: dict, keys: list[tuple[str, str]]) -> list[str]:
    rows = ["| metric (test split) | before | after |", "|---|---|---|"]
    for key, label in keys:
        if key in before or key in after:
            fmt = lambda v: "–" if v is None else f"{float(v):.4g}"  # noqa: E731
            rows.append(f"| {label} | {fmt(before.get(key))} | {fmt(after.get(key))} |")
    return rows


def model_card(run_id: str, cfg: RunConfig, status: dict, records: list[dict], kind: str) -> str:
    """Markdown for README.md. ``kind``: model (full fine-tune), adapter (LoRA alone) or merged (LoRA folded in)."""
    before = next((r for r in records if r.get("event") == "eval_before"), {})
    after = next((r for r in records if r.get("event") == "eval_after"), {})
    result = status.get("result") or {}
    what = {"model": "a fully fine-tuned model", "adapter": "a LoRA adapter (load it on top of the base model)",
            "merged": "the base model with its LoRA adapter merged into the weights"}[kind]
    task = "next-token prediction (causal LM)" if cfg.task == CAUSAL_LM else "named-entity tagging (token classification)"
    lines = [f"# LM Lab run {run_id}", "", f"This folder holds {what}, fine-tuned with LM Lab for {task}.", "",
             "## Base model and data", "",
             f"- base model: `{cfg.base}` (licence: {base_licence(cfg.base, cfg.task)})",
             f"- training data: `{cfg.dataset}` (licence: {DATA_LICENCES.get(cfg.dataset, 'unknown')})"]
    if cfg.method == "lora":
        lines.append(f"- method: LoRA (peft), rank {cfg.lora_rank}, alpha {cfg.lora_alpha:g}, dropout "
                     f"{cfg.lora_dropout:g}, targets {cfg.lora_targets or 'the architecture default'}")
    else:
        lines.append("- method: full fine-tuning (every weight trained)")
    if result.get("trainable_params"):
        lines.append(f"- trainable parameters: {result['trainable_params']:,} of {result['total_params']:,}")
    if result.get("model_step") is not None:
        lines.append(f"- weights from step {result['model_step']} of {result.get('steps')}"
                     + (" (the lowest validation loss)" if cfg.keep_best else ""))
    lines += ["", "## Hyper-parameters", "", "| setting | value |", "|---|---|"]
    lines += [f"| {name.replace('_', ' ')} | {value} |" for name, value in vars(cfg).items()
              if name not in ("upload",) and not (name.startswith("lora_") and cfg.method != "lora")]
    if cfg.task == CAUSAL_LM:
        for side in (before, after):  # bits per token, the unit the app's learners read; nats beside
            if side.get("loss") is not None:
                side["bits"] = side["loss"] / math.log(2)
        keys = [("perplexity", "perplexity"), ("bits", "loss (bits per token)"), ("loss", "loss (nats per token)"),
                ("bleu", "BLEU"), ("chrf", "chrF")]
    else:
        keys = [("f1", "F1 (micro, entity level, seqeval)"), ("precision", "precision"), ("recall", "recall")]
    lines += ["", "## Evaluation", ""] + _table(before, after, keys)
    lines += ["", "## Licence", "", "The weights inherit the licence of the base model; the training data's licence "
              "may add terms. Check both before you publish this model.", ""]
    return "\n".join(lines)

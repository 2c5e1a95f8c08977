"""Evaluation math: perplexity from losses, sacrebleu BLEU/chrF of continuations, seqeval for tags.

Kept free of models so the tests can check each formula on known inputs.
"""

from __future__ import annotations

import math

import sacrebleu


def perplexity(total_loss: float, n_tokens: int) -> float:
    """exp(mean token cross-entropy in nats); ``total_loss`` is the sum over ``n_tokens`` tokens.

    A NaN loss (a diverged model) gives NaN, not infinity: the model is broken, not merely unsure.
    """
    if n_tokens <= 0:
        raise ValueError("perplexity needs at least one token")
    mean = total_loss / n_tokens
    if math.isnan(mean):
        return math.nan
    return math.exp(mean) if mean < 700 else float("inf")


def bleu_chrf(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu defaults), one reference per hypothesis."""
    if len(hypotheses) != len(references):
        raise ValueError("one reference per hypothesis")
    if not hypotheses:
        return {"bleu": 0.0, "chrf": 0.0}
    return {"bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score,
            "chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score}


def seqeval_report(true_tags: list[list[str]], pred_tags: list[list[str]]) -> dict:
    """Entity-level precision/recall/F1 (micro and macro) and per type, as seqeval computes them."""
    # late: seqeval (scikit-learn, ~2 s) is heavy and only this path needs it
    from seqeval.metrics import classification_report

    if len(true_tags) != len(pred_tags) or any(len(a) != len(b) for a, b in zip(true_tags, pred_tags, strict=True)):
        raise ValueError("every sentence needs one predicted tag per true tag")
    report = classification_report(true_tags, pred_tags, output_dict=True, zero_division=0)
    per_type = {name: {"precision": v["precision"], "recall": v["recall"], "f1": v["f1-score"],
                       "support": int(v["support"])}
                for name, v in report.items() if not name.endswith(" avg")}
    micro, macro = report.get("micro avg", {}), report.get("macro avg", {})
    return {"precision": float(micro.get("precision", 0.0)), "recall": float(micro.get("recall", 0.0)),
            "f1": float(micro.get("f1-score", 0.0)), "macro_f1": float(macro.get("f1-score", 0.0)),
            "per_type": per_type}

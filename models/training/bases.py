"""The base models a run may start from, and how transformers loads each one."""

from __future__ import annotations

from models.core import assets, registry
from models.training.config import CAUSAL_LM


def ner_bases() -> list[tuple[str, str]]:
    return [("all-minilm-l6-v2", "MiniLM-L6 encoder (embedded, BERT architecture, 22.7M; fresh tagging head)"),
            ("bert-base-cased", "BERT base cased (hub, 108M; fresh tagging head)")]


def causal_bases() -> list[tuple[str, str]]:
    bases = [(s.key, s.label) for s in registry.catalogue(CAUSAL_LM)]
    return bases + [("scratch-gpt2", "GPT-2 from scratch (random weights, embedded GPT-2 tokenizer)")]


def pretrained_source(base: str, task: str) -> dict:
    """from_pretrained kwargs for a base key; offline hub ids fail here with a clear message."""
    if base == "all-minilm-l6-v2":
        return {"pretrained_model_name_or_path": str(assets.path("all-minilm-l6-v2")), "local_files_only": True}
    if base == "bert-base-cased":
        spec = registry.ModelSpec(base, base, task, "hub", "google-bert/bert-base-cased")
        return registry.hub_load_kwargs(spec)
    return registry.hub_load_kwargs(registry.get(base, task))

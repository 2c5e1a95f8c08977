"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") through the ``peft`` library.

The base model is frozen; each target module gets a trainable low-rank update B·A (rank r,
scaled by alpha / r). The run folder keeps only the adapter (adapter_model.safetensors +
adapter_config.json, whose ``base_model_name_or_path`` names the base); transformers' own
PEFT integration loads base + adapter wherever a model folder is loaded, and ``merged``
folds the update into the base weights for export (untying the output layer first where an adapted
module shares its weights, so the export equals the served model).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from models.core import adapters
from models.core.errors import InputError
from models.training import bases
from models.training.config import CAUSAL_LM, RunConfig

# The usual targets per architecture (config.model_type); others fall back to peft's own table.
DEFAULT_TARGETS = {
    "gpt2": ["c_attn", "c_proj"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "bert": ["query", "value"],
}
LABELS_FILE = adapters.LABELS_FILE


# Heads that exist but get no adapter, and why (said when a run asks for one).
EXCLUDED = {
    "lm_head": "it is the output layer, which many models tie to the input embeddings (the same weights), so an "
               "adapter there would also change every token's input vector; adapt the blocks (or the input "
               "embeddings) instead",
    "classifier": "it is a NER run's tagging head, which starts from random weights and is trained whole",
}


def adaptable_modules(model) -> list[str]:
    """Sorted short names of the modules LoRA can wrap (Linear, GPT-2's Conv1D, Embedding), heads excluded."""
    from transformers.pytorch_utils import Conv1D  # late: transformers is heavy and only this path needs it

    names = set()
    for name, module in model.named_modules():
        short = name.rsplit(".", 1)[-1]
        if isinstance(module, (torch.nn.Linear, Conv1D, torch.nn.Embedding)) and short not in EXCLUDED:
            names.add(short)
    return sorted(names)


def targets(cfg: RunConfig, model_type: str, valid: list[str]) -> list[str]:
    """The target module names for this run: the form's list, else the architecture's default.

    Raises InputError naming the valid modules when a name does not exist in the model.
    """
    # late: peft is heavy and only this path needs it
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    asked = [t.strip() for t in cfg.lora_targets.split(",") if t.strip()]
    chosen = asked or DEFAULT_TARGETS.get(model_type) or PEFT_DEFAULTS.get(model_type, [])
    if not chosen:
        raise InputError(f"there is no default LoRA target for a {model_type} model: name the modules "
                         f"(valid: {', '.join(valid)})")
    excluded = [t for t in chosen if t in EXCLUDED]
    if excluded:
        raise InputError(" ".join(f"{t} exists but gets no LoRA adapter: {EXCLUDED[t]}." for t in excluded)
                         + f" Valid names: {', '.join(valid)}")
    unknown = [t for t in chosen if t not in valid]
    if unknown:
        raise InputError(f"LoRA target module(s) {', '.join(unknown)} do not exist in {cfg.base} ({model_type}); "
                         f"valid names: {', '.join(valid)}")
    return chosen


def check(cfg: RunConfig) -> list[str]:
    """Refuse LoRA settings that do not fit the base model, before any training process starts.

    Builds the model's skeleton on the meta device (no weights are read), so this takes a second.
    Returns the target module names.
    """
    if cfg.method != "lora":
        return []
    # late: transformers is heavy and only this path needs it
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForTokenClassification

    source = bases.pretrained_source(cfg.base, cfg.task)
    config = AutoConfig.from_pretrained(**source)
    auto = AutoModelForCausalLM if cfg.task == CAUSAL_LM else AutoModelForTokenClassification
    with torch.device("meta"):
        model = auto.from_config(config)
    return targets(cfg, config.model_type, adaptable_modules(model))


def wrap(model, cfg: RunConfig):
    """The base model wrapped for LoRA training: only adapters (and a NER run's fresh head) are trainable."""
    from peft import LoraConfig, TaskType, get_peft_model  # late: peft is heavy and only this path needs it

    chosen = targets(cfg, model.config.model_type, adaptable_modules(model))
    ner = cfg.task != CAUSAL_LM
    config = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                        target_modules=chosen, task_type=TaskType.TOKEN_CLS if ner else TaskType.CAUSAL_LM,
                        # the tagging head starts from random weights: it must be trained, and saved with the adapter
                        modules_to_save=["classifier"] if ner else None)
    return get_peft_model(model, config)


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def is_adapter(folder: Path) -> bool:
    return (Path(folder) / "adapter_config.json").is_file()


def save_labels(model, folder: Path) -> None:
    """A token-classification adapter also records its labels (the base model's config has none)."""
    adapters.save_labels(model.config.id2label, folder)


def base_of(folder: Path) -> str:
    """The base model an adapter folder was trained on (a local folder or a hub id)."""
    return json.loads((Path(folder) / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]


def untie_adapted_output(peft_model) -> bool:
    """Give the output layer its own copy of its weights when an adapted module shares them; returns whether it did.

    A model with tied embeddings (GPT-2's wte, SmolLM2's embed_tokens) uses one matrix as input table and
    output layer. Served as base + adapter, an adapter on the embeddings changes only the input lookup; merging
    B·A into the shared matrix would rewrite the output layer too (a tiny GPT-2: logits 4.89 apart, other
    tokens predicted). Untied first, the merged export computes exactly what the app serves.
    """
    from peft.tuners.lora import LoraLayer  # late: peft is heavy and only this path needs it

    out = peft_model.get_output_embeddings()
    if out is None:
        return False
    shared = any(isinstance(m, LoraLayer) and getattr(m.get_base_layer(), "weight", None) is out.weight
                 for m in peft_model.modules())
    if not shared:
        return False
    out.weight = torch.nn.Parameter(out.weight.detach().clone(), requires_grad=False)
    for config in {id(c): c for c in (peft_model.config, peft_model.config.get_text_config())}.values():
        config.tie_word_embeddings = False
    return True


def merged(folder: Path, task: str, out: Path) -> Path:
    """Base + adapter folded into plain weights (W + B·A·alpha/r), saved as safetensors with the tokenizer."""
    from peft import PeftModel  # late: peft is heavy and only this path needs it

    # late: transformers is heavy and only this path needs it
    from transformers import AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer

    auto = AutoModelForCausalLM if task == CAUSAL_LM else AutoModelForTokenClassification
    base = auto.from_pretrained(base_of(folder), dtype=torch.float32, local_files_only=True,
                                **adapters.label_kwargs(folder))
    peft_model = PeftModel.from_pretrained(base, str(folder))
    untie_adapted_output(peft_model)
    model = peft_model.merge_and_unload()
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(folder)).save_pretrained(str(out))
    return out

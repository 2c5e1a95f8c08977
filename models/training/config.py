"""The run configuration: one dataclass whose field help strings are the form's help texts.

The same dataclass becomes the ``python -m models.training`` command-line flags, so a run
started from the tab and one started by hand on a cluster read identical settings.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields

from models.core.errors import InputError

CAUSAL_LM = "causal-lm"
TOKEN_CLASSIFICATION = "token-classification"
TASKS = (CAUSAL_LM, TOKEN_CLASSIFICATION)


def _f(default, help_text: str, **limits):
    return field(default=default, metadata={"help": help_text, **limits})


@dataclass
class RunConfig:
    task: str = _f(CAUSAL_LM, "causal-lm (predict the next token) or token-classification (NER tags per word)")
    base: str = _f("scratch-gpt2", "the model to start from: a pretrained model, or a GPT-2 with random weights "
                   "trained from scratch")
    dataset: str = _f("canterbury", "wikitext-2, canterbury or upload for causal-lm; conll2003, twitter-ner or "
                      "upload for token-classification")
    upload: str = _f("", "path of an uploaded .txt (causal-lm) or CoNLL file (token-classification)")
    scratch_size: str = _f("tiny", "size of a GPT-2 trained from scratch: tiny (2 layers, 128 wide), "
                           "small (4 x 256) or medium (6 x 384)", choices=("tiny", "small", "medium"))
    learning_rate: float = _f(5e-5, "peak learning rate of AdamW; small models tolerate 1e-4 or more", min=1e-7, max=1e-1)
    epochs: float = _f(1.0, "passes over the training data (ignored when max steps > 0)", min=0.01, max=100)
    max_steps: int = _f(0, "stop after this many optimiser steps; 0 = use epochs", min=0, max=1_000_000)
    batch_size: int = _f(8, "examples per device per step", min=1, max=1024)
    grad_accum: int = _f(1, "gradient accumulation: steps summed before each update (effective batch = batch x accum)",
                         min=1, max=256)
    seq_len: int = _f(128, "tokens per training example (causal-lm: block length; NER: longest sentence kept)",
                      min=8, max=4096)
    warmup_ratio: float = _f(0.1, "fraction of the steps over which the learning rate rises from 0 (then decays "
                             "linearly to 0)", min=0.0, max=0.5)
    weight_decay: float = _f(0.01, "AdamW weight decay", min=0.0, max=1.0)
    seed: int = _f(42, "random seed for initialisation, shuffling and dropout", min=0, max=2**31 - 1)
    eval_steps: int = _f(0, "evaluate on the validation data every N steps (0 = only at the end)", min=0, max=1_000_000)
    eval_samples: int = _f(200, "sentences or blocks used by the evaluation every N steps (the final test uses all)",
                           min=1, max=100_000)
    bleu_samples: int = _f(24, "held-out lines for BLEU/chrF: prompt = first 32 tokens, reference = next 32",
                           min=0, max=2000)
    max_train_samples: int = _f(0, "use only the first N training examples (0 = all), for quick runs", min=0,
                                max=10_000_000)
    test_samples: int = _f(0, "evaluate the final test on only the first N blocks or sentences (0 = the whole test "
                           "split); a CPU takes minutes per 100k tokens with a 135M model", min=0, max=10_000_000)
    eval_before: bool = _f(True, "also evaluate the base model before training, for a before/after comparison")
    bf16: bool = _f(False, "bfloat16 mixed precision (only on GPUs that support it)")
    logging_steps: int = _f(5, "write the training loss to metrics.jsonl every N steps", min=1, max=100_000)
    save_steps: int = _f(50, "save a resumable checkpoint (weights, optimiser, scheduler, random state) every N steps; "
                         "0 = none, and the run cannot be resumed", min=0, max=1_000_000)
    save_total_limit: int = _f(2, "keep only the newest N checkpoints (the best one is kept as well)", min=1, max=100)
    keep_best: bool = _f(False, "at the end, load the checkpoint with the lowest validation loss and export that one "
                         "(needs eval steps, and save steps a multiple of them)")
    early_stopping_patience: int = _f(0, "stop when the validation loss has not improved for N evaluations in a row "
                                      "(0 = off; needs eval steps)", min=0, max=1000)
    method: str = _f("full", "full: train every weight; lora: freeze the model and train small low-rank adapters "
                     "(LoRA, Hu et al. 2021) on the target modules", choices=("full", "lora"))
    lora_rank: int = _f(8, "LoRA rank r: the inner width of each adapter (more = more trainable parameters)",
                        min=1, max=1024)
    lora_alpha: float = _f(16.0, "LoRA alpha: the adapter's output is scaled by alpha / rank", min=0.01, max=10_000)
    lora_dropout: float = _f(0.05, "dropout on the adapter's input during training", min=0.0, max=0.9)
    lora_targets: str = _f("", "comma-separated names of the modules that get adapters; empty = the architecture's "
                           "usual choice (GPT-2: c_attn, c_proj; LLaMA/SmolLM2: q_proj, k_proj, v_proj, o_proj; "
                           "BERT/MiniLM: query, value)")

    def validate(self) -> RunConfig:
        if self.task not in TASKS:
            raise InputError(f"task must be one of {', '.join(TASKS)}, not {self.task!r}")
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if "min" in meta and not (meta["min"] <= value <= meta["max"]):
                raise InputError(f"{f.name.replace('_', ' ')} = {value} is out of range: use {meta['min']:g} to "
                                 f"{meta['max']:g} ({meta['help']})")
            if "choices" in meta and value not in meta["choices"]:
                raise InputError(f"{f.name.replace('_', ' ')} must be one of {', '.join(meta['choices'])}")
        if self.keep_best and not self.eval_steps:
            raise InputError("keep best needs eval steps > 0: the best checkpoint is chosen by validation loss")
        if self.keep_best and (not self.save_steps or self.save_steps % self.eval_steps):
            raise InputError(f"keep best needs a checkpoint at evaluation steps: set save steps to a multiple of "
                             f"eval steps ({self.eval_steps})")
        if self.early_stopping_patience and not self.eval_steps:
            raise InputError("early stopping needs eval steps > 0: it watches the validation loss")
        if self.method == "lora" and self.base == "scratch-gpt2":
            raise InputError("LoRA adapts a pretrained model; a GPT-2 from scratch has random weights to adapt: "
                             "choose full fine-tuning, or a pretrained base")
        if self.dataset == "upload" and not self.upload:
            raise InputError("dataset 'upload' needs a file: upload a .txt or CoNLL file first")
        if self.bf16:
            import torch  # late: torch is heavy and only this path needs it

            if not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()):
                raise InputError("bf16 needs a GPU that supports bfloat16; none is visible here, untick bf16")
        return self

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def cli_args(self) -> list[str]:
        """The flags that reproduce this config (defaults left out, so the command stays short)."""
        args = []
        for f in fields(self):
            value = getattr(self, f.name)
            default = f.default if f.default is not MISSING else None
            if value == default:
                continue
            flag = "--" + f.name.replace("_", "-")
            if isinstance(value, bool):
                args.append(flag if value else "--no-" + f.name.replace("_", "-"))
            else:
                args += [flag, str(value)]
        return args


def help_text(name: str) -> str:
    return RunConfig.__dataclass_fields__[name].metadata["help"]


def limits(name: str) -> tuple[float, float]:
    meta = RunConfig.__dataclass_fields__[name].metadata
    return meta["min"], meta["max"]


DEMO, FULL = "demo", "full"
PRESETS = {DEMO: "Demo: a small sample of the data, about two minutes on a laptop CPU",
           FULL: "Full recipe: the whole data set (an hour or more on a CPU; a GPU is better)"}


def recipe(task: str, preset: str = DEMO) -> RunConfig:
    """The form's starting values per task and preset (``demo`` or ``full``).

    demo: SmolLM2-135M with LoRA adapters (only the adapters train, so a step costs a forward and half a
    backward) on 10 steps of 4 x 64 tokens, evaluated before and after on 8 test blocks and 2 BLEU
    prompts; MiniLM on 240 steps of 8 sentences for NER (test F1 0.0 -> 0.25 on the embedded Twitter
    sample, 0.04 -> 0.74 on CoNLL-2003; docs/BENCHMARKS.md). Both fit two minutes on a 2-core CPU
    (benchmarks/finetune.py --demo). full: the recipes of the README's tables (the NER one reaches test
    F1 >= 0.83 with MiniLM on CoNLL-2003).
    """
    if preset not in PRESETS:
        raise InputError(f"preset must be one of {', '.join(PRESETS)}, not {preset!r}")
    if task == TOKEN_CLASSIFICATION and preset == FULL:
        return RunConfig(task=task, base="all-minilm-l6-v2", dataset="conll2003", learning_rate=1e-4, epochs=3.0,
                         batch_size=32, seq_len=128, logging_steps=20)
    if task == TOKEN_CLASSIFICATION:
        # Two passes over 960 sentences in batches of 8: with 24 steps of 16 (lr 3e-4) the tagger still called
        # every word O on the embedded Twitter sample (test F1 0.0); 2e-3 and 1e-3 in batches of 8 collapse to O too.
        return RunConfig(task=task, base="all-minilm-l6-v2", dataset="conll2003", learning_rate=5e-4, max_steps=240,
                         batch_size=8, seq_len=64, logging_steps=10, max_train_samples=960, eval_samples=64,
                         test_samples=200, save_steps=120)
    if preset == FULL:
        return RunConfig(task=CAUSAL_LM, base="smollm2-135m-instruct", dataset="wikitext-2", learning_rate=5e-5,
                         epochs=1.0, batch_size=8, seq_len=128, logging_steps=5, eval_steps=50, eval_samples=40)
    # LoRA's adapters start at zero and need a larger step than full fine-tuning (5e-4, as in the LoRA table).
    return RunConfig(task=CAUSAL_LM, base="smollm2-135m-instruct", dataset="wikitext-2", method="lora",
                     learning_rate=5e-4, max_steps=10, batch_size=4, seq_len=64, logging_steps=1,
                     max_train_samples=40, test_samples=8, bleu_samples=2, save_steps=5)

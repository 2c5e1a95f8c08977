"""One fine-tuning run: base model + data -> transformers Trainer -> evaluated, saved model.

The loop knows nothing about the UI or the job manager: it reports through the ``FolderReport`` it is
handed (status.json, metrics.jsonl) and stops when its ``Stopper`` says so; those are its only links
to the outside. ``runs.run_in_folder`` is the process around it.
Under ``accelerate launch`` every process runs this file; only the main one writes.
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from models.core import registry
from models.core.errors import Cancelled, InputError, LMLabError, ModelUnavailable
from models.training import bases, lora, metrics, tensorboard_log
from models.training import data as datalib
from models.training.config import CAUSAL_LM, RunConfig
from models.training.run_folder import (
    FolderReport,
    checkpoint_problem,
    checkpoint_step,
    last_checkpoint,
    read_metrics_file,
    trim_metrics,
)

SCRATCH_SIZES = {"tiny": (2, 128, 2), "small": (4, 256, 4), "medium": (6, 384, 6)}  # layers, width, heads
PROMPT_TOKENS = REFERENCE_TOKENS = 32


def load_base(cfg: RunConfig, labels: list[str] | None = None):
    """(model, tokenizer) in fp32 (mixed precision, when asked, is the Trainer's job)."""
    from transformers import (  # late: transformers is heavy and only this path needs it
        AutoModelForCausalLM,
        AutoModelForTokenClassification,
        AutoTokenizer,
        GPT2Config,
        GPT2LMHeadModel,
    )

    torch.manual_seed(cfg.seed)
    try:
        if cfg.task == CAUSAL_LM and cfg.base == "scratch-gpt2":
            tokenizer = registry.gpt2_tokenizer()
            layers, width, heads = SCRATCH_SIZES[cfg.scratch_size]
            config = GPT2Config(n_layer=layers, n_embd=width, n_head=heads, n_positions=max(cfg.seq_len, 128),
                                vocab_size=len(tokenizer))
            model = GPT2LMHeadModel(config)
        elif cfg.task == CAUSAL_LM:
            source = bases.pretrained_source(cfg.base, cfg.task)
            tokenizer = AutoTokenizer.from_pretrained(**source)
            model = AutoModelForCausalLM.from_pretrained(**source, dtype=torch.float32)
        else:
            source = bases.pretrained_source(cfg.base, cfg.task)
            tokenizer = AutoTokenizer.from_pretrained(**source)
            # The encoder's weights are kept; the tagging head starts fresh for this label set.
            model = AutoModelForTokenClassification.from_pretrained(
                **source, dtype=torch.float32, num_labels=len(labels), id2label=dict(enumerate(labels)),
                label2id={t: i for i, t in enumerate(labels)}, ignore_mismatched_sizes=True)
    except OSError as exc:
        raise ModelUnavailable(f"could not load the base model {cfg.base}: {exc}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "is_fast", False) and cfg.task != CAUSAL_LM:
        raise ModelUnavailable(f"{cfg.base} has no fast tokenizer, which word alignment for NER needs")
    return model, tokenizer


# --- datasets ------------------------------------------------------------------------------------


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, items: list[dict]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def lm_blocks(tokenizer, lines: list[str], seq_len: int) -> list[dict]:
    """Concatenate the lines (newline-separated) and cut into blocks of seq_len tokens (run_clm's grouping)."""
    ids: list[int] = []
    for start in range(0, len(lines), 512):  # batched: one huge string would be slow to tokenize
        for row in tokenizer(["\n".join(lines[start:start + 512]) + "\n"], add_special_tokens=False)["input_ids"]:
            ids += row
    n = len(ids) // seq_len
    return [{"input_ids": ids[i * seq_len:(i + 1) * seq_len], "labels": ids[i * seq_len:(i + 1) * seq_len]}
            for i in range(n)]


def ner_features(tokenizer, sentences, label2id: dict[str, int], seq_len: int) -> list[dict]:
    """Word pieces with the word's tag on its first piece and -100 (ignored) on the others."""
    enc = tokenizer([w for w, _ in sentences], is_split_into_words=True, truncation=True, max_length=seq_len)
    items = []
    for i, (_, tags) in enumerate(sentences):
        labels, previous = [], None
        for word in enc.word_ids(i):
            labels.append(-100 if word is None or word == previous else label2id[tags[word]])
            previous = word
        items.append({"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "labels": labels})
    return items


# --- evaluation ----------------------------------------------------------------------------------


Progress = Callable[[str, int, int], None]  # (what is being done, items done, items in all)


def _no_progress(what: str, done: int, total: int) -> None:
    pass


@torch.no_grad()
def lm_perplexity(model, blocks: list[dict], batch_size: int = 8, progress: Progress = _no_progress) -> dict:
    """Perplexity = exp(mean token loss) over all predicted tokens of the blocks; ``loss`` in nats per token.

    ``progress`` hears ("blocks", done, total) before the first batch and after each one.
    """
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    progress("blocks", 0, len(blocks))
    for start in range(0, len(blocks), batch_size):
        ids = torch.tensor([b["input_ids"] for b in blocks[start:start + batch_size]], device=device)
        logits = model(input_ids=ids).logits[:, :-1].float()  # (batch, seq-1, vocab): predicts ids[:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                                 reduction="sum")
        total += loss.item()
        count += ids[:, 1:].numel()
        progress("blocks", min(start + batch_size, len(blocks)), len(blocks))
    return {"loss": total / max(count, 1), "perplexity": metrics.perplexity(total, count), "tokens": count}


def continuation_pairs(tokenizer, lines: list[str], n: int) -> list[tuple[list[int], str]]:
    """Held-out lines with >= 64 tokens: (first 32 token ids, the real next 32 tokens as text).

    Texts wrapped into short lines (the Canterbury books) have few such lines; then
    consecutive 64-token windows of the held-out text fill the rest.
    """
    span = PROMPT_TOKENS + REFERENCE_TOKENS
    pairs = []
    for line in lines:
        ids = tokenizer(line, add_special_tokens=False)["input_ids"]
        if len(ids) >= span:
            pairs.append((ids[:PROMPT_TOKENS], tokenizer.decode(ids[PROMPT_TOKENS:span])))
        if len(pairs) >= n:
            return pairs
    stream = [b["input_ids"] for b in lm_blocks(tokenizer, lines, span)]
    step = max(1, len(stream) // max(1, n - len(pairs)))
    for ids in stream[::step][: n - len(pairs)]:
        pairs.append((ids[:PROMPT_TOKENS], tokenizer.decode(ids[PROMPT_TOKENS:])))
    return pairs


@torch.no_grad()
def lm_bleu(model, tokenizer, pairs, batch_size: int = 8, progress: Progress = _no_progress) -> dict:
    """BLEU and chrF of greedy 32-token continuations against the real continuations."""
    if not pairs:
        return {}
    model.eval()
    device = next(model.parameters()).device
    config = model.config.get_text_config(decoder=True)
    positions = int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 1024))
    # A model with fewer positions than prompt + reference continues only as far as it can see.
    max_new = min(REFERENCE_TOKENS, positions - PROMPT_TOKENS)
    if max_new < 1:
        return {"skipped": f"the model sees {positions} positions; BLEU needs at least {PROMPT_TOKENS + 1}"}
    hyps = []
    progress("continuations for BLEU", 0, len(pairs))
    for start in range(0, len(pairs), batch_size):
        prompts = torch.tensor([p for p, _ in pairs[start:start + batch_size]], device=device)  # all 32 long: no pad
        out = model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                             max_new_tokens=max_new, pad_token_id=tokenizer.pad_token_id)
        hyps += [tokenizer.decode(row[PROMPT_TOKENS:], skip_special_tokens=True) for row in out]
        progress("continuations for BLEU", len(hyps), len(pairs))
    scores = metrics.bleu_chrf(hyps, [ref for _, ref in pairs])
    if max_new < REFERENCE_TOKENS:
        scores["capped"] = f"continuations cut to {max_new} tokens: the model sees {positions} positions"
    return scores | {"example_prompt": tokenizer.decode(pairs[0][0]), "example_output": hyps[0],
                     "example_reference": pairs[0][1]}


@torch.no_grad()
def ner_predict(model, tokenizer, sentences, seq_len: int, batch_size: int = 32,
                progress: Progress = _no_progress) -> list[list[str]]:
    """One predicted tag per word (the first piece's tag; words cut by truncation get O)."""
    model.eval()
    device = next(model.parameters()).device
    id2label = model.config.id2label
    preds = []
    progress("sentences", 0, len(sentences))
    for start in range(0, len(sentences), batch_size):
        batch = sentences[start:start + batch_size]
        enc = tokenizer([w for w, _ in batch], is_split_into_words=True, truncation=True, max_length=seq_len,
                        padding=True, return_tensors="pt")
        best = model(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device)).logits.argmax(-1)
        for i, (words, _) in enumerate(batch):
            tags = ["O"] * len(words)
            seen = set()
            for pos, word in enumerate(enc.word_ids(i)):
                if word is not None and word not in seen:
                    seen.add(word)
                    tags[word] = id2label[int(best[i, pos])]
            preds.append(tags)
        progress("sentences", len(preds), len(sentences))
    return preds


def ner_eval(model, tokenizer, sentences, seq_len: int, progress: Progress = _no_progress) -> dict:
    return metrics.seqeval_report([t for _, t in sentences],
                                  ner_predict(model, tokenizer, sentences, seq_len, progress=progress))


def evaluate(cfg: RunConfig, model, tokenizer, data, split: str, limit: int = 0,
             progress: Progress = _no_progress) -> dict:
    """Test metrics of ``model`` on the first ``limit`` blocks or sentences of ``split`` (0 = all of them)."""
    items = getattr(data, split)
    if cfg.task == CAUSAL_LM:
        blocks = lm_blocks(tokenizer, items, cfg.seq_len) or lm_blocks(tokenizer, items, min(cfg.seq_len, 32))
        result = lm_perplexity(model, blocks[:limit] if limit else blocks, progress=progress)
        if split == "test" and cfg.bleu_samples:
            result |= lm_bleu(model, tokenizer, continuation_pairs(tokenizer, items, cfg.bleu_samples),
                              progress=progress)
        return result
    return ner_eval(model, tokenizer, items[:limit] if limit else items, cfg.seq_len, progress=progress)


def headline(task: str, result: dict) -> str:
    if not result:
        return ""
    if task == CAUSAL_LM:
        bleu = f", BLEU {result['bleu']:.1f}, chrF {result['chrf']:.1f}" if "bleu" in result else ""
        return f"perplexity {result['perplexity']:.2f}{bleu}"
    return f"F1 {result['f1']:.3f} (P {result['precision']:.3f}, R {result['recall']:.3f})"


# --- the run -------------------------------------------------------------------------------------


class Stopper:
    """A cancel request: the run folder's `cancel` file or SIGTERM; shared by all processes of a launch."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.requested = False
        # Outside the training loop (loading, evaluating) SIGTERM interrupts at once; inside it, the
        # callback stops at the end of the step, and while the model is being saved nothing interrupts.
        self.interruptible = True
        try:
            signal.signal(signal.SIGTERM, self._on_signal)
        except ValueError:  # not the main thread (tests calling run() directly)
            pass

    def _on_signal(self, *_) -> None:
        self.requested = True
        if self.interruptible:
            raise Cancelled("cancelled")

    def __call__(self) -> bool:
        if not self.requested and self.folder is not None and (self.folder / "cancel").exists():
            self.requested = True
        return self.requested


def _world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def make_callback(report: FolderReport, stopper: Stopper, tokens_per_step: list[int], save_on_stop: bool = False,
                  time_offset: float = 0.0):
    """The run's TrainerCallback, reporting progress through ``report`` (on the main process) and stopping
    when ``stopper`` says so. ``time_offset``: seconds the run had trained before a resume.

    A NaN or infinite loss means the run diverged: the callback records it (loss null,
    "diverged": true), stops the run without saving that step, and sets ``diverged_at``.
    """
    from transformers import TrainerCallback  # late: transformers is heavy and only this path needs it

    class RunCallback(TrainerCallback):
        """Reports status and metrics on the main process; stops on a cancel request (all processes)."""

        diverged_at: int | None = None
        last_finite_step: int = 0

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.time() - time_offset
            self.last_finite_step = state.global_step
            self.last_status = 0.0
            if state.is_world_process_zero:
                report.status(state="running", step=state.global_step, max_steps=state.max_steps,
                                  started_training=self.t0)

        def on_train_end(self, args, state, control, **kw):
            if state.is_world_process_zero:
                report.status(step=state.global_step, eta=0.0)

        def on_step_end(self, args, state, control, **kw):
            stop = stopper()
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                flag = torch.tensor([1.0 if stop else 0.0])
                torch.distributed.all_reduce(flag)  # everyone stops at the same step, or the launch hangs
                stop = flag.item() > 0
            if stop:
                control.should_training_stop = True
                # A cancelled run keeps a checkpoint of the step it stopped at, so Resume loses nothing.
                control.should_save = save_on_stop
            now = time.time()
            if state.is_world_process_zero and (now - self.last_status > 1.0 or stop):
                self.last_status = now
                elapsed = now - self.t0
                eta = elapsed / state.global_step * (state.max_steps - state.global_step) if state.global_step else None
                report.status(step=state.global_step, max_steps=state.max_steps, epoch=state.epoch,
                                  elapsed=elapsed, eta=eta, tokens_per_s=self._tps(state, elapsed),
                                  cancelling=stop)

        def on_prediction_step(self, args, state, control, eval_dataloader=None, **kw):
            # The validation every N steps: its batches count up in the phase, so the chart's pause is explained.
            self.eval_batches = getattr(self, "eval_batches", 0) + 1
            total = len(eval_dataloader) if eval_dataloader is not None else 0
            if state.is_world_process_zero and (self.eval_batches in (1, total)
                                                           or time.time() - self.last_status > 1.0):
                self.last_status = time.time()
                report.status(phase=f"validation at step {state.global_step}: batch "
                                                f"{self.eval_batches}/{total}")

        def on_evaluate(self, args, state, control, **kw):
            self.eval_batches = 0
            if state.is_world_process_zero:
                report.status(phase="training")

        def _tps(self, state, elapsed: float) -> float:
            seen = state.num_input_tokens_seen or state.global_step * tokens_per_step[0]
            return seen / elapsed if elapsed > 0 else 0.0

        def on_log(self, args, state, control, logs=None, **kw):
            if not logs:
                return
            loss = logs.get("loss", logs.get("eval_loss"))
            diverged = loss is not None and not _finite(loss)
            if diverged and self.diverged_at is None:
                # Every process sees the same (reduced) loss, so all of them stop here together.
                self.diverged_at = state.global_step
                control.should_training_stop = True
                control.should_save = control.should_evaluate = False
            elif "loss" in logs and not diverged:
                self.last_finite_step = state.global_step
            if not state.is_world_process_zero:
                return
            elapsed = time.time() - self.t0
            record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), "time": round(elapsed, 2),
                      "tokens_per_s": round(self._tps(state, elapsed), 1)}
            # NaN is not JSON: a diverged value is written as null with "diverged": true.
            if "loss" in logs:
                record |= {"loss": None if diverged else logs["loss"], "learning_rate": logs.get("learning_rate")}
            elif "eval_loss" in logs:
                record |= {"eval_loss": None if diverged else logs["eval_loss"],
                           "eval_perplexity": None if diverged else metrics.perplexity(logs["eval_loss"], 1)}
                record |= {k[5:]: v for k, v in logs.items() if k in ("eval_f1", "eval_precision", "eval_recall")}
            else:
                return
            if diverged:
                record["diverged"] = True
            report.metrics(record)

    return RunCallback()


def _ner_compute_metrics(id2label):
    def compute(pred):
        best = np.argmax(pred.predictions, axis=-1)
        true, guess = [], []
        for p_row, l_row in zip(best, pred.label_ids, strict=True):
            keep = l_row != -100
            true.append([id2label[int(x)] for x in l_row[keep]])
            guess.append([id2label[int(x)] for x in p_row[keep]])
        report = metrics.seqeval_report(true, guess)
        return {"f1": report["f1"], "precision": report["precision"], "recall": report["recall"]}

    return compute


def train(cfg: RunConfig, folder: Path | None, stopper: Stopper | None = None, resume: bool = False,
          report: FolderReport | None = None) -> dict:
    """Run the whole recipe; returns {before, after, seconds, steps, model_step}. Writes the model and checkpoints
    into ``folder`` on the main process, and reports progress, phases and metrics through ``report`` (by
    default into the folder's status.json and metrics.jsonl). ``resume``: continue from the folder's newest
    checkpoint with the Trainer's own resume (weights, optimiser, scheduler, RNG state and step); metrics
    written after that checkpoint are dropped first.

    Raises LMLabError when the loss becomes NaN (the checkpoints before it are kept).
    """
    from transformers import (  # late: transformers is heavy and only this path needs it
        DataCollatorForTokenClassification,
        EarlyStoppingCallback,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )

    rank, world = _world()
    main = rank == 0
    stopper = stopper or Stopper(folder)
    report = report or FolderReport(folder if main else None)
    data = datalib.load(cfg.task, cfg.dataset, cfg.upload)
    labels = getattr(data, "labels", None)
    model, tokenizer = load_base(cfg, labels)
    if cfg.task == CAUSAL_LM:
        train_items = lm_blocks(tokenizer, data.train, cfg.seq_len)
        eval_items = lm_blocks(tokenizer, data.eval, cfg.seq_len)[: cfg.eval_samples]
        if not train_items:
            raise InputError(f"the training text is shorter than one block of {cfg.seq_len} tokens: lower the "
                             "sequence length or give more text")
        collator = default_data_collator
        tokens_per_step = cfg.seq_len * cfg.batch_size * cfg.grad_accum * world
    else:
        label2id = {t: i for i, t in enumerate(labels)}
        train_items = ner_features(tokenizer, data.train, label2id, cfg.seq_len)
        eval_items = ner_features(tokenizer, data.eval[: cfg.eval_samples], label2id, cfg.seq_len)
        collator = DataCollatorForTokenClassification(tokenizer)
        mean_len = sum(len(x["input_ids"]) for x in train_items) / len(train_items)
        tokens_per_step = int(mean_len * cfg.batch_size * cfg.grad_accum * world)
    if cfg.max_train_samples:
        train_items = train_items[: cfg.max_train_samples]

    checkpoint, time_offset, before = None, 0.0, {}
    if resume:
        checkpoint = last_checkpoint(folder)
        if main:
            time_offset = trim_metrics(folder, checkpoint_step(checkpoint))
            # the steps after the checkpoint are trained again: their old TensorBoard events go, as their metrics
            tensorboard_log.trim(folder / "tensorboard", checkpoint_step(checkpoint))
            recorded = next((r for r in read_metrics_file(folder) if r.get("event") == "eval_before"), None)
            before = {k: v for k, v in (recorded or {}).items() if k != "event"}
    if cfg.method == "lora":
        model = lora.wrap(model, cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    if main:
        report.status(trainable_params=trainable, total_params=total)
    if cfg.eval_before and main and not resume:
        before = evaluate(cfg, model, tokenizer, data, "test", cfg.test_samples,
                          progress=_eval_progress(report, "evaluating the base model on the test split"))
        report.metrics({"event": "eval_before", **_flat(before)})
    if stopper():
        raise Cancelled("cancelled before training started")

    if folder is not None and main:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(folder / "tensorboard")
    evaluating = bool(cfg.eval_steps)
    args = TrainingArguments(
        # The other processes of a launch have no run folder; their per-process RNG files go to a temporary one.
        output_dir=str(folder / "trainer" if folder is not None else Path(tempfile.mkdtemp(prefix="lmlab-rank-"))),
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1, per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=max(cfg.batch_size, 16), gradient_accumulation_steps=cfg.grad_accum,
        warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay, lr_scheduler_type="linear", seed=cfg.seed,
        logging_steps=cfg.logging_steps, eval_strategy="steps" if cfg.eval_steps else "no",
        eval_steps=cfg.eval_steps or None, bf16=cfg.bf16,
        # The same on every process of a launch: saving involves collective calls (only the main one writes).
        save_strategy="steps" if cfg.save_steps else "no", save_steps=cfg.save_steps or 500,
        save_total_limit=cfg.save_total_limit, metric_for_best_model="eval_loss" if evaluating else None,
        greater_is_better=False, load_best_model_at_end=cfg.keep_best,
        report_to=["tensorboard"] if folder is not None else "none",
        logging_nan_inf_filter=False,  # the default replaces a NaN loss by the mean so far: hides a divergence
        disable_tqdm=True, dataloader_num_workers=0,
        # Batches of similar lengths waste little on padding (NER sentences run from 1 to 100+ pieces).
        train_sampling_strategy="group_by_length" if cfg.task != CAUSAL_LM else "random",
        use_cpu=not torch.cuda.is_available(),
    )
    callback = make_callback(report, stopper, [tokens_per_step], save_on_stop=bool(cfg.save_steps),
                             time_offset=time_offset)
    callbacks = [callback]
    if cfg.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    trainer = Trainer(model=model, args=args, train_dataset=ListDataset(train_items),
                      eval_dataset=ListDataset(eval_items) if cfg.eval_steps else None, data_collator=collator,
                      processing_class=tokenizer, callbacks=callbacks,
                      compute_metrics=_ner_compute_metrics(model.config.id2label) if cfg.task != CAUSAL_LM else None)
    _phase(report, f"training (resumed from {checkpoint.name})" if checkpoint else "training")
    t0 = time.time()
    stopper.interruptible = False
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    stopper.interruptible = True
    seconds = time.time() - t0
    if callback.diverged_at is not None:
        raise LMLabError(_diverged(folder, callback.diverged_at, callback.last_finite_step))
    if stopper():
        raise Cancelled(f"cancelled at step {trainer.state.global_step}")
    state = trainer.state
    best_step = state.best_global_step if evaluating else None
    model_step = best_step if cfg.keep_best and best_step else state.global_step

    final_model = trainer.accelerator.unwrap_model(trainer.model)
    after = {}
    if main:
        after = evaluate(cfg, final_model, tokenizer, data, "test", cfg.test_samples,
                         progress=_eval_progress(report, "evaluating the fine-tuned model on the test split"))
        report.metrics({"event": "eval_after", "step": state.global_step, "model_step": model_step, **_flat(after)})
    if folder is not None:
        stopper.interruptible = False
        _save(trainer, tokenizer, folder, main)
        if main:  # a finished run is not resumed: its checkpoints (optimiser state is 2x the weights) go
            for path in (folder / "trainer").glob("checkpoint-*"):
                shutil.rmtree(path, ignore_errors=True)
    return {"before": before, "after": after, "train_seconds": seconds, "steps": state.global_step,
            "model_step": model_step, "best_step": best_step, "trainable_params": trainable, "total_params": total,
            "peak_memory_bytes": _peak_memory(),
            # CPU time of the whole run so far (all its threads): on a busy shared machine, what it cost
            "cpu_seconds": time.process_time(),
            "best_eval_loss": state.best_metric if best_step else None}


def _peak_memory() -> int:
    """Peak bytes so far: GPU memory allocated by torch on CUDA, else the process's peak resident memory."""
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _diverged(folder: Path | None, step: int, last_good: int) -> str:
    """The failure message of a NaN loss; checkpoints saved after the last finite loss are removed."""
    kept = None
    if folder is not None and _world()[0] == 0:
        for path in (folder / "trainer").glob("checkpoint-*"):
            if checkpoint_step(path) > last_good:
                shutil.rmtree(path, ignore_errors=True)  # its weights may already hold NaNs
            elif not checkpoint_problem(path):
                kept = max(kept or 0, checkpoint_step(path))
    note = f" (the last good checkpoint, step {kept}, is kept)" if kept else ""
    return f"the loss became NaN at step {step}; lower the learning rate{note}"


def _flat(result: dict) -> dict:
    return {k: v for k, v in result.items() if not isinstance(v, dict)} | (
        {"per_type": result["per_type"]} if "per_type" in result else {})


def _phase(report: FolderReport, text: str) -> None:
    report.status(phase=text)


def _eval_progress(run_report: FolderReport, title: str) -> Progress:
    """A Progress that writes "<title>: 16/64 blocks, about 40 s left" as the run's phase (at most once a second,
    and at every start and end of a stage)."""
    started: dict[str, float] = {}
    last = [0.0]

    def report(what: str, done: int, total: int) -> None:
        now = time.time()
        t0 = started.setdefault(what, now)
        if 0 < done < total and now - last[0] < 1.0:
            return
        last[0] = now
        left = f", about {_seconds((now - t0) / done * (total - done))} left" if 0 < done < total else ""
        _phase(run_report, f"{title}: {done}/{total} {what}{left}")

    return report


def _seconds(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _save(trainer, tokenizer, folder: Path, main: bool) -> None:
    """safetensors + config + tokenizer into a temporary folder, renamed to model/ when complete."""
    tmp = folder / ".model.tmp"
    if main and tmp.exists():
        shutil.rmtree(tmp)
    trainer.save_model(str(tmp))  # every process calls it (sharded setups gather here); main writes
    if main:
        tokenizer.save_pretrained(str(tmp))
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        if hasattr(unwrapped, "peft_config") and getattr(unwrapped, "modules_to_save", None):
            lora.save_labels(unwrapped, tmp)  # a tagging adapter: its base needs the label set to be rebuilt
        (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle; the run's config.json says the same
        if not any(tmp.glob("*.safetensors")):
            raise LMLabError("the model was not written as safetensors")
        final = folder / "model"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)


def summary(cfg: RunConfig, result: dict) -> str:
    """The run's one-line outcome: the test metrics and the step the saved model comes from."""
    text = headline(cfg.task, result["after"])
    step = result.get("model_step")
    if step is not None:
        best = " (lowest validation loss)" if cfg.keep_best and step == result.get("best_step") else ""
        text += f" · model from step {step}{best}"
    return text


def leave_a_core() -> None:
    """On a CPU, train on every core but one: the app beside the run (a class pressing Generate) keeps a core,
    and torch's threads, when more of them run than there are free cores, wait for each other at every
    operation instead of working. OMP_NUM_THREADS, when set, decides instead."""
    if not torch.cuda.is_available() and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - 1))

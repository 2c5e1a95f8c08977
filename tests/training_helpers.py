"""Helpers shared by the fine-tuning tests: a small real text, a tiny-run config, waiting for states."""

from __future__ import annotations

import time
from pathlib import Path

from models.core import assets
from models.training import runs
from models.training.config import RunConfig


def small_text(tmp_path: Path, n_bytes: int = 12_000) -> Path:
    """The start of Alice in Wonderland (embedded Canterbury asset) as an uploaded .txt."""
    text = (assets.path("canterbury") / "alice29.txt").read_text(encoding="latin-1")[:n_bytes]
    path = tmp_path / "alice.txt"
    path.write_text(text, encoding="utf-8")
    return path


def tiny_config(upload: Path, **changes) -> RunConfig:
    """A 2-layer GPT-2 from scratch, 32-token blocks: a run takes seconds on a CPU."""
    values = dict(task="causal-lm", base="scratch-gpt2", dataset="upload", upload=str(upload), scratch_size="tiny",
                  seq_len=32, batch_size=4, max_steps=6, logging_steps=1, eval_steps=3, eval_samples=4,
                  bleu_samples=2, learning_rate=1e-3)
    values.update(changes)
    return RunConfig(**values)


def wait_until(run_id: str, predicate, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs.reap()
        st = runs.status(run_id)
        if predicate(st):
            return st
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} never reached the expected state; last status: {runs.status(run_id)}")

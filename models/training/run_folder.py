"""The files of one run folder (status.json, metrics.jsonl, the Trainer's checkpoints), read and written.

What the trainer and the job manager (``runs``) share; neither the trainer nor this module knows about
processes or queues. The folder's layout is described in ``runs``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from safetensors import safe_open

from models.core import settings
from models.core.errors import InputError


def read_json(path: Path, default):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def write_status(folder: Path, **changes) -> dict:
    status = read_json(folder / "status.json", {})
    status.update(changes, updated=time.time())
    settings.atomic_write_text(folder / "status.json", json.dumps(status, indent=2))
    return status


def append_metrics(folder: Path, record: dict) -> None:
    # One short line per append: readers see whole lines (a torn last line is skipped on read).
    with open(folder / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def read_metrics_file(folder: Path) -> list[dict]:
    records = []
    try:
        # errors="replace": a damaged byte spoils its own line (skipped below), not the whole chart
        text = (folder / "metrics.jsonl").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return records
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # the line being written right now
        if isinstance(record, dict):
            records.append(record)
    return records


def checkpoint_step(path: Path) -> int:
    try:
        return int(path.name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def checkpoint_problem(path: Path) -> str:
    """Why a Trainer checkpoint folder cannot be resumed from ("" when it looks complete and readable).

    The Trainer writes trainer_state.json last, so its presence marks a finished save; the weights'
    safetensors header and the optimiser file are checked too (a truncated copy is caught here, not
    as a traceback in the resumed process).
    """
    state = read_json(path / "trainer_state.json", None)
    if not isinstance(state, dict) or "global_step" not in state:
        return f"{path.name} has no readable trainer_state.json (the save was interrupted or the file is damaged)"
    weights = [p for p in (path / "model.safetensors", path / "adapter_model.safetensors") if p.is_file()]
    if not weights:
        return f"{path.name} has no model weights"
    try:
        with safe_open(str(weights[0]), "pt") as fh:
            list(fh.keys())
    except Exception as exc:  # safetensors raises its own error types for a damaged header
        return f"{path.name}/{weights[0].name} is damaged ({exc})"
    if not (path / "optimizer.pt").is_file() or (path / "optimizer.pt").stat().st_size == 0:
        return f"{path.name} has no optimiser state"
    return ""


def last_checkpoint(folder: Path) -> Path:
    """The newest complete checkpoint of a run; InputError (saying what is wrong) when there is none."""
    found = sorted((p for p in (folder / "trainer").glob("checkpoint-*") if p.is_dir()), key=checkpoint_step)
    problems = []
    for path in reversed(found):
        problem = checkpoint_problem(path)
        if not problem:
            return path
        problems.append(problem)
    why = "; ".join(problems) if problems else "it saved no checkpoint (save steps is 0, or it stopped before the " \
        "first save)"
    raise InputError(f"run {folder.name} cannot be resumed: {why}. Start it over with the same settings instead "
                     "(the Start over button, or start a new run).")


def trim_metrics(folder: Path, step: int) -> float:
    """Drop the metrics written after ``step`` (the resumed run writes them again); returns the run's time then.

    Keeps the base model's evaluation; drops the final evaluation of an earlier attempt.
    """
    kept, elapsed = [], 0.0
    try:
        lines = (folder / "metrics.jsonl").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if record.get("event") == "eval_before" or ("event" not in record and record.get("step", 0) <= step):
            kept.append(line)
            elapsed = max(elapsed, float(record.get("time", 0.0)))
    settings.atomic_write_text(folder / "metrics.jsonl", "".join(x + "\n" for x in kept))
    return elapsed


class FolderReport:
    """The trainer's report to its run folder: ``status(**changes)`` merges into status.json,
    ``metrics(record)`` appends a line to metrics.jsonl. ``None``: a process that writes nothing
    (the other processes of a multi-process launch)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def status(self, **changes) -> None:
        if self.folder is not None:
            write_status(self.folder, **changes)

    def metrics(self, record: dict) -> None:
        if self.folder is not None:
            append_metrics(self.folder, record)

"""Run folders and the job manager: launch a run as a subprocess, queue, cancel, list, detect dead runs.

A run lives in ``$LMLAB_HOME/runs/<id>/``:
    config.json    the RunConfig
    status.json    state (queued/running/finished/failed/cancelled), pid, progress, error, results
    metrics.jsonl  one JSON object per log/eval event (step, epoch, loss, learning rate, tokens/s, time)
    log.txt        the subprocess's stdout/stderr (for a failure's details)
    model/         the final model: safetensors + tokenizer + config, renamed into place when complete
                   (a LoRA run: the adapter alone, adapter_model.safetensors + adapter_config.json)
    trainer/       the Trainer's resumable checkpoints (checkpoint-<step>/), the newest few kept
    tensorboard/   TensorBoard event files (`tensorboard --logdir $LMLAB_HOME/runs` shows every run)
    cancel         present when the user asked the run to stop

Everything the UI shows comes from these files, so a reload, a closed tab or an app restart
loses nothing: the UI reads the folder again.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import psutil

from models.core import policy, registry, settings
from models.core.device import pick
from models.core.errors import Cancelled, InputError, LMLabError
from models.training import bases, lora, train
from models.training.config import CAUSAL_LM, RunConfig
from models.training.run_folder import (
    checkpoint_step,
    last_checkpoint,
    read_json,
    read_metrics_file,
    write_status,
)

ACTIVE = ("queued", "running")
DONE = ("finished", "failed", "cancelled")
ROOT_DIR = Path(__file__).resolve().parent.parent.parent  # the checkout, so `-m models.training` resolves


def runs_root() -> Path:
    root = settings.home() / "runs"
    root.mkdir(parents=True, exist_ok=True)
    return root


def check_run_id(run_id: object) -> str:
    """The one check of a run id, for every entry point (UI, API, CLI); returns it or raises InputError.

    Ids name a folder under ``runs_root()``: letters, digits, '-' and '_' only (at most 80), so
    '../escaped', an absolute path or a hidden name can never be joined into a path.
    """
    if (not isinstance(run_id, str) or not run_id or len(run_id) > 80 or run_id[0] in "-_"
            or not all(c.isascii() and (c.isalnum() or c in "-_") for c in run_id)):
        raise InputError(f"{run_id!r} is not a run id: use letters, digits, '-' and '_' (at most 80), "
                         f"no folders or paths")
    return run_id


def run_folder(id_or_folder: str) -> Path:
    """The run folder named by an id, or by a path that is a run folder directly under ``runs_root()``.

    What the CLI's ``--resume`` and ``--run-dir`` take; anything else (another folder, '..') is refused.
    """
    candidate = Path(id_or_folder)
    if len(candidate.parts) > 1 or candidate.is_absolute():
        if candidate.resolve().parent != runs_root().resolve():
            raise InputError(f"{id_or_folder!r} is not a run folder of this app (runs live in {runs_root()})")
        id_or_folder = candidate.name
    return run_dir(id_or_folder)


def run_dir(run_id: str) -> Path:
    # Ids come from the UI, the API and the CLI: never join an arbitrary string into a path.
    folder = runs_root() / check_run_id(run_id)
    if not (folder / "config.json").is_file():
        raise InputError(f"there is no run {run_id!r}")
    return folder


def read_metrics(run_id: str) -> list[dict]:
    return read_metrics_file(run_dir(run_id))


def read_config(run_id: str) -> RunConfig:
    return RunConfig.from_dict(read_json(run_dir(run_id) / "config.json", {}))


# --- liveness ---------------------------------------------------------------------------------


def _alive(pid: int | None, run_id: str) -> bool:
    """True when ``pid`` is a live training process of this run (a recycled pid does not count)."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return run_id in " ".join(proc.cmdline())
    except Exception:
        return False


def status(run_id: str) -> dict:
    """The run's status; a queued/running run whose process is gone becomes failed (killed from outside)."""
    folder = run_dir(run_id)
    st = read_json(folder / "status.json", {"state": "failed", "error": "status.json is missing or unreadable"})
    st["id"] = run_id
    if st.get("state") in ACTIVE and not _alive(st.get("pid"), run_id):
        # Re-read: the run may have finished between the two reads.
        st = read_json(folder / "status.json", st) | {"id": run_id}
        if st.get("state") in ACTIVE and not _alive(st.get("pid"), run_id):
            tail = _log_tail(folder)
            st = write_status(folder, state="failed", error="the training process stopped unexpectedly (killed from "
                              "outside, out of memory, or the machine restarted)" + (f": {tail}" if tail else ""))
            st["id"] = run_id
    if st.get("state") == "queued":
        st["queue_position"] = _queue_position(run_id, st)
    return st


def _log_tail(folder: Path) -> str:
    try:
        lines = [x for x in (folder / "log.txt").read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    errors = [x for x in lines if "Error" in x or "error" in x]
    return (errors or lines or [""])[-1][-300:]


def list_runs() -> list[dict]:
    """All runs, newest first, with their status (dead ones marked failed)."""
    out = []
    for folder in runs_root().iterdir():
        if folder.is_dir() and (folder / "config.json").is_file():
            try:
                st = status(folder.name)
                st["config"] = read_json(folder / "config.json", {})
                out.append(st)
            except LMLabError:
                continue
    return sorted(out, key=lambda s: s.get("created", 0), reverse=True)


# --- the queue: one run at a time per device ----------------------------------------------------


def device_key() -> str:
    return str(pick().device).replace(":", "-")


def _queued(device: str) -> list[dict]:
    entries = []
    for folder in runs_root().iterdir():
        st = read_json(folder / "status.json", {})
        if st.get("state") in ACTIVE and st.get("device") == device and _alive(st.get("pid"), folder.name):
            entries.append(st | {"id": folder.name})
    return sorted(entries, key=lambda s: (s.get("created", 0), s["id"]))


def _queue_position(run_id: str, st: dict) -> int:
    """How many runs (running or queued earlier) are ahead of this one on its device."""
    ids = [s["id"] for s in _queued(st.get("device", ""))]
    return ids.index(run_id) if run_id in ids else 0


class DeviceSlot:
    """An exclusive lock on the device, held for the whole run; the OS drops it if the process dies."""

    def __init__(self, device: str) -> None:
        self.path = runs_root() / f".device-{device}.lock"
        self.fh = None

    def try_acquire(self) -> bool:
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return False
        self.fh = fh
        return True

    def release(self) -> None:
        if self.fh:
            self.fh.close()
            self.fh = None


def wait_for_slot(folder: Path, device: str, should_stop) -> DeviceSlot | None:
    """Block until this run is first in the queue and the device is free; None if cancelled meanwhile."""
    slot = DeviceSlot(device)
    while True:
        if should_stop():
            return None
        ahead = [s for s in _queued(device) if s["id"] != folder.name and
                 (s.get("created", 0), s["id"]) < (read_json(folder / "status.json", {}).get("created", 0), folder.name)]
        if not ahead and slot.try_acquire():
            return slot
        write_status(folder, queue_position=len(ahead) or 1)  # the device is busy: someone is ahead
        time.sleep(1.0)


# --- launching and cancelling --------------------------------------------------------------------


def new_run_dir(config: RunConfig, run_id: str | None = None) -> Path:
    run_id = check_run_id(run_id) if run_id is not None else time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
    folder = runs_root() / run_id
    try:
        folder.mkdir(parents=True, exist_ok=False)
        settings.atomic_write_text(folder / "config.json", config.to_json())
        write_status(folder, state="queued", created=time.time(), device=device_key(), step=0, max_steps=0)
    except FileExistsError as exc:
        raise InputError(f"a run named {run_id} already exists") from exc
    except OSError as exc:
        raise LMLabError(f"cannot write the run folder {folder}: {exc.strerror or exc} (disk full or not "
                         f"writable? free some space or start the app with another --home)") from exc
    return folder


def check(config: RunConfig) -> RunConfig:
    """Ranges, the base model's name, then the public-hosting limits (bounded runs, one at a time; no-op on
    your own machine).

    Reads no data and loads no model, so it runs first. Raises InputError naming the setting, or
    ModelUnavailable for a base that is not offered.
    """
    config.validate()
    offered = bases.causal_bases() if config.task == CAUSAL_LM else bases.ner_bases()
    if config.base not in {key for key, _ in offered}:
        registry.get(config.base, config.task)  # a local: folder (refused in public mode), else "unknown model"
    policy.check_training(config, active_runs=sum(st.get("state") in ACTIVE for st in list_runs()))
    lora.check(config)  # an unknown target module is refused here, with the valid names (reads the config only)
    return config


def start(config: RunConfig) -> str:
    """Check, create the run folder and launch ``python -m models.training --run-dir ...`` in the background."""
    check(config)
    folder = new_run_dir(config)
    _launch(folder, ["--run-dir", str(folder)])
    return folder.name


def _launch(folder: Path, args: list[str], **status_changes) -> None:
    """Start the training process; its pid goes into status.json in the same write as ``status_changes``."""
    log = open(folder / "log.txt", "ab")
    try:
        proc = subprocess.Popen([sys.executable, "-m", "models.training", *args],
                                cwd=ROOT_DIR, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                start_new_session=True)  # survives the app's Ctrl-C and a closed tab
    finally:
        log.close()
    write_status(folder, pid=proc.pid, **status_changes)
    _children.append(proc)


# --- the training process ---------------------------------------------------------------------


def run_in_folder(folder: Path | None, cfg: RunConfig, resume: bool = False) -> int:
    """The subprocess entry: queue for the device, train, record the outcome. Exit code 0 unless failed.

    ``folder`` is None on the other processes of a multi-machine launch: they train but write nothing.
    """
    train.leave_a_core()
    stopper = train.Stopper(folder)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if folder is None:
        rank = max(rank, 1)
    slot = None
    if rank == 0:
        # listening: SIGTERM is now a clean stop (before this, the cancel file alone is safe)
        write_status(folder, pid=os.getpid(), state="queued", world_size=world, listening=True)
    try:
        if world == 1 and folder is not None:  # a multi-process launch is scheduled by whoever launched it
            slot = wait_for_slot(folder, device_key(), stopper)
            if slot is None:
                raise Cancelled("cancelled while queued")
        if rank == 0 and resume:
            resumes = read_json(folder / "status.json", {}).get("resumes", 0) + 1
            write_status(folder, state="running", queue_position=0, resumes=resumes, error=None,
                              resumed_from=checkpoint_step(last_checkpoint(folder)))
        elif rank == 0:
            write_status(folder, state="running", started=time.time(), queue_position=0)
        result = train.train(cfg.validate(), folder, stopper, resume=resume)
        if rank == 0:
            write_status(folder, state="finished", finished=time.time(), phase="done", result=result,
                              summary=train.summary(cfg, result), cancelling=False)
        return 0
    except Cancelled as exc:
        if rank == 0 and folder is not None:
            write_status(folder, state="cancelled", finished=time.time(), error=str(exc), cancelling=False)
        return 0
    except LMLabError as exc:
        if rank == 0:
            write_status(folder, state="failed", finished=time.time(), error=str(exc))
        return 1
    except BaseException as exc:  # anything else: the message and the log keep the details
        traceback.print_exc()
        if rank == 0:
            write_status(folder, state="failed", finished=time.time(), error=f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        if slot:
            slot.release()


# --- checkpoints and resuming ------------------------------------------------------------------


def resume(run_id: str) -> str:
    """Continue a failed or cancelled run from its newest checkpoint, as a new process; returns the run id."""
    folder = run_dir(run_id)
    st = status(run_id)
    if st.get("state") in ACTIVE:
        raise InputError(f"run {run_id} is still {st['state']}: there is nothing to resume")
    if st.get("state") == "finished":
        raise InputError(f"run {run_id} has finished: there is nothing to resume")
    checkpoint = last_checkpoint(folder)
    config = read_config(run_id).validate()
    policy.check_training(config, active_runs=sum(s.get("state") in ACTIVE for s in list_runs()))
    (folder / "cancel").unlink(missing_ok=True)
    # One write with the new pid: a reader never sees "queued" with the old, dead process.
    _launch(folder, ["--resume", str(folder)], state="queued", listening=False, error=None, finished=None,
            cancelling=False, resuming_from=checkpoint_step(checkpoint), device=device_key())
    return run_id


def restart(run_id: str) -> str:
    """A new run with the same settings as ``run_id`` (what to do when it cannot be resumed)."""
    return start(read_config(run_id))


_children: list[subprocess.Popen] = []  # reaped so finished runs do not linger as zombies


def reap() -> None:
    for proc in list(_children):
        if proc.poll() is not None:
            _children.remove(proc)


def cancel(run_id: str) -> dict:
    """Ask the run to stop: it finishes the current step, keeps what was saved and marks itself cancelled."""
    folder = run_dir(run_id)
    st = status(run_id)
    if st.get("state") not in ACTIVE:
        return st
    settings.atomic_write_text(folder / "cancel", str(time.time()))
    pid = st.get("pid")
    if pid and st.get("listening") and _alive(pid, run_id):
        try:
            os.kill(pid, signal.SIGTERM)  # the runner turns SIGTERM into the same clean stop
        except OSError:
            pass
    return status(run_id)


def wait(run_id: str, timeout: float = 600, poll: float = 0.5) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap()
        st = status(run_id)
        if st.get("state") in DONE:
            return st
        time.sleep(poll)
    raise TimeoutError(f"run {run_id} did not end within {timeout:.0f} s")


# --- finished runs appear in the other tabs' pickers ---------------------------------------------


def finished_models(task: str) -> list[registry.ModelSpec]:
    specs = []
    for st in list_runs():
        cfg = st.get("config", {})
        model = runs_root() / st["id"] / "model"
        complete = (model / "config.json").is_file() or (model / "adapter_config.json").is_file()
        if st.get("state") != "finished" or cfg.get("task") != task or not complete:
            continue
        best = st.get("summary", "")
        specs.append(registry.ModelSpec(f"run:{st['id']}", f"{cfg.get('base')} {'+ LoRA adapter ' if cfg.get('method') == 'lora' else ''}"
                                        f"fine-tuned on {cfg.get('dataset')} "
                                        f"(run started {time.strftime('%d %b %H:%M', time.localtime(st.get('created', 0)))})",
                                        task, "run", str(model), note=best))
    return specs


def register() -> None:
    """Offer finished runs in the pickers (``registry.catalogue``): called by the app and the training CLI."""
    registry.add_provider(finished_models)

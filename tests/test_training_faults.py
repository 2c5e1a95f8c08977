"""Training faults the runs tests do not cover: a stale run after an app restart, a disk that fills up or turns
read-only during a run, corrupt run folders. The app keeps serving, statuses stay true, finished models stay intact.

(A process killed from outside and an unwritable data folder at start are in test_training_runs.py.)
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from models.core import registry
from models.training import runs, view
from tests.training_helpers import small_text, tiny_config, wait_until


@pytest.fixture(autouse=True)
def finished_runs_in_the_pickers():
    """What the app does at start (``app.build_demo``): finished runs are offered as models."""
    runs.register()

# Loaded by the training subprocess through PYTHONPATH: after N metric lines, writes in the run folder fail
# with the chosen errno (metrics only, or every write: metrics, status, the model folder).
FAULT_HOOK = textwrap.dedent('''
    import builtins, errno, os
    spec = os.environ.get("LMLAB_TEST_FAULT")
    if spec:
        name, after, scope = spec.split(":")
        code, state = getattr(errno, name), {"appends": 0, "on": False}
        real_open, real_replace = builtins.open, os.replace

        def fail(path):
            raise OSError(code, os.strerror(code), str(path))

        def open_(file, mode="r", *args, **kwargs):
            if str(file).endswith("metrics.jsonl") and "a" in mode:
                state["appends"] += 1
                state["on"] = state["on"] or state["appends"] > int(after)
                if state["on"]:
                    fail(file)
            return real_open(file, mode, *args, **kwargs)

        def replace(src, dst, *args, **kwargs):
            if state["on"] and scope == "all":
                fail(dst)
            return real_replace(src, dst, *args, **kwargs)

        builtins.open, os.replace = open_, replace
''')


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[str, dict[str, str]]:
    """A finished run and the sha256 of every file of its model, to check later faults leave it alone."""
    tmp = tmp_path_factory.mktemp("finished")
    run_id = runs.start(tiny_config(small_text(tmp), max_steps=3, eval_steps=0, eval_before=False, bleu_samples=0))
    st = wait_until(run_id, lambda s: s["state"] in runs.DONE, timeout=300)
    assert st["state"] == "finished", st
    return run_id, _digest(runs.runs_root() / run_id / "model")


def _intact(finished) -> None:
    run_id, digests = finished
    assert runs.status(run_id)["state"] == "finished"
    assert _digest(runs.runs_root() / run_id / "model") == digests
    assert registry.load_causal_lm(f"run:{run_id}", device="cpu").model is not None


def _fake_run(state: str, pid: int | None, name: str) -> str:
    folder = runs.runs_root() / name
    folder.mkdir()
    (folder / "config.json").write_text(tiny_config(Path("x.txt")).to_json())
    (folder / "status.json").write_text(json.dumps({"state": state, "pid": pid, "created": 1.0, "device": "cpu"}))
    return name


def test_stale_runs_after_an_app_restart_are_marked_failed(finished):
    """A run left 'running' by a machine that restarted: its pid is gone, or now belongs to another process."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = _fake_run("running", gone.pid, "stale-dead-pid")
    recycled = _fake_run("running", os.getpid(), "stale-recycled-pid")  # alive, but not a training run
    queued = _fake_run("queued", None, "stale-queued")
    listed = {st["id"]: st for st in runs.list_runs()}  # what the app reads when a page loads
    for run_id in (dead, recycled, queued):
        assert listed[run_id]["state"] == "failed" and "stopped unexpectedly" in listed[run_id]["error"]
        assert json.loads((runs.runs_root() / run_id / "status.json").read_text())["state"] == "failed"  # written
    assert view.latest_run(active_only=True) not in {dead, recycled, queued}
    _intact(finished)


@pytest.mark.parametrize("errno_name, scope, words", [
    ("ENOSPC", "metrics", "No space left on device"),
    ("EACCES", "all", "Permission denied"),
])
def test_disk_full_or_read_only_during_a_run(finished, tmp_path, monkeypatch, errno_name, scope, words):
    """Writes in the run folder start failing mid-run: the run ends 'failed' with the reason, nothing half-written
    is offered as a model, and the finished run's files are untouched."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAULT_HOOK)
    monkeypatch.setenv("PYTHONPATH", str(hook))
    monkeypatch.setenv("LMLAB_TEST_FAULT", f"{errno_name}:2:{scope}")
    run_id = runs.start(tiny_config(small_text(tmp_path), max_steps=40, eval_steps=0, eval_before=False,
                                    bleu_samples=0))
    st = wait_until(run_id, lambda s: s["state"] in runs.DONE, timeout=300)
    assert st["state"] == "failed", st
    assert words in st["error"], st["error"]
    assert not (runs.runs_root() / run_id / "model").exists()
    assert all(spec.key != f"run:{run_id}" for spec in registry.catalogue(registry.CAUSAL_LM))
    _intact(finished)


@pytest.fixture
def corrupt_runs():
    root = runs.runs_root()
    made = []

    def folder(name: str, files: dict[str, bytes]) -> None:
        (root / name).mkdir()
        made.append(root / name)
        for fname, data in files.items():
            (root / name / fname).write_bytes(data)

    good_config = tiny_config(Path("x.txt")).to_json().encode()
    folder("corrupt-status", {"config.json": good_config, "status.json": b"\x00\xff{not json"})
    folder("corrupt-config", {"config.json": b"[1, 2", "status.json": b'{"state": "finished"}'})
    folder("corrupt-metrics", {"config.json": good_config, "status.json": b'{"state": "finished", "created": 2}',
                               "metrics.jsonl": b'{"step": 1, "loss": 2.0}\n\xff\xfe garbage\n{"step": 2, "lo'})
    folder("no-config", {"status.json": b'{"state": "running", "pid": 1}'})
    folder("finished-without-model", {"config.json": good_config, "status.json": b'{"state": "finished"}'})
    (root / "a-file-not-a-folder").write_bytes(b"junk")
    made.append(root / "a-file-not-a-folder")
    yield [p.name for p in made]
    for path in made:
        if path.is_dir():
            for child in path.iterdir():
                child.unlink()
            path.rmdir()
        else:
            path.unlink()


def test_corrupt_run_folders_do_not_break_the_app(corrupt_runs, finished):
    listed = {st["id"]: st for st in runs.list_runs()}
    assert listed["corrupt-status"]["state"] == "failed"  # an unreadable status is not shown as running
    for run_id in ("corrupt-status", "corrupt-config", "corrupt-metrics", "finished-without-model"):
        snap = view.snapshot(run_id)  # what the tab draws for it: a headline, never a traceback
        assert snap.headline
    assert [r.get("step") for r in runs.read_metrics("corrupt-metrics")] == [1]  # the torn lines are skipped
    keys = [spec.key for spec in registry.catalogue(registry.CAUSAL_LM)]  # the pickers still list models
    assert "smollm2-135m-instruct" in keys and f"run:{finished[0]}" in keys
    assert "run:finished-without-model" not in keys
    _intact(finished)


def test_corrupt_run_folders_over_the_api(corrupt_runs, client):
    """The running app (same data folder) keeps answering: /runs lists, /train_status explains."""
    from gradio_client.exceptions import AppError

    listed = client.predict(api_name="/runs")
    assert isinstance(listed, list)
    assert client.predict("corrupt-status", api_name="/train_status")["state"] == "failed"
    with pytest.raises(AppError, match="not a run id|no run"):
        client.predict("../../etc", api_name="/train_status")

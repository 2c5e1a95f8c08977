"""Resume, checkpoints, best model, early stopping, divergence and TensorBoard logs of real training runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models.core.errors import InputError
from models.training import runs, view
from models.training.config import RunConfig
from tests.training_helpers import small_text, tiny_config, wait_until

ROOT = Path(__file__).resolve().parent.parent


def _train_points(run_id: str) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in runs.read_metrics(run_id) if "loss" in r and "event" not in r]


def _eval_points(run_id: str) -> list[tuple[int, float]]:
    return [(r["step"], r["eval_loss"]) for r in runs.read_metrics(run_id) if "eval_loss" in r]


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    return small_text(tmp_path_factory.mktemp("data"), n_bytes=30_000)


def _kill_after_checkpoint(run_id: str, step: int) -> None:
    """SIGKILL the run's process once checkpoint-<step> is complete (trainer_state.json is written last)."""
    folder = runs.runs_root() / run_id
    deadline = time.monotonic() + 180
    while not (folder / "trainer" / f"checkpoint-{step}" / "trainer_state.json").exists():
        assert runs.status(run_id)["state"] in runs.ACTIVE, runs.status(run_id)
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    os.kill(runs.status(run_id)["pid"], signal.SIGKILL)


def test_a_killed_run_resumes_to_the_same_steps_and_metrics_as_an_uninterrupted_one(text):
    cfg = tiny_config(text, max_steps=16, save_steps=4, eval_steps=4, logging_steps=1, save_total_limit=2,
                      bleu_samples=0, test_samples=4)
    whole = runs.start(cfg)
    assert wait_until(whole, lambda s: s["state"] in runs.DONE, timeout=300)["state"] == "finished"

    broken = runs.start(cfg)
    _kill_after_checkpoint(broken, 4)
    st = wait_until(broken, lambda s: s["state"] in runs.DONE)
    assert st["state"] == "failed" and "stopped unexpectedly" in st["error"]
    assert view.snapshot(broken).resumable
    assert runs.resume(broken) == broken
    st = wait_until(broken, lambda s: s["state"] in runs.DONE, timeout=300)
    assert st["state"] == "finished", st
    assert st["resumes"] == 1 and st["resumed_from"] >= 4 and st["step"] == 16
    assert "resumed from step" in view.snapshot(broken).headline

    a, b = _train_points(whole), _train_points(broken)
    assert [s for s, _ in b] == list(range(1, 17))  # no step missing, none twice
    assert [s for s, _ in a] == [s for s, _ in b]
    assert [x for _, x in b] == pytest.approx([x for _, x in a], rel=1e-4)
    assert [s for s, _ in _eval_points(broken)] == [4, 8, 12, 16]
    assert [x for _, x in _eval_points(broken)] == pytest.approx([x for _, x in _eval_points(whole)], rel=1e-4)
    events = [r["event"] for r in runs.read_metrics(broken) if "event" in r]
    assert events == ["eval_before", "eval_after"]
    after = lambda run: next(r for r in runs.read_metrics(run) if r.get("event") == "eval_after")  # noqa: E731
    assert after(broken)["perplexity"] == pytest.approx(after(whole)["perplexity"], rel=1e-4)
    # a finished run's checkpoints are removed (it is not resumed; optimiser state is large)
    assert not list((runs.runs_root() / broken / "trainer").glob("checkpoint-*"))
    # TensorBoard event files from the Trainer's own reporting
    assert list((runs.runs_root() / whole / "tensorboard").rglob("events.out.tfevents.*"))
    with pytest.raises(InputError, match="finished"):
        runs.resume(whole)


def test_cancel_keeps_a_checkpoint_and_resume_continues_without_gaps(text):
    cfg = tiny_config(text, max_steps=30, save_steps=100, eval_steps=0, logging_steps=1, eval_before=False,
                      bleu_samples=0, test_samples=4)
    run_id = runs.start(cfg)
    wait_until(run_id, lambda s: s.get("step", 0) >= 3 or s["state"] in runs.DONE)
    runs.cancel(run_id)
    st = wait_until(run_id, lambda s: s["state"] in runs.DONE)
    assert st["state"] == "cancelled"
    stopped = runs.checkpoint_step(runs.last_checkpoint(runs.runs_root() / run_id))
    assert 3 <= stopped < 30
    runs.resume(run_id)
    st = wait_until(run_id, lambda s: s["state"] in runs.DONE, timeout=300)
    assert st["state"] == "finished" and st["resumed_from"] == stopped
    assert [s for s, _ in _train_points(run_id)] == list(range(1, 31))


def test_missing_or_damaged_checkpoints_are_refused_with_the_reason(text):
    run_id = runs.start(tiny_config(text, max_steps=4, save_steps=0, eval_steps=0, eval_before=False,
                                        bleu_samples=0, test_samples=4))
    wait_until(run_id, lambda s: s["state"] in runs.DONE)
    folder = runs.runs_root() / run_id
    runs.write_status(folder, state="failed")
    with pytest.raises(InputError, match="saved no checkpoint.*Start it over"):
        runs.resume(run_id)
    damaged = folder / "trainer" / "checkpoint-2"
    damaged.mkdir(parents=True)
    (damaged / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    (damaged / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    (damaged / "optimizer.pt").write_bytes(b"x")
    with pytest.raises(InputError, match="checkpoint-2/model.safetensors is damaged"):
        runs.resume(run_id)
    (damaged / "trainer_state.json").write_text("{")
    with pytest.raises(InputError, match="no readable trainer_state.json"):
        runs.resume(run_id)
    # the command line says the same and exits 2
    proc = subprocess.run([sys.executable, "-m", "models.training", "--resume", run_id], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "cannot be resumed" in proc.stderr
    # Start over: a new run with the same settings
    again = runs.restart(run_id)
    assert again != run_id and runs.read_config(again) == runs.read_config(run_id)
    assert wait_until(again, lambda s: s["state"] in runs.DONE)["state"] == "finished"


def test_best_checkpoint_early_stopping_and_the_exported_step(text):
    # lr 0.05 overshoots: the validation loss stops improving, early stopping ends the run,
    # and keep_best exports the checkpoint with the lowest validation loss.
    cfg = tiny_config(text, max_steps=40, save_steps=2, eval_steps=2, logging_steps=2, learning_rate=0.02,
                      keep_best=True, early_stopping_patience=2, save_total_limit=1, eval_before=False,
                      warmup_ratio=0.0, bleu_samples=0, test_samples=4)
    run_id = runs.start(cfg)
    st = wait_until(run_id, lambda s: s["state"] in runs.DONE, timeout=300)
    assert st["state"] == "finished", st
    evals = _eval_points(run_id)
    best_step, best_loss = min(evals, key=lambda p: p[1])
    result = st["result"]
    assert result["best_step"] == best_step and result["model_step"] == best_step
    assert result["best_eval_loss"] == pytest.approx(best_loss)
    assert f"model from step {best_step} (lowest validation loss)" in st["summary"]
    if result["steps"] < 40:  # stopped early: the last `patience` evaluations did not improve on the best
        assert all(loss >= best_loss for _, loss in evals[-2:])
    snap = view.snapshot(run_id)
    marked = [name for name in snap.series if name.startswith("best")]
    assert marked and snap.series[marked[0]][0] == [best_step]


def test_keep_best_and_early_stopping_need_evaluations():
    with pytest.raises(InputError, match="eval steps"):
        RunConfig(keep_best=True, eval_steps=0).validate()
    with pytest.raises(InputError, match="multiple of eval steps"):
        RunConfig(keep_best=True, eval_steps=20, save_steps=30).validate()
    with pytest.raises(InputError, match="early stopping needs eval steps"):
        RunConfig(early_stopping_patience=3, eval_steps=0).validate()


def test_a_nan_loss_fails_the_run_with_advice_and_keeps_the_last_good_checkpoint(text, monkeypatch):
    import math

    import torch

    from models.training import metrics, train

    assert math.isnan(metrics.perplexity(float("nan"), 10)) and metrics.perplexity(1e6, 1) == float("inf")
    real_load = train.load_base
    calls = {"n": 0}

    def load_base_that_diverges(cfg, labels=None):
        model, tok = real_load(cfg, labels)

        def poison(module, args, output):  # from the 6th training forward on, activations are NaN
            if module.training:
                calls["n"] += 1
                if calls["n"] >= 6:
                    return output * float("nan")
            return output

        model.transformer.ln_f.register_forward_hook(poison)
        return model, tok

    monkeypatch.setattr(train, "load_base", load_base_that_diverges)
    cfg = tiny_config(text, max_steps=12, save_steps=2, save_total_limit=1, eval_steps=0, logging_steps=1,
                      eval_before=False, bleu_samples=0, test_samples=4)
    folder = runs.new_run_dir(cfg)
    assert runs.run_in_folder(folder, cfg) == 1
    st = runs.status(folder.name)
    assert st["state"] == "failed"
    assert st["error"] == ("the loss became NaN at step 6; lower the learning rate (the last good checkpoint, step 4, "
                           "is kept)")
    records = runs.read_metrics(folder.name)
    assert [r["step"] for r in records if r.get("loss") is not None] == [1, 2, 3, 4, 5]
    assert [(r["step"], r["loss"], r["diverged"]) for r in records if r.get("diverged")] == [(6, None, True)]
    kept = sorted(runs.checkpoint_step(p) for p in (folder / "trainer").glob("checkpoint-*"))
    assert kept == [4]  # save total limit 1: the older one was rotated out
    from safetensors.torch import load_file

    weights = load_file(str(folder / "trainer" / "checkpoint-4" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())
    snap = view.snapshot(folder.name)
    assert "loss became NaN at step 6" in snap.headline and "inf" not in snap.headline
    assert any(name.startswith("diverged") for name in snap.series) and snap.resumable == "checkpoint-4"


def _tensorboard_steps(run_id: str, tag: str = "train/loss") -> list[int]:
    """Every step logged under ``tag`` in every event file of the run, read by TensorBoard's own loader."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps = []
    for path in sorted((runs.runs_root() / run_id / "tensorboard").rglob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            steps += [event.step for v in event.summary.value if v.tag == tag]
    return steps


def test_resume_after_kill_keeps_each_step_once_in_tensorboard_and_refuses_changed_settings(text):
    cfg = tiny_config(text, max_steps=60, save_steps=10, eval_steps=0, logging_steps=1, eval_before=False,
                      save_total_limit=2, bleu_samples=0, test_samples=4)
    run_id = runs.start(cfg)
    folder = runs.runs_root() / run_id
    # Kill -9 once the event file on disk holds steps after the newest complete checkpoint (as in a real crash).
    deadline = time.monotonic() + 240
    while True:
        done = [runs.checkpoint_step(p.parent) for p in (folder / "trainer").glob("checkpoint-*/trainer_state.json")]
        logged = _tensorboard_steps(run_id)
        if done and logged and max(logged) > max(done) + 1:
            os.kill(runs.status(run_id)["pid"], signal.SIGKILL)
            break
        assert runs.status(run_id)["state"] in runs.ACTIVE and time.monotonic() < deadline, runs.status(run_id)
        time.sleep(0.05)
    assert wait_until(run_id, lambda s: s["state"] in runs.DONE)["state"] == "failed"
    checkpoint = runs.checkpoint_step(runs.last_checkpoint(folder))
    assert max(_tensorboard_steps(run_id)) > checkpoint

    # a setting given at resume is refused with the reason, not ignored
    proc = subprocess.run([sys.executable, "-m", "models.training", "--resume", run_id, "--batch-size", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--batch-size 2 (the run has 4)" in proc.stderr, proc.stderr
    assert "continues with the settings it was started with" in proc.stderr
    assert runs.status(run_id)["state"] == "failed"

    runs.resume(run_id)
    st = wait_until(run_id, lambda s: s["state"] in runs.DONE, timeout=300)
    assert st["state"] == "finished" and st["resumed_from"] == checkpoint
    steps = _tensorboard_steps(run_id)
    assert sorted(steps) == list(range(1, 61)), [s for s in set(steps) if steps.count(s) > 1]  # each step once
    assert [s for s, _ in _train_points(run_id)] == list(range(1, 61))

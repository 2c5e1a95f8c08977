"""One-off model work runs in the model's turn: on its scheduler's thread, or under the generation lock."""

from __future__ import annotations

import threading

from models.engines import classroom, model_jobs, reference


def test_batched_model_work_runs_on_the_scheduler_thread(tiny_gpt2, monkeypatch):
    monkeypatch.setenv("LMLAB_BATCHING", "1")
    assert classroom.batchable(tiny_gpt2)
    thread = model_jobs.run_on_model(tiny_gpt2, threading.current_thread)
    assert thread is not threading.current_thread()


def test_unbatched_model_work_holds_the_generation_lock(tiny_gpt2, monkeypatch):
    monkeypatch.setenv("LMLAB_BATCHING", "0")
    lock = reference.model_lock(tiny_gpt2)
    held, thread = model_jobs.run_on_model(tiny_gpt2, lambda: (lock.locked(), threading.current_thread()))
    assert held and thread is threading.current_thread()
    assert not lock.locked()

"""ZeroGPU: spaces.GPU wraps the model handlers when the package exists, a no-op otherwise; heavy events share one queue."""

from __future__ import annotations

import importlib
import sys
import types

import gradio as gr

from models.core import zerogpu


def test_no_op_without_spaces():
    assert "spaces" not in sys.modules or not zerogpu.available()

    def handler(x):
        return x

    assert zerogpu.gpu(handler) is handler
    assert zerogpu.gpu(duration=5)(handler) is handler


def _fake_spaces(calls: list):
    module = types.ModuleType("spaces")

    def GPU(duration=60):  # noqa: N802 - the real package's name
        def wrap(fn):
            calls.append((fn.__name__, duration))
            fn.zerogpu = True
            return fn
        return wrap

    module.GPU = GPU
    return module


def test_model_handlers_request_a_gpu_on_a_space(monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "spaces", _fake_spaces(calls))
    importlib.reload(zerogpu)
    try:
        assert zerogpu.available()
        from components import generation, ner

        with gr.Blocks():
            generation.build()
            ner.build()
        names = {name for name, _ in calls}
        assert {"generate", "next_token", "tag_text", "tag_batch", "evaluate"} <= names
        assert ("evaluate", 300) in calls
    finally:
        monkeypatch.delitem(sys.modules, "spaces")
        importlib.reload(zerogpu)
    assert not zerogpu.available()


def test_heavy_events_share_one_queue(monkeypatch):
    """Every short event that runs a language model waits in the one 'model' queue (so they share the device) and
    shows progress; whole texts and whole NER files run in lanes of their own, one at a time, so the shared queue
    never waits behind them; with batching on, the events the engine batches get their own, wide queues."""
    import app
    from models.engines import engine

    heavy = {"generate", "next_token", "ner", "beam_search", "arithmetic_steps"}
    batched = {"generate", "next_token", "ner"}
    own_lanes = {"compress_text": "text_coding", "decompress_text": "text_coding",
                 "ner_batch": "ner_files", "ner_evaluate": "ner_files"}
    for batching in ("0", "1"):
        monkeypatch.setenv("LMLAB_BATCHING", batching)
        monkeypatch.setattr(engine, "_engines", {})  # the local engine is chosen again from the setting
        demo = app.build_demo()
        by_name = {fn.api_name: fn for fn in demo.fns.values() if fn.api_name}
        missing = (heavy | set(own_lanes)) - set(by_name)
        assert not missing, f"events not found: {missing}"
        queued_together = heavy - batched if batching == "1" else heavy
        assert {by_name[name].concurrency_id for name in queued_together} == {"model"}
        if batching == "1":
            assert {by_name[name].concurrency_id for name in batched} == batched
            assert all(by_name[name].concurrency_limit >= 64 for name in batched)
        for name, lane in own_lanes.items():
            assert by_name[name].concurrency_id == lane != "model"
        assert {by_name[name].concurrency_limit for name in ("compress_text", "ner_batch")} == {1}
        # Every model event shows that it is working ("minimal" keeps the spinner without a stale timer)
        assert all(by_name[name].show_progress != "hidden" and by_name[name].queue is not False
                   for name in heavy | set(own_lanes))
        assert by_name["stop"].queue is False  # Stop never waits behind the work it stops

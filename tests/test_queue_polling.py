"""Gradio's queue looks for work every 20 ms, not every millisecond (components/queue_polling.py)."""

from __future__ import annotations

import asyncio
import threading

import gradio as gr

from components import queue_polling


def _looks_in(queue, seconds: float, monkeypatch) -> int:
    """How often Gradio's own ``start_processing`` loop looks at the (empty) queue in ``seconds``."""
    looks = 0
    length = type(queue).__len__

    def counting(self) -> int:
        nonlocal looks
        looks += 1
        return length(self)

    monkeypatch.setattr(type(queue), "__len__", counting)

    async def run() -> None:
        task = asyncio.create_task(queue.start_processing())
        await asyncio.sleep(seconds)
        queue.stopped = True
        await task

    # A thread of its own: other tests (Playwright's sync API) may leave an event loop running on this one.
    runner = threading.Thread(target=asyncio.run, args=(run(),))
    runner.start()
    runner.join()
    return looks


def _demo() -> gr.Blocks:
    with gr.Blocks() as demo:
        gr.Button("x").click(lambda: None)
    return demo.queue()


def test_the_queue_wakes_every_20_ms_not_every_millisecond(monkeypatch):
    plain = _demo()._queue
    gradio_rate = plain.sleep_when_free  # 1 ms on Linux and macOS, 50 ms on Windows
    untouched = _looks_in(plain, 0.3, monkeypatch)
    demo = _demo()
    assert queue_polling.install(demo)
    assert demo._queue.sleep_when_free == queue_polling.IDLE_POLL_S
    assert demo._queue.progress_update_sleep_when_free == queue_polling.PROGRESS_POLL_S
    slowed = _looks_in(demo._queue, 0.3, monkeypatch)
    assert slowed <= 0.3 / queue_polling.IDLE_POLL_S + 2  # a look per 20 ms at most
    if gradio_rate < queue_polling.IDLE_POLL_S / 5:
        assert untouched > 3 * slowed


def test_an_unknown_queue_is_left_alone():
    class Bare:
        _queue = object()

    assert queue_polling.install(Bare()) is False

"""Gradio's queue looks for work every millisecond; LM Lab makes that every 20 ms.

Gradio 6's ``Queue.start_processing`` sleeps ``sleep_when_free`` (1 ms on Linux, 50 ms on Windows)
whenever its queue is empty or every worker is busy, and ``start_progress_updates`` looks for progress
to send every ``progress_update_sleep_when_free`` (10 ms; 100 ms on Windows): about 1,100 wakeups of the
web server's event loop a second, idle or not. On a 2-core machine each wakeup takes a core from the
model for a moment, and a decode step's matrix products, split over both cores, wait for their slower
half. Measured with SmolLM2, 40 decode steps of 30 rows beside an asyncio loop doing the same polling
(median of 4 alternating runs): 157 ms per step against 141 ms with no loop beside it, and 150 ms
with the loop waking every 20 ms. Through the app, a class of 30 (``benchmarks/classroom.py``, three
alternating pairs, a slow state of the machine): p95 16.4-17.2 s against 17.7-18.7 s with Gradio's
rates, faster in each pair. The idle app took 1.5 % of a core against 9.0 %.

The cost of the change: an event waits up to 20 ms longer to leave Gradio's queue when the queue was
empty (a press's first token takes ~1 s in a class), and progress bars update ten times a second.
"""

from __future__ import annotations

import logging

log = logging.getLogger("lmlab.queue_polling")

IDLE_POLL_S = 0.02  # Gradio's queue, looking for the next event to start
PROGRESS_POLL_S = 0.1  # Gradio's progress updates (Gradio's own value on Windows)


def install(demo) -> bool:
    """Slow the polling of ``demo``'s queue (call after ``demo.queue()``). Returns False, changing
    nothing, when this Gradio's queue no longer has these settings."""
    queue = getattr(demo, "_queue", None)
    if not (hasattr(queue, "sleep_when_free") and hasattr(queue, "progress_update_sleep_when_free")):
        log.warning("gradio's queue changed shape: it keeps polling at its own rate")
        return False
    queue.sleep_when_free = max(queue.sleep_when_free, IDLE_POLL_S)
    queue.progress_update_sleep_when_free = max(queue.progress_update_sleep_when_free, PROGRESS_POLL_S)
    return True

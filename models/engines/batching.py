"""Gather requests that arrive together into one batched call.

A class presses "Tag entities" or "Show the next-token distribution" within the same second; one
batched forward pass costs little more than one request's (the weights are read once), so callers
that arrive within ``window_s`` of the first are served by a single ``run_many`` call.

    tag = Gatherer(lambda texts: tagger.tag_many(texts), name="ner")
    entities = tag(text)          # blocks until the batch containing ``text`` is done

The first caller of a batch waits out the window and runs the batch in its own thread (no extra
thread to own); the others wait on their futures. If the batched call raises, each item is retried
alone, so one bad input fails only its own caller.

The window is ``LMLAB_GATHER_MS`` milliseconds, 50 by default. A class's thirty presses reach the
model spread over a second or more (the web server handles them one by one), so a window of a few
milliseconds gathers only a few. Measured (``benchmarks/gathering.py``, 30 clients, medians of 3
alternating runs): ``/next_token`` p95 4.79 s with 5 ms (10 forward passes), 2.65 s with 50 ms (3),
2.47 s with 100 ms (2), 5.93 s one at a time; ``/ner`` p95 1.05 s, 0.68 s, 0.77 s and 0.88 s. One user
alone waits the window once: 0.36 s against 0.27 s for a next-token view. Every call that served more
than one item is logged (``lmlab.batching``), so a host can see the sharing happen.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

log = logging.getLogger("lmlab.batching")


def window_from_env(value: str | None) -> float:
    """Seconds the first of a batch waits for others, from ``LMLAB_GATHER_MS`` (unset: 50 ms, why: above).

    Raises ValueError naming the variable for anything but a number of milliseconds from 0 to 10,000.
    """
    if value is None or not value.strip():
        value = "50"
    try:
        ms = float(value)
    except ValueError:
        ms = float("nan")
    if not 0 <= ms <= 10_000:  # also rejects NaN
        raise ValueError(f"LMLAB_GATHER_MS must be a number of milliseconds from 0 to 10000 (got {value!r})")
    return ms / 1000


DEFAULT_WINDOW_S = window_from_env(os.environ.get("LMLAB_GATHER_MS"))

In = TypeVar("In")
Out = TypeVar("Out")


class Gatherer(Generic[In, Out]):
    """Call ``run_many(items) -> results`` (same length, same order) once for items arriving together."""

    def __init__(self, run_many: Callable[[Sequence[In]], Sequence[Out]], window_s: float | None = None,
                 max_items: int = 64, name: str = "") -> None:
        self.run_many, self.max_items, self.name = run_many, max_items, name
        self.window_s = DEFAULT_WINDOW_S if window_s is None else window_s
        self._pending: list[tuple[In, Future]] = []
        self._lock = threading.Lock()
        self.batches: list[int] = []  # sizes of the batches run so far (tests and benchmarks read it)

    def __call__(self, item: In) -> Out:
        future: Future = Future()
        with self._lock:
            self._pending.append((item, future))
            leader = len(self._pending) == 1
        if leader:
            time.sleep(self.window_s)
            with self._lock:
                batch, self._pending = self._pending[:self.max_items], self._pending[self.max_items:]
                if self._pending:  # more than one batch arrived: the next caller in line leads it
                    threading.Thread(target=self._lead_rest, daemon=True).start()
            self._run(batch)
        return future.result()

    def _lead_rest(self) -> None:
        with self._lock:
            batch, self._pending = self._pending[:self.max_items], self._pending[self.max_items:]
            more = bool(self._pending)
        if more:
            threading.Thread(target=self._lead_rest, daemon=True).start()
        self._run(batch)

    def _run(self, batch: list[tuple[In, Future]]) -> None:
        if not batch:
            return
        self.batches.append(len(batch))
        if len(batch) > 1:
            log.info("%s: %d requests in one call", self.name or "gathered", len(batch))
        try:
            results = self.run_many([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"run_many returned {len(results)} results for {len(batch)} items")
        except BaseException as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            for one in batch:  # isolate the failure: each item alone
                self._run([one])
            return
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)

"""Gather requests that arrive together into one batched call.

A class presses "Tag entities" or "Show the next-token distribution" within the same second; one
batched forward pass costs little more than one request's (the weights are read once), so callers
that arrive within ``window_s`` of the first are served by a single ``run_many`` call.

    tag = Gatherer(lambda texts: tagger.tag_many(texts), window_s=0.005)
    entities = tag(text)          # blocks until the batch containing ``text`` is done

The first caller of a batch waits out the window and runs the batch in its own thread (no extra
thread to own); the others wait on their futures. If the batched call raises, each item is retried
alone, so one bad input fails only its own caller.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class Gatherer(Generic[In, Out]):
    """Call ``run_many(items) -> results`` (same length, same order) once for items arriving together."""

    def __init__(self, run_many: Callable[[Sequence[In]], Sequence[Out]], window_s: float = 0.005,
                 max_items: int = 64) -> None:
        self.run_many, self.window_s, self.max_items = run_many, window_s, max_items
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

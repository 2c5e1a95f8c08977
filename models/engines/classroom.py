"""The classroom engine: one machine, many students; the scheduler shares every decode step.

A request goes to its model's scheduler (``models.engines.scheduler``: iteration-level batching, one
thread owning the model); next-token views that arrive together share one forward pass on that thread
(``models.engines.batching``). A model the scheduler cannot batch (no ``cache`` argument in its base
model, or sliding-window layers) runs on the reference engine instead, one request at a time.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections.abc import Callable
from typing import TypeVar

import torch

from models.core import registry
from models.engines import kv_cache, packed_linear, scheduler
from models.engines.batching import Gatherer
from models.engines.reference import ReferenceEngine, last_logits
from models.engines.requests import MAX_OPEN_STREAMS, Capabilities
from models.engines.scheduler import TOP_ALTERNATIVES, Request

T = TypeVar("T")


def batchable(loaded) -> bool:
    """True when the scheduler can batch this model: a decoder whose base model takes a ``cache`` and no
    sliding-window layers (those need transformers' own caches)."""
    base = getattr(loaded.model, "base_model", None)
    try:
        takes_cache = base is not None and "cache" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        takes_cache = False
    return takes_cache and kv_cache.preallocated(loaded.model.config, 1) is not None


def _last_logits_many(items: list[tuple[object, list[int]]]) -> list[torch.Tensor]:
    """One forward pass per model for the gathered (loaded model, token ids) items, on its scheduler's thread."""
    results: list[torch.Tensor | None] = [None] * len(items)
    by_model: dict[int, list[int]] = {}
    for i, (loaded, _) in enumerate(items):
        by_model.setdefault(id(loaded.model), []).append(i)
    for indices in by_model.values():
        loaded = items[indices[0]][0]
        rows = [items[i][1] for i in indices]
        logits = scheduler.call(loaded.model, loaded.device.device,
                                lambda loaded=loaded, rows=rows: last_logits(loaded, rows))
        for i, row in zip(indices, logits, strict=True):
            results[i] = row
    return results


class ClassroomEngine:
    """Iteration-level batching on this machine (see the module docstring)."""

    name = "classroom"
    capabilities = Capabilities(alternatives=TOP_ALTERNATIVES, after_temperature=False, internals=True,
                                shares_steps=True, open_streams=MAX_OPEN_STREAMS,
                                label="shared by everyone's requests")

    def __init__(self, memory=None) -> None:
        # ``memory``: the model cache to charge the packed copy to (``registry.CACHE``; a test's own).
        self.reference = ReferenceEngine()
        self.memory = memory
        self._charged: weakref.WeakSet = weakref.WeakSet()
        self._charge_lock = threading.Lock()
        # Items carry their model, so the gatherer holds no model after the batch (an evicted model can be
        # freed). Next-token views arriving within the gathering window (LMLAB_GATHER_MS) share a forward pass.
        self._views = Gatherer(_last_logits_many, name="next-token views")

    def _charge(self, loaded) -> None:
        """Count the packed copy of the matrices the scheduler keeps on a CPU with the model's weights."""
        with self._charge_lock:
            if loaded.model in self._charged:
                return
            self._charged.add(loaded.model)
        memory = self.memory
        if memory is None:
            memory = registry.CACHE
        memory.charge(loaded, packed_linear.planned_nbytes(loaded.model, loaded.device.device))

    def submit(self, loaded, request: Request) -> Request:
        """Queue ``request`` on its model's scheduler; its tokens arrive on ``request.out``."""
        if not batchable(loaded):
            return self.reference.submit(loaded, request)
        self._charge(loaded)
        return scheduler.submit(loaded.model, loaded.device.device, request)

    def call(self, loaded, fn: Callable[[], T]) -> T:
        """``fn()`` on the thread that owns the model, between two decode steps."""
        if not batchable(loaded):
            return self.reference.call(loaded, fn)
        return scheduler.call(loaded.model, loaded.device.device, fn)  # retries if the scheduler just retired

    def next_logits(self, loaded, ids: list[int]) -> torch.Tensor:
        """Raw logits (vocab,) after ``ids``; views asked for together share one forward pass."""
        if not batchable(loaded):
            return self.reference.next_logits(loaded, ids)
        return self._views((loaded, ids))

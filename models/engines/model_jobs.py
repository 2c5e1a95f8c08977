"""Run a one-off piece of model work where the model's other work runs, so it never races a decode step.

With batching on, the model's scheduler thread owns it: the job runs there between two decode steps
(``scheduler.call``), as the next-token view does. With batching off (or a model the scheduler cannot
batch), it runs under the same per-model lock that one-at-a-time generation holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from models.core.registry import Loaded
from models.engines import scheduler
from models.generation import generator

T = TypeVar("T")


def run_on_model(loaded: Loaded, fn: Callable[[], T]) -> T:
    """Return ``fn()``, run in the model's turn (see the module docstring); its exceptions propagate."""
    if scheduler.enabled() and generator.batchable(loaded):
        return scheduler.call(loaded.model, loaded.device.device, fn)  # retries if the scheduler just retired
    with generator.model_lock(loaded):  # the lock the unbatched generate path holds
        return fn()

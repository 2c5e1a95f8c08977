"""Run a one-off piece of model work where the model's other work runs, so it never races a decode step.

The local engine decides where (``models.engines.engine.local()``): the classroom engine runs the job
on the model's scheduler thread between two decode steps, as the next-token view does; the reference
engine (and a model the scheduler cannot batch) runs it under the per-model lock that one-at-a-time
generation holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from models.core.registry import Loaded
from models.engines import engine

T = TypeVar("T")


def run_on_model(loaded: Loaded, fn: Callable[[], T]) -> T:
    """Return ``fn()``, run in the model's turn (see the module docstring); its exceptions propagate."""
    return engine.local().call(loaded, fn)

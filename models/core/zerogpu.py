"""ZeroGPU on Hugging Face Spaces: a GPU is attached only while a ``spaces.GPU`` function runs.

``gpu(fn)`` is ``spaces.GPU(fn)`` when the ``spaces`` package is importable (it is preinstalled on
Spaces) and ``fn`` itself everywhere else, so laptops and ordinary GPU servers run the same code.
Components wrap their model-heavy handlers with it when they wire events.
"""

from __future__ import annotations

from collections.abc import Callable

try:
    import spaces
except ImportError:  # not on a Space: a plain no-op
    spaces = None

DURATION = 120  # seconds a call may hold the GPU; generation and NER batches finish well within it


def available() -> bool:
    return spaces is not None


def gpu(fn: Callable | None = None, *, duration: int = DURATION):
    """Decorator (bare or with ``duration=``): request a ZeroGPU slice for each call when on a Space."""
    if fn is None:
        return lambda f: gpu(f, duration=duration)
    if spaces is None:
        return fn
    return spaces.GPU(duration=duration)(fn)

"""The engine seam: what runs a model for the Generate path, and what it can show.

An engine takes a request (prompt, sampling settings, seed, max new tokens, a cancel event) and streams
tokens, each with its log-probability and top alternatives, then a finish reason. Three engines:

- ``reference`` (``models.engines.reference``): one request alone through transformers' ``generate``,
  the plain code a student can read (``--no-batching``);
- ``classroom`` (``models.engines.classroom``): one machine, many students; every user's decode steps
  share forward passes (``models.engines.scheduler``);
- ``remote`` (``models.engines.remote``): an OpenAI-compatible server (vLLM) over ``/v1/completions``,
  for a school that outgrows one machine (``--engine-url``).

The local engine is chosen once, here (``local()``); a remote server adds its model to the pickers
(``remote()``). Nothing outside ``models/engines`` asks which engine runs: callers ask for the
engine's ``capabilities`` instead.
"""

from __future__ import annotations

import os

from models.core import zerogpu
from models.engines import remote as remote_module
from models.engines.classroom import ClassroomEngine
from models.engines.reference import ReferenceEngine
from models.engines.requests import MAX_OPEN_STREAMS, Capabilities  # noqa: F401  (callers know them as engine.X)

_engines: dict[str, object] = {}


def named(name: str):
    """The one ``reference`` or ``classroom`` engine of this process (made on first use)."""
    if name not in _engines:
        if name == "reference":
            _engines.setdefault(name, ReferenceEngine())
        elif name == "classroom":
            _engines.setdefault(name, ClassroomEngine())
        else:
            raise ValueError(f"no local engine named {name!r} (reference, classroom)")
    return _engines[name]


def local():
    """The engine that runs local models, chosen at start: ``reference`` when ``LMLAB_BATCHING=0``
    (``--no-batching``) or on ZeroGPU (the GPU exists only inside handlers, so nothing may own the model
    between requests), else ``classroom``."""
    one_at_a_time = os.environ.get("LMLAB_BATCHING", "1") == "0" or zerogpu.available()
    return named("reference" if one_at_a_time else "classroom")


def remote():
    """The remote engine named by ``LMLAB_ENGINE_URL`` (``--engine-url``), or None."""
    return remote_module.configured()

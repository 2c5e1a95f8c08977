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
from dataclasses import dataclass

# Streams the web app keeps open at once (Gradio's concurrency limit for the batched events); more wait in
# Gradio's queue. Open streams cost a thread each, not model work: the engine bounds that.
MAX_OPEN_STREAMS = int(os.environ.get("LMLAB_MAX_STREAMS", 256))


@dataclass(frozen=True)
class Capabilities:
    """What an engine can show a learner."""

    alternatives: int  # top alternatives sent with each token (the hover and the next-token chart)
    after_temperature: bool  # False: log-probs are the model's own, before temperature and penalty
    internals: bool  # hidden states, attention and raw logits (logit lens, attention, beam tree, LM coder)
    shares_steps: bool  # requests arriving together share forward passes (gathering them pays)
    open_streams: int  # generation streams worth keeping open at once (more wait in the web queue)
    label: str  # how the status line and the about box name it, in a teacher's words


_engines: dict[str, object] = {}


def named(name: str):
    """The one ``reference`` or ``classroom`` engine of this process (made on first use)."""
    if name not in _engines:
        if name == "reference":
            from models.engines.reference import ReferenceEngine

            _engines.setdefault(name, ReferenceEngine())
        elif name == "classroom":
            from models.engines.classroom import ClassroomEngine

            _engines.setdefault(name, ClassroomEngine())
        else:
            raise ValueError(f"no local engine named {name!r} (reference, classroom)")
    return _engines[name]


def local():
    """The engine that runs local models, chosen at start: ``reference`` when ``LMLAB_BATCHING=0``
    (``--no-batching``) or on ZeroGPU (the GPU exists only inside handlers, so nothing may own the model
    between requests), else ``classroom``."""
    from models.core import zerogpu

    one_at_a_time = os.environ.get("LMLAB_BATCHING", "1") == "0" or zerogpu.available()
    return named("reference" if one_at_a_time else "classroom")


def remote():
    """The remote engine named by ``LMLAB_ENGINE_URL`` (``--engine-url``), or None."""
    from models.engines import remote as remote_module

    return remote_module.configured()

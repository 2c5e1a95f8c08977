"""Remember, once, that an optional module Gradio looks for at every event is not installed.

Gradio 6 wraps every call of an event's function, and every step of a streaming one, in
``gradio.utils.MatplotlibBackendMananger``, which runs ``import matplotlib`` twice to switch its
plotting backend. LM Lab draws with Plotly and does not install matplotlib, so each of those imports
fails, and a failed import searches every ``sys.path`` entry again: ~60 microseconds alone, and far
more on a busy server, because each ``stat`` in that search lets go of the interpreter lock and then
waits for the model's thread to hand it back. It happens on the web server's event loop, for every
streamed update of every student. A profile of the app while a class of 30 generated found the event
loop in these imports in 52 of its ~300 busy samples (~0.5 s). In four alternating runs of the
class the p95 was 19.1 s with this module against 19.8 s without (medians; within the machine's drift).

``install()`` records the module as absent in ``sys.modules`` (``None``), which is Python's own way to
say "this import fails" (the import system raises ``ImportError`` at once). It only does so for a
module that cannot be found now, so an installed matplotlib is untouched; ``importlib.util.find_spec``
still answers ``None`` for it, as it did before.
"""

from __future__ import annotations

import importlib.util
import sys

# Modules Gradio imports per event only to adapt to them when they are there.
OPTIONAL = ("matplotlib",)


def install(names: tuple[str, ...] = OPTIONAL) -> list[str]:
    """Mark each of ``names`` that is not installed as absent; returns the names marked."""
    marked = []
    for name in names:
        if name in sys.modules:  # imported already, or marked already
            continue
        if importlib.util.find_spec(name) is None:
            sys.modules[name] = None
            marked.append(name)
    return marked

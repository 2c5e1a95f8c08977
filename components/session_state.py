"""A new browser session's first event without building the whole page's config first.

Gradio 6 (``gradio.state_holder.SessionState.__init__``) builds, at a session's first event, the
config of every component of the app (``config_for_block``: ``get_config`` and an ``inspect.signature``
per component) and keeps it for one purpose, rebuilding the page for a deep link. LM Lab has ~300
components, so that is ~22 ms of Python per new session (~38 ms while the model runs beside it), on the
web server's event loop and under the interpreter lock. When a class of 30 presses Generate together,
the presses reach the model one after another behind it: measured with ``benchmarks.classroom``,
thirty presses reached the scheduler 1.4-1.5 s after they were made (0.3-0.5 s with this module), and a
profile of the web server over those seconds found it in this function in 282 of 321 samples.

``install()`` makes that config lazy: each component's entry is built the first time it is read, from
the component as it was when the session began, which is what the eager version stored. Reading all
of it (``SessionState.components``, a deep link) builds the missing entries, in the original order.
Everything else ``SessionState.__init__`` sets up still comes from Gradio's own code.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

log = logging.getLogger("lmlab.session_state")
_ABSENT = object()


class LazyConfigValues(dict):
    """``{block id: block config}`` that builds an entry on first read.

    ``config_for_block(id, rendered_ids, block) -> dict`` builds one entry; ``initial`` maps each block id
    to the block it is built from (the session's blocks when it began), in the eager version's order.
    An id in neither ``initial`` nor the stored entries raises KeyError, as a plain dict does.
    """

    def __init__(self, config_for_block, initial: dict) -> None:
        super().__init__()
        self._build, self._pending, self._order = config_for_block, dict(initial), list(initial)

    def __missing__(self, key):
        block = self._pending.pop(key)  # KeyError for an unknown id, as before
        value = self._build(key, [], block)
        super().__setitem__(key, value)
        return value

    def __setitem__(self, key, value) -> None:
        self._pending.pop(key, None)
        super().__setitem__(key, value)

    def __delitem__(self, key) -> None:
        # An id is either pending or built, never both (building and storing take it off ``_pending``).
        if self._pending.pop(key, _ABSENT) is _ABSENT:
            super().__delitem__(key)  # KeyError for an id in neither

    def __contains__(self, key) -> bool:
        return super().__contains__(key) or key in self._pending

    def get(self, key, default=None):
        return self[key] if key in self else default

    def _complete(self) -> list:
        for key in list(self._pending):
            self[key]
        first = [k for k in self._order if dict.__contains__(self, k)]
        seen = set(first)
        return first + [k for k in dict.keys(self) if k not in seen]

    def __iter__(self) -> Iterator:
        return iter(self._complete())

    def __len__(self) -> int:
        return super().__len__() + len(self._pending)

    def keys(self):
        return self._complete()

    def items(self):
        return [(k, dict.__getitem__(self, k)) for k in self._complete()]

    def values(self):
        return [dict.__getitem__(self, k) for k in self._complete()]


class _NoBlocks:
    """The app's Blocks as ``SessionState.__init__`` sees it: no block to configure eagerly."""

    blocks: dict = {}

    def __init__(self, blocks) -> None:
        self._blocks = blocks

    def __getattr__(self, name: str):
        return getattr(self._blocks, name)


def install() -> bool:
    """Make every new ``SessionState`` build its config lazily. Returns False (and changes nothing) when
    this Gradio's ``SessionState`` no longer has the shape this relies on."""
    from gradio import state_holder

    cls = state_holder.SessionState
    if getattr(cls, "_lmlab_lazy_config", False):
        return True
    original = cls.__init__
    code = original.__code__
    if "config_values" not in code.co_names or code.co_argcount != 2:
        log.warning("gradio's SessionState changed shape: new sessions keep building their whole config")
        return False

    def __init__(self, blocks) -> None:
        original(self, _NoBlocks(blocks))  # every other field exactly as Gradio sets it up
        config = self.blocks_config
        self.config_values = LazyConfigValues(
            config.config_for_block, {k: v for k, v in config.blocks.items() if k in blocks.blocks})

    cls.__init__ = __init__
    cls._lmlab_lazy_config = True
    return True

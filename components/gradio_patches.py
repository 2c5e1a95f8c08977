"""Every change LM Lab makes to Gradio's internals, in one place, each checked against one Gradio version.

Both patches help a class of 30 on a 2-core server: Gradio spends the event loop's time where the model
needs the cores. They are installed by ``app.main()`` only (``install(demo)``), never by importing or
building the app. Each checks the shape of what it changes and does nothing, with a warning, when that
shape is gone; ``tests/test_gradio_patches.py`` fails when the installed Gradio is not ``GRADIO_CHECKED``,
so an upgrade re-checks them. Measurements: docs/BENCHMARKS.md, "What the app adds to the scheduler's
own time" and "Gradio's queue polls every millisecond".
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import gradio
from gradio import state_holder

log = logging.getLogger("lmlab.gradio_patches")

GRADIO_CHECKED = "6.31.0"  # the version whose source both patches were read against
IDLE_POLL_S = 0.02  # Gradio's queue looking for the next event to start (Gradio: 1 ms; 50 ms on Windows)
PROGRESS_POLL_S = 0.1  # Gradio's progress updates (Gradio: 10 ms; 100 ms on Windows)
_ABSENT = object()


def install(demo: gradio.Blocks) -> dict[str, bool]:
    """Install both patches for ``demo`` (call after ``demo.queue()``); returns which took effect."""
    if gradio.__version__ != GRADIO_CHECKED:
        log.warning("gradio %s: LM Lab's patches were checked against %s", gradio.__version__, GRADIO_CHECKED)
    return {"lazy session config": lazy_session_config(), "queue polling": slow_queue_polling(demo)}


def uninstall() -> None:
    """Undo the process-wide patch (``SessionState``); a queue slowed by ``slow_queue_polling`` belongs to
    its own demo and goes with it."""
    original = getattr(state_holder.SessionState.__init__, "_lmlab_original", None)
    if original is not None:
        state_holder.SessionState.__init__ = original


# -- 1. A new session's config, built when read ---------------------------------------------------------
# Gradio 6's ``SessionState.__init__`` builds, at a session's first event, the config of every component
# (``config_for_block``), used only to rebuild the page for a deep link: ~300 components here, ~38 ms of
# the event loop per new session while the model runs. A class's thirty presses queued behind it reached
# the model 1.4-1.5 s after they were made; built lazily, 0.3-0.5 s.


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


def lazy_session_config() -> bool:
    """Make every new ``SessionState`` build its config lazily, everything else as Gradio sets it up.
    Returns False, changing nothing, when ``SessionState.__init__`` no longer has the shape this relies on."""
    cls = state_holder.SessionState
    if hasattr(cls.__init__, "_lmlab_original"):
        return True
    original = cls.__init__
    code = original.__code__
    if "config_values" not in code.co_names or code.co_argcount != 2:
        log.warning("gradio's SessionState changed shape: new sessions keep building their whole config")
        return False

    def __init__(self, blocks) -> None:
        original(self, _NoBlocks(blocks))
        config = self.blocks_config
        self.config_values = LazyConfigValues(
            config.config_for_block, {k: v for k, v in config.blocks.items() if k in blocks.blocks})

    __init__._lmlab_original = original
    cls.__init__ = __init__
    return True


# -- 2. The queue's polling, every 20 ms --------------------------------------------------------------
# Gradio 6's ``Queue.start_processing`` sleeps ``sleep_when_free`` (1 ms on Linux) whenever its queue is
# empty or every worker is busy, and ``start_progress_updates`` ``progress_update_sleep_when_free``
# (10 ms): ~1,100 wake-ups of the event loop a second, each taking a core from the model for a moment.
# A class of 30: p95 16.4-17.2 s slowed against 17.7-18.7 s. The cost: an event may wait up to 20 ms
# longer to leave an empty queue, and progress bars update ten times a second.


def slow_queue_polling(demo: gradio.Blocks) -> bool:
    """Slow the polling of ``demo``'s queue (after ``demo.queue()``). Returns False, changing nothing,
    when this Gradio's queue no longer has these settings."""
    queue = getattr(demo, "_queue", None)
    if not (hasattr(queue, "sleep_when_free") and hasattr(queue, "progress_update_sleep_when_free")):
        log.warning("gradio's queue changed shape: it keeps polling at its own rate")
        return False
    queue.sleep_when_free = max(queue.sleep_when_free, IDLE_POLL_S)
    queue.progress_update_sleep_when_free = max(queue.progress_update_sleep_when_free, PROGRESS_POLL_S)
    return True

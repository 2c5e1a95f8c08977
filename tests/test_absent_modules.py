"""An optional module that is not installed is looked up on disk once, not at every event."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import pytest

from components import absent_modules

MISSING = "lmlab_module_that_is_not_installed"


class CountingFinder:
    """A meta-path finder that finds nothing and counts how often the import system asks it."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def find_spec(self, name, path=None, target=None):
        self.asked.append(name)
        return None


@pytest.fixture
def finder(monkeypatch):
    f = CountingFinder()
    monkeypatch.setattr(sys, "meta_path", [f, *sys.meta_path])
    yield f
    sys.modules.pop(MISSING, None)


def _try_import(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def test_a_missing_module_is_searched_once_then_fails_at_once(finder):
    assert not _try_import(MISSING)
    assert finder.asked.count(MISSING) == 1  # without the marker every failed import searches again
    assert absent_modules.install((MISSING,)) == [MISSING]
    finder.asked.clear()
    for _ in range(5):
        assert not _try_import(MISSING)
    assert finder.asked == []
    assert importlib.util.find_spec(MISSING) is None  # what feature checks ask still says "not installed"


def test_installed_modules_are_left_alone(finder):
    import json

    assert absent_modules.install(("json",)) == []
    assert sys.modules["json"] is json
    assert absent_modules.install((MISSING,)) == [MISSING]
    assert absent_modules.install((MISSING,)) == []  # marked once


def test_gradio_event_wrapper_still_works_with_the_marker(finder):
    """The wrapper Gradio puts around every event function must run as before (matplotlib absent or not)."""
    from gradio.utils import MatplotlibBackendMananger

    absent_modules.install()
    with MatplotlibBackendMananger():
        value = 1 + 1
    assert value == 2

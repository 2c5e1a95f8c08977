"""components/gradio_patches.py: the version each patch was read against, what each changes, and that only
``app.main()`` installs them (each test that installs one removes it again)."""

from __future__ import annotations

import asyncio
import threading
import types

import gradio as gr
import pytest
from gradio.blocks import BlocksConfig
from gradio.state_holder import SessionState

from components import gradio_patches


def test_the_installed_gradio_is_the_version_the_patches_were_checked_against() -> None:
    assert gr.__version__ == gradio_patches.GRADIO_CHECKED, (
        f"gradio is {gr.__version__}, components/gradio_patches.py was checked against "
        f"{gradio_patches.GRADIO_CHECKED}: read SessionState.__init__ (gradio/state_holder.py) and "
        "Queue.start_processing / start_progress_updates (gradio/queueing.py) in the new version, "
        "re-run these tests and benchmarks.classroom, then update GRADIO_CHECKED")


@pytest.fixture
def lazy():
    assert gradio_patches.lazy_session_config()
    yield
    gradio_patches.uninstall()
    assert not hasattr(SessionState.__init__, "_lmlab_original")


@pytest.fixture(scope="module")
def demo() -> gr.Blocks:
    with gr.Blocks() as demo:
        text = gr.Textbox(value="hello", label="in")
        choice = gr.Dropdown(choices=["a", "b"], value="a", label="pick")
        gr.State(value={"n": 1})
        gr.Markdown("**status**")
        gr.Button("go").click(lambda t: t, text, text)
        del choice
    return demo


def eager(demo: gr.Blocks) -> dict:
    """What Gradio's own SessionState.__init__ stores for a new session."""
    config = demo.default_config
    return {k: config.config_for_block(k, [], v) for k, v in config.blocks.items() if k in demo.blocks}


def test_building_the_app_changes_nothing_and_main_installs_both(monkeypatch) -> None:
    import app
    from models.core import assets

    original = SessionState.__init__
    demo = app.build_demo()
    assert SessionState.__init__ is original
    launched: list[gr.Blocks] = []
    monkeypatch.setattr(assets, "fetch_all", lambda log=None: None)  # the embedded assets are there already
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: launched.append(self))
    try:
        app.main(["--offline"])
        assert hasattr(SessionState.__init__, "_lmlab_original")
        queue = launched[0]._queue
        assert queue.sleep_when_free == gradio_patches.IDLE_POLL_S
        assert queue.progress_update_sleep_when_free == gradio_patches.PROGRESS_POLL_S
    finally:
        gradio_patches.uninstall()
    assert SessionState.__init__ is original
    assert demo._queue is None or demo._queue.sleep_when_free < gradio_patches.IDLE_POLL_S


def test_a_new_session_builds_no_config(demo, lazy, monkeypatch) -> None:
    assert gradio_patches.lazy_session_config()  # a second call changes nothing
    built: list[int] = []
    original = BlocksConfig.config_for_block

    def counting(_id, rendered_ids, block, renderable=None):
        built.append(_id)
        return original(_id, rendered_ids, block, renderable)

    monkeypatch.setattr(BlocksConfig, "config_for_block", staticmethod(counting))
    state = SessionState(demo)
    assert built == []
    first = next(iter(demo.blocks))
    assert state.config_values[first]["id"] == first
    assert built == [first]
    assert state.config_values[first] is state.config_values[first]  # built once, then kept
    assert built == [first]


def test_reads_as_gradios_eager_config(demo, lazy) -> None:
    state = SessionState(demo)
    expected = eager(demo)
    assert list(state.components) == [c for c in expected.values() if c]  # same entries, same order
    assert len(state.config_values) == len(expected)
    assert set(state.config_values) == set(expected)
    assert all(k in state.config_values for k in expected)
    assert 10**9 not in state.config_values
    with pytest.raises(KeyError):
        state.config_values[10**9]
    assert state.config_values.get(10**9, "none") == "none"


def test_updates_and_values_still_land(demo, lazy) -> None:
    state = SessionState(demo)
    text_id = next(k for k, b in demo.blocks.items() if isinstance(b, gr.Textbox))
    state._update_value_in_config(text_id, "changed")  # what a finished event does to a component's value
    assert state.config_values[text_id]["props"]["value"] == "changed"
    assert next(c for c in state.components if c["id"] == text_id)["props"]["value"] == "changed"
    state_id = next(k for k, b in demo.blocks.items() if isinstance(b, gr.State))
    assert state[state_id] == {"n": 1}  # per-session state: a deep copy of the default
    state[state_id]["n"] = 2
    assert SessionState(demo)[state_id] == {"n": 1}
    other = SessionState(demo)  # sessions do not share entries
    assert other.config_values[text_id]["props"]["value"] == "hello"
    del state.config_values[text_id]
    assert text_id not in state.config_values
    with pytest.raises(KeyError):
        del state.config_values[text_id]


def _idle_sleeps(queue, looks: int, monkeypatch) -> list[float]:
    """The pauses Gradio's own ``start_processing`` loop asks for between its first ``looks`` looks at an
    empty queue (its ``asyncio.sleep`` replaced by one that records and returns at once)."""
    import gradio.queueing

    asked: list[float] = []

    async def sleep(seconds: float) -> None:
        asked.append(seconds)
        if len(asked) == looks:
            queue.stopped = True

    monkeypatch.setattr(gradio.queueing, "asyncio", types.SimpleNamespace(sleep=sleep))
    # A thread of its own: other tests (Playwright's sync API) may leave an event loop running on this one.
    runner = threading.Thread(target=asyncio.run, args=(queue.start_processing(),))
    runner.start()
    runner.join(timeout=30)
    monkeypatch.undo()
    return asked


def _queued_demo() -> gr.Blocks:
    with gr.Blocks() as demo:
        gr.Button("x").click(lambda: None)
    return demo.queue()


def test_the_queue_waits_20_ms_between_looks_not_1_ms(monkeypatch) -> None:
    plain = _queued_demo()._queue
    assert _idle_sleeps(plain, 5, monkeypatch) == [plain.sleep_when_free] * 5
    demo = _queued_demo()
    assert gradio_patches.slow_queue_polling(demo)
    assert _idle_sleeps(demo._queue, 5, monkeypatch) == [gradio_patches.IDLE_POLL_S] * 5
    assert demo._queue.progress_update_sleep_when_free == gradio_patches.PROGRESS_POLL_S
    assert plain.sleep_when_free < gradio_patches.IDLE_POLL_S  # another demo's queue is untouched


def test_an_unknown_queue_is_left_alone() -> None:
    assert gradio_patches.slow_queue_polling(types.SimpleNamespace(_queue=object())) is False

"""A new session's config is built lazily (components.session_state) and reads the same as Gradio's own."""

from __future__ import annotations

import gradio as gr
import pytest
from gradio.blocks import BlocksConfig
from gradio.state_holder import SessionState

from components import session_state


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


def test_installed_by_the_app() -> None:
    import app

    app.build_demo()
    assert SessionState._lmlab_lazy_config
    assert session_state.install()  # a second call changes nothing


def test_a_new_session_builds_no_config(demo, monkeypatch) -> None:
    session_state.install()
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


def test_reads_as_gradios_eager_config(demo) -> None:
    session_state.install()
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


def test_updates_and_values_still_land(demo) -> None:
    session_state.install()
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

"""Under a model picker: the sizes of the compressed checkpoint (.lmhz) the chosen model runs from, or (offline)
how to get more models.

The note is the picker's own info line, so any tab can attach it to a picker it was handed, without
laying out anything in the module that built the picker.
"""

from __future__ import annotations

import gradio as gr

from models.core import registry


def picker_note(model_key: str | None, task: str) -> dict:
    """The picker's info line for ``model_key``: the .lmhz file's sizes; for a model not downloaded yet, what its
    first use does; for any other model, offline, how to get more models; else empty (hidden)."""
    # "" rather than None: an update drops None values, which would leave the previous model's line.
    return gr.update(info=registry.compressed_note(model_key, task, loaded=False) or registry.first_use_note(model_key)
                     or registry.more_models_note())


def attach(model: gr.Dropdown, task: str) -> None:
    """Keep ``model``'s info line in step with the model it shows."""

    def update(model_key):
        return picker_note(model_key, task)

    # Only the info changes, never the value, so this does not fire the picker's change again.
    model.change(update, model, model, api_visibility="private", queue=False, show_progress="hidden")

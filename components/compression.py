"""The Compress tab: two halves as sub-tabs, Checkpoint (weights) and Text (language-model coding)."""

from __future__ import annotations

import importlib.util

import gradio as gr

from components import compress_checkpoint


def build() -> None:
    with gr.Tabs():
        with gr.Tab("Checkpoint", id="compress-checkpoint"):
            compress_checkpoint.build()
        # The Text half is built in components/compress_text.py; until that module lands it is left out.
        # At integration this becomes a plain `from components import compress_text`.
        if importlib.util.find_spec("components.compress_text") is not None:
            from components import compress_text

            with gr.Tab("Text", id="compress-text"):
                compress_text.build()

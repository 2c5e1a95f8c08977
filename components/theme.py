"""One theme and stylesheet for the whole app: large type and strong contrast for a projector."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

CSS_FILE = Path(__file__).resolve().parent.parent / "assets" / "style.css"


def theme() -> gr.themes.Base:
    return gr.themes.Soft(
        primary_hue="indigo",
        secondary_hue="amber",
        neutral_hue="slate",
        text_size=gr.themes.sizes.text_lg,
        # System fonts only: the app must look right offline, with no web-font download.
        font=["system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
        font_mono=["ui-monospace", "Menlo", "Consolas", "monospace"],
    )


def css() -> str:
    return CSS_FILE.read_text(encoding="utf-8")

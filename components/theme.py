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
    ).set(
        # Projector contrast, at least 4.5:1 on the backgrounds they sit on (WCAG AA; tests/layout_check.py):
        # the Soft theme's help text, slider ends and labels are lighter (2.6 to 3.6:1).
        block_info_text_color="*neutral_600",
        body_text_color_subdued="*neutral_600",
        block_label_text_color="*primary_700",
        block_title_text_color="*primary_700",
        button_primary_background_fill="*primary_600",
        button_primary_background_fill_hover="*primary_700",
        checkbox_label_background_fill_selected="*primary_600",
        # links (a file's size beside its name): the Soft theme's amber-600 is 3.0:1
        link_text_color="*primary_700",
        link_text_color_hover="*primary_800",
        link_text_color_visited="*primary_700",
        link_text_color_active="*primary_800",
    )


def css() -> str:
    return CSS_FILE.read_text(encoding="utf-8")

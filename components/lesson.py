"""The lesson path: a "start here" strip naming the four steps (each a tab), and the link that carries
Generate's text into the compression views."""

from __future__ import annotations

import gradio as gr

# (tab id, what the strip says): the story's order; the practitioner tabs follow it.
STEPS = [
    ("generate", "1 · The model writes"),
    ("inside", "2 · Inside one step"),
    ("compress", "3 · The same probabilities compress"),
    ("sampling", "4 · Sampling is decompression"),
]


def strip() -> list[tuple[gr.Button, str]]:
    """The strip above the tabs; returns its buttons with the tab each opens (wire them with ``wire``)."""
    with gr.Row(elem_id="lesson-strip", equal_height=False):
        gr.HTML("<b>Start here →</b>", elem_id="lesson-intro", padding=False)
        buttons = [gr.Button(label, size="sm", elem_id=f"lesson-{tab}", min_width=150) for tab, label in STEPS]
    return list(zip(buttons, (tab for tab, _ in STEPS), strict=True))


def _open(tab: str):
    return lambda: gr.Tabs(selected=tab)


def wire(tabs: gr.Tabs, steps: list[tuple[gr.Button, str]]) -> None:
    for button, tab in steps:
        button.click(_open(tab), None, tabs, queue=False, api_visibility="private")


def carry_text(prompt: str, output: str, model_key: str, compress_models: list[str]):
    """Generate's prompt + generated text into the Compress tab (its upload cleared, the same model when the
    Compress tab offers it), and that tab opened."""
    text = (prompt or "") + (output or "")
    model = gr.update(value=model_key) if model_key in compress_models else gr.update()
    return text, None, model, gr.Tabs(selected="compress")


def link_compress(tabs: gr.Tabs, carry: gr.Button, generate: dict, compress: dict) -> None:
    """"Compress this text": carry the text, open the Compress tab and compress it with every coder."""
    keys = [key for _, key in compress["model"].choices]
    event = carry.click(lambda p, o, m: carry_text(p, o, m, keys), [generate["prompt"], generate["output"],
                        generate["model"]], [compress["text"], compress["upload"], compress["model"], tabs],
                        queue=False, api_visibility="private")
    compress["compress_after"](event)

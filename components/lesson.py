"""The lesson path: a "start here" strip naming the four steps (each a tab), and the link that carries
Generate's text into the compression views."""

from __future__ import annotations

import gradio as gr

from models.compression.text import compare as text_compare

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
    Compress tab offers it), and that tab opened; last, the text carried (what the box now holds)."""
    text = (prompt or "") + (output or "")
    model = gr.update(value=model_key) if model_key in compress_models else gr.update()
    return text, None, model, gr.Tabs(selected="compress"), text


def link_compress(tabs: gr.Tabs, carry: gr.Button, generate: dict, compress: dict, carried: gr.State) -> None:
    """"Compress this text": carry the text, open the Compress tab and compress it with every coder."""
    keys = [key for _, key in compress["model"].choices]
    event = carry.click(lambda p, o, m: carry_text(p, o, m, keys), [generate["prompt"], generate["output"],
                        generate["model"]], [compress["text"], compress["upload"], compress["model"], tabs, carried],
                        queue=False, api_visibility="private")
    compress["compress_after"](event)


def _holds_an_example(text: str) -> bool:
    return not text or any(text == text_compare.example_text(name) for name in text_compare.EXAMPLES)


def carry_on_step(prompt: str, output: str, model_key: str, text: str, carried: str, compress_models: list[str]):
    """Step 3 of the strip: Generate's prompt + generated text into the Compress box (not compressed yet), when
    something was generated and the box holds one of its examples, nothing, or the text carried from Generate
    before (a generation still running then, or an earlier one); a text the user put there stays."""
    if not output or not (_holds_an_example(text or "") or (carried and text == carried)):
        return gr.update(), gr.update(), gr.update(), gr.update()
    text, upload, model, _, carried = carry_text(prompt, output, model_key, compress_models)
    return text, upload, model, carried


def link(tabs: gr.Tabs, steps: list[tuple[gr.Button, str]], generate: dict, compress: dict) -> None:
    """Generate's text into the Compress tab: its "Compress this text" button, and the strip's "3 · The same
    probabilities compress", which brings the text step 1 wrote along (the lesson's point is that the same
    model compresses what it wrote; the strip only opened the tab, on the example paragraph)."""
    carried = gr.State("")  # the text last carried, so that step 3 pressed again brings the finished text
    link_compress(tabs, generate["carry"], generate, compress, carried)
    keys = [key for _, key in compress["model"].choices]
    button = next(b for b, tab in steps if tab == "compress")
    button.click(lambda p, o, m, t, c: carry_on_step(p, o, m, t, c, keys),
                 [generate["prompt"], generate["output"], generate["model"], compress["text"], carried],
                 [compress["text"], compress["upload"], compress["model"], carried], queue=False,
                 api_visibility="private")

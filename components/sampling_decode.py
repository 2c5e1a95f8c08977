"""Step 4 of the lesson, "sampling is decompression": random bits decoded into text, and the same decode
drawn step by step. Both views read the same seed's bits, the same start text and the same model."""

from __future__ import annotations

import gradio as gr

from components import model_note
from components.common import WholeNumber, WholeSlider, explain, guard, md_literal
from components.compress_text import heat_map, model_choices, steps_table, with_model_note
from components.plots import END_OF_TEXT, interval_figure
from components.tokens import TIP_INSIDE_JS
from models.compression.text import coding_steps, lm_codec
from models.core import registry
from models.core.errors import InputError

EXPLANATION = """
An arithmetic **decoder** reads a number u in [0, 1) and, at each step, finds the token whose slice of the
interval u falls into: that token is the output, and its slice becomes the new interval. Given a compressed
file, u is the file's bits and the output is the original text. Given **random bits**, u is a random number,
and the output is a text the model finds likely: a sample at temperature 1, each token chosen with exactly
its probability. So sampling *is* decompression of random bits, and the same seed always gives the same text.
A token of probability p uses −log₂ p of the random bits. The text ends where the model ends it: when u falls
into the slice of its end-of-text token, as generation stops there.
"""


def _label(model_key: str) -> str:
    return {s.key: s.label for s in registry.catalogue(registry.CAUSAL_LM)}.get(model_key, model_key)


def _context(model_key: str, seed: int, prompt: str, bits: str) -> str:
    """The line both views print above themselves: what they decode, with what."""
    start = f"after the start text «{md_literal(prompt)}»" if prompt else "from the start of a text (no start text)"
    return (f"Decoding the random bits of **seed {seed}**, u = 0.{bits[:32]}…, with **{_label(model_key)}**, "
            f"{start}.")


def _run(model_key, seed, n_tokens, prompt):
    if seed is None or n_tokens is None:
        raise InputError("choose a seed and a number of tokens")
    loaded = registry.load_causal_lm(model_key)
    bits, steps = coding_steps.sampling_steps(loaded, int(seed), int(n_tokens), prompt or "")
    return bits, steps, loaded


def _cost(bits: str, steps: list[coding_steps.Step]) -> str:
    """What the tokens cost under the model and how many of u's bits the decoder read to decide them."""
    last, n = steps[-1], len(steps)
    read = coding_steps.bits_read(bits, last.low, last.width)
    return (f"The {n} {'token' if n == 1 else 'tokens'}{', the end included,' if last.end else ''} cost "
            f"**{last.total_bits:.0f} bits** under the model ({last.total_bits / n:.2f} bits/token)"
            + (f"; to decide them the decoder read the first **{read} bits** of u." if read is not None else "."))


def _ended(steps: list[coding_steps.Step]) -> str:
    """The sentence for a decode the model ended: where, and that the end token writes no text."""
    n = len(steps)
    after = f"after {n - 1} {'token' if n == 2 else 'tokens'}" if n > 1 else "at once"
    return (f"The model **ended its text here, {after}**: token {n} is its end-of-text token ({END_OF_TEXT}), "
            "which writes nothing, so the decode stops there")


@guard
def sample_bits(model_key, seed, n_tokens, prompt):
    """Sampling is decompression: decode the seed's random bits with the model after the start text, up to
    ``n_tokens`` tokens or the model's end-of-text token (then the last of the decoded tokens).
    Returns (start text + decoded text, bits-per-token heat map HTML with the end token drawn as such, note)."""
    bits, steps, loaded = _run(model_key, seed, n_tokens, prompt)
    text = "".join(s.token for s in steps)  # an end token's text is "": it writes nothing
    head = (f"{_ended(steps)} rather than go on to {int(n_tokens)}." if steps[-1].end
            else f"Decoded **{len(steps)} tokens**.")
    note = (_context(model_key, int(seed), prompt or "", bits)
            + f"\n\n{head} {_cost(bits, steps)} Same seed, same text.")
    tokens = [lm_codec.TokenCost(END_OF_TEXT if s.end else s.token, s.bits) for s in steps]
    return (prompt or "") + text, heat_map(tokens, dom_id="sd-heat-map"), with_model_note(note, loaded)


@guard
def sampling_steps(model_key, seed, n_tokens, prompt):
    """The same decode as ``sample_bits``, its first steps drawn: u falls into one slice per step (the model's
    end-of-text token, if it comes, is the last). Returns (figure, steps table HTML, note)."""
    n = min(int(n_tokens or coding_steps.MAX_STEPS), coding_steps.MAX_STEPS)
    bits, steps, loaded = _run(model_key, seed, n, prompt)
    shown = "".join(s.token for s in steps)
    ended = steps[-1].end
    # Past MAX_STEPS the decoded text may go on or end: only what these steps decided is said.
    more = (f" (the first {n} steps; the decoded text goes on, to {int(n_tokens)} tokens at most)"
            if not ended and int(n_tokens) > n else "")
    note = (_context(model_key, int(seed), prompt or "", bits)
            + f"\n\nAt each step u falls into one token's slice of the interval; that token is the sample, and its "
              f"slice becomes the new interval. Decoded{more}: «{md_literal(shown)}»"
            + (f". {_ended(steps)}." if ended else ".") + f" {_cost(bits, steps)}")
    fig = interval_figure(steps, "Sampling = decoding: u falls into one slice per step")
    return fig, steps_table(steps, sampling=True), with_model_note(note, loaded)


def build() -> dict:
    """Lay out and wire the step; returns its start-text box (the lesson path fills it)."""
    with gr.Row(equal_height=False):
        choices = model_choices()
        model = gr.Dropdown(choices=choices, value=choices[0][1], label="Model", elem_id="sd-model", scale=3)
        seed = WholeNumber(value=0, minimum=0, label="Seed (the random bits)", elem_id="sd-seed", scale=1)
    with gr.Row(equal_height=False):
        n_tokens = WholeSlider(5, coding_steps.SAMPLE_MAX, value=40, label="Tokens to decode", elem_id="sd-n", scale=2)
        prompt = gr.Textbox(label="Start of the text (may be empty)", value="Once upon a time", elem_id="sd-prompt",
                            scale=3)
    with gr.Row():
        sample_btn = gr.Button("Decode random bits", variant="primary", elem_id="sd-sample")
        sp_btn = gr.Button("Show the random number falling into one slice per step", elem_id="sd-steps")
    with gr.Tabs(elem_id="sd-views", overflow_behavior="wrap") as views:
        with gr.Tab("The decoded text", id="sd-text-tab"):
            sample_note = gr.Markdown(elem_id="sd-note", elem_classes=["lmlab-context"])
            sample_text = gr.Textbox(label="Decoded text", lines=4, interactive=False, elem_id="sd-text")
            sample_heat = gr.HTML(elem_id="sd-heat", js_on_load=TIP_INSIDE_JS)
        with gr.Tab("Step by step", id="sd-steps-tab"):
            sp_note = gr.Markdown(elem_id="sd-steps-note", elem_classes=["lmlab-context"])
            sp_plot = gr.Plot(label="Sampling as decoding, step by step", show_label=False, elem_id="sd-plot")
            sp_table = gr.HTML(elem_id="sd-table")
    explain("Why is sampling the same as decompressing random bits?", EXPLANATION)

    model_note.attach(model, registry.CAUSAL_LM)
    inputs = [model, seed, n_tokens, prompt]
    # Each button shows its own view; both views stay one click away. The view first: Gradio's page runs one
    # trigger's handlers in the order they were added, so added after the decoding it waited for all of it.
    sample_btn.click(lambda: gr.Tabs(selected="sd-text-tab"), None, views, queue=False, api_visibility="private")
    sample_btn.click(sample_bits, inputs, [sample_text, sample_heat, sample_note], api_name="sample_from_bits",
                     concurrency_id="model", show_progress_on=[sample_text])
    sp_btn.click(lambda: gr.Tabs(selected="sd-steps-tab"), None, views, queue=False, api_visibility="private")
    sp_btn.click(sampling_steps, inputs, [sp_plot, sp_table, sp_note], api_name="sampling_steps",
                 concurrency_id="model", show_progress_on=[sp_plot])
    return {"prompt": prompt, "model": model}

"""The Compress tab's "classic coders + language model in one compressor" view: which predictor won each
token (the model, an n-gram context, the match model), the mixer's weights along the text, and the bits
each saved. The computation is ``models.compression.text.mixing_picture``; this module only draws it."""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr
import plotly.graph_objects as go

from components.common import guard
from components.plots import FONT
from models.compression.text import compare as text_compare
from models.compression.text import lm_codec, mixing_picture
from models.core import registry
from models.core.errors import InputError

UI_CODEC = lm_codec.PRESETS["fast"]  # the Compress tab's own coder settings

EXPLANATION = (
    "**Classic coders + language model in one compressor.** A language model knows a language; the **classic** predictors know *this* text. The **n-gram** "
    "predictors count what followed the last 1 to 4 tokens so far; the **match** predictor finds the last "
    "place the recent tokens occurred (LZ77's idea, used to predict) and proposes what came next there. A "
    "**mixer** blends their guesses with the model's, token by token, and learns from every token which of them "
    "to trust: the weights below move as it learns. The decoder repeats exactly the same steps, so it needs "
    "nothing but the file.")

# one colour per predictor family; n-gram orders get darker with the context length
_COLOURS = {"model": "#cbd5e1", "match": "#fb923c"}
# (dark text stays readable, 4.5:1 or more, on the five lightest: the default mixer uses orders 1-4)
_NGRAM = ["#dcfce7", "#bbf7d0", "#86efac", "#4ade80", "#22c55e", "#16a34a", "#15803d", "#166534"]


def _colour(expert: str, experts: list[str]) -> str:
    if expert in _COLOURS:
        return _COLOURS[expert]
    grams = [e for e in experts if e.endswith("-gram")]
    return _NGRAM[min(grams.index(expert), len(_NGRAM) - 1)]


def _input(text: str | None, upload) -> bytes:
    if upload:
        return Path(upload if isinstance(upload, str) else upload.name).read_bytes()
    return (text or "").encode("utf-8")


def _tokens_html(p: mixing_picture.MixPicture, limit: int = 3000) -> str:
    parts = []
    for t in p.tokens[:limit]:
        shown = html.escape(t.text).replace("\n", "↵<br>")
        tip = (f"won by {t.winner}: {t.bits_model:.2f} bits under the model alone, {t.bits_mixed:.2f} bits mixed "
               f"({_bits(t.bits_model - t.bits_mixed, 2)} mixed)")
        parts.append(f"<span class='tok' style='background:{_colour(t.winner, p.experts)}' title='{tip}'>{shown}</span>")
    legend = "".join(f"<span style='background:{_colour(e, p.experts)};padding:0 6px;margin-right:6px'>{e}</span>"
                     for e in p.experts)
    more = f" (first {limit:,} tokens shown)" if len(p.tokens) > limit else ""
    return (f"<div class='tokview' id='mx-winners'>{''.join(parts)}</div>"
            f"<div class='tokview-legend'>colour = the predictor that gave the token the highest probability: "
            f"{legend}{more} · hover a token for its bits</div>")


def _weights_figure(p: mixing_picture.MixPicture) -> go.Figure:
    fig = go.Figure()
    xs = list(range(1, len(p.tokens) + 1))
    for i, expert in enumerate(p.experts):
        fig.add_scatter(x=xs, y=[t.weights[i] for t in p.tokens], mode="lines", name=expert, stackgroup="w",
                        line=dict(width=0.5, color=_colour(expert, p.experts)))
    fig.update_layout(font=FONT, height=360, margin=dict(l=60, r=10, t=50, b=40), yaxis=dict(range=[0, 1]),
                      title="Mixer weights per token",
                      xaxis_title="token", yaxis_title="weight", legend=dict(font=dict(size=12)))
    return fig


def _bits(bits: float, digits: int = 1) -> str:
    """Bits against the model alone with the direction in words ("2.0 more"): a signed number next to "saved"
    or "lost" reads both ways."""
    if round(bits, digits) == 0:
        return "the same"
    return f"{abs(bits):,.{digits}f} {'fewer' if bits > 0 else 'more'}"


def _spent(bits: float) -> str:
    b = _bits(bits)
    return "as many bits as the model alone" if b == "the same" else f"**{b.replace(' ', ' bits ', 1)}** than the model alone"


def _saved_table(p: mixing_picture.MixPicture) -> str:
    saved, wins = p.bits_saved, p.wins
    rows = "".join(f"<tr><td><span style='background:{_colour(e, p.experts)};padding:0 6px'>{e}</span></td>"
                   f"<td>{wins[e]:,}</td><td>{_bits(saved[e])}</td></tr>" for e in p.experts)
    total = (f"<tr class='mx-total'><td><b>all tokens</b></td><td>{len(p.tokens):,}</td>"
             f"<td><b>{_bits(p.coded_bits_saved)}</b></td></tr>")
    return ("<table class='mx-saved'><tr><th>predictor</th><th>tokens it won</th>"
            f"<th>the mixing coder's bits on those tokens, against the model alone</th></tr>{rows}{total}</table>"
            "<p>On the tokens the model itself predicted best, mixing costs a little: the mixture gives the other "
            "predictors a share. It pays where they win. A weight is 0 where a predictor had nothing to say (a "
            "context it has not seen yet).</p>")


def _sizes(p: mixing_picture.MixPicture) -> str:
    """The two files compared in bytes, and why their difference is not the table's total."""
    diff = p.file_model_bytes - p.file_mixed_bytes
    which = ("the same size" if diff == 0 else
             f"**{abs(diff):,} byte{'s' if abs(diff) != 1 else ''} {'smaller' if diff > 0 else 'larger'}**")
    head_model = p.file_model_bytes - p.payload_model_bytes
    head_mixed = p.file_mixed_bytes - p.payload_mixed_bytes
    return (f"Model alone: **{p.file_model_bytes:,} bytes** ({8 * p.file_model_bytes / p.n_bytes:.3f} bits/byte); "
            f"model + n-gram + match: **{p.file_mixed_bytes:,} bytes** ({8 * p.file_mixed_bytes / p.n_bytes:.3f} "
            f"bits/byte), {which}.\n\n"
            f"Token by token the mixing coder spent {_spent(p.coded_bits_saved)} (the table's last row). The files' "
            "sizes also hold their headers "
            f"({head_model:,} and {head_mixed:,} bytes) and the coded tokens rounded up to whole 32-bit words "
            f"({p.payload_model_bytes:,} and {p.payload_mixed_bytes:,} bytes), so they differ by whole bytes.")


def _lesson(p: mixing_picture.MixPicture) -> str:
    """What this result teaches: where the classic predictors won, or why they did not here."""
    classic = sum(t.winner != "model" for t in p.tokens)
    if p.file_mixed_bytes < p.file_model_bytes:
        return (f"The classic predictors gave {classic:,} of the {len(p.tokens):,} tokens their highest probability "
                "(the coloured ones): where the text repeats itself, they know what comes next.")
    return ("Here the model alone did as well: within its window the network already copies what it has read, and "
            "a short text leaves the classic predictors little to learn. They win where a text repeats itself: try "
            f"the example “{text_compare.RHYME}”.")


@guard
def mix_text(text, upload, model_key, progress=gr.Progress()):
    """Code the text with the model alone and with the mixer (both verified); show who won each token."""
    data = _input(text, upload)
    if not data:
        raise InputError("there is nothing to mix: paste some text or pick an example")
    loaded = registry.load_causal_lm(model_key)
    p = mixing_picture.picture(data, loaded, UI_CODEC,
                               progress=lambda d, t: progress(d / max(t, 1), desc=f"coding token {d}/{t}"))
    status = (f"✅ {p.n_bytes:,} bytes, {len(p.tokens):,} tokens, both files decoded and compared.\n\n{_sizes(p)}\n\n"
              + _lesson(p))
    return status, _tokens_html(p), _weights_figure(p), _saved_table(p)


def _starting():
    return ("⏳ Coding the text with the model alone and mixed (one pass of the model for both), then decoding both "
            "files to check them: one model step per token each way. The bar below shows the progress.", "", None, "")


def build(text: gr.Textbox, upload: gr.File | None, model: gr.Dropdown) -> gr.Markdown:
    """The view (inside the caller's tab or column), reading the Compress tab's text, upload and model.
    Returns its status line (the caller marks it stale when the text changes)."""
    gr.Markdown(EXPLANATION)
    btn = gr.Button("Mix the model with the n-gram and match predictors", variant="primary", elem_id="mx-go")
    status = gr.Markdown(elem_id="mx-status")
    winners = gr.HTML(elem_id="mx-winners-view")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=460):
            weights = gr.Plot(label="The mixer's weights", show_label=False, elem_id="mx-weights")
        with gr.Column(scale=2, min_width=300):
            saved = gr.HTML(elem_id="mx-saved")
    inputs = [text, upload, model] if upload is not None else [text, gr.State(None), model]
    outputs = [status, winners, weights, saved]
    # The last picture goes at once and the status says what runs (the old one stayed, faded, for the minute or
    # two a longer text takes, under a banner calling it stale); then the coding.
    btn.click(_starting, None, outputs, queue=False, api_visibility="private", show_progress="hidden").then(
        mix_text, inputs, outputs, api_name="mixing_picture", concurrency_id="model", show_progress_on=[winners])
    return status

"""Under the Generate tab: inside one step — the logit lens and one head's attention for the prefix."""

from __future__ import annotations

import gradio as gr
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from components.common import WholeSlider, context_html, explain, guard, stale_js
from components.plots import FONT, token_label
from models.core import registry, zerogpu
from models.generation import inside_step

EXPLANATION = """
A transformer turns the prefix into one vector per token and refines those vectors layer by layer; only the last
layer's vector at the last position is turned into the next-token distribution (final norm, then the output layer).

- **Logit lens**: apply that same final norm and output layer to the vector after *every* layer, as if the model
  stopped there. Each row shows that layer's top guesses; the right panel follows the probability of the model's
  final answer through depth. The bottom row (embeddings) often just repeats the last token; the answer usually
  appears only in the last layers.
- **Attention**: each layer has several heads; a head's weights say how much each token (row) reads from each
  earlier token (column). A row sums to 1; tokens never look ahead (the upper triangle is empty). The bottom row is
  the last token: what the next step reads from.
"""


def lens_figure(lens: inside_step.LogitLens) -> go.Figure:
    """Layers (embeddings at the bottom) x top-k guesses, coloured by probability; beside it p(final token)."""
    rows = lens.rows
    labels = [r.label for r in rows]
    k = len(rows[0].tokens)
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, column_widths=[0.78, 0.22], horizontal_spacing=0.02,
                        subplot_titles=(f"top {k} guesses after each layer",
                                        f"p({token_label(lens.final_token)}) by layer"))
    fig.add_trace(go.Heatmap(
        z=[r.probs for r in rows], x=[f"#{i + 1}" for i in range(k)], y=labels,
        text=[[f"{token_label(t)}<br>{p:.0%}" for t, p in zip(r.tokens, r.probs, strict=True)] for r in rows],
        texttemplate="%{text}", textfont=dict(size=13), colorscale="YlGnBu", zmin=0, zmax=1, showscale=False,
        xgap=2, ygap=2, hovertemplate="%{y}, guess %{x}: %{text}<extra></extra>",
    ), row=1, col=1)
    fig.add_trace(go.Bar(x=[r.final_token_prob for r in rows], y=labels, orientation="h", marker_color="#f59e0b",
                         text=[f"{r.final_token_prob:.0%}" for r in rows], textposition="outside", cliponaxis=False,
                         hovertemplate="%{y}: %{x:.1%}<extra></extra>"), row=1, col=2)
    fig.update_xaxes(range=[0, 1.3], tickformat=".0%", row=1, col=2)
    fig.update_xaxes(title="guesses, most likely first (colour = probability)", row=1, col=1)
    fig.update_layout(font=FONT, height=max(420, 34 * len(rows) + 170), margin=dict(l=150, r=20, t=90, b=60),
                      title=f"Logit lens, layer by layer: the model says {token_label(lens.final_token)}",
                      showlegend=False)
    return fig


def attention_figure(att: inside_step.AttentionMap) -> go.Figure:
    """Query rows x key columns of one head; an 'earlier' column holds the weight on tokens left of the window."""
    # Position numbers keep repeated tokens apart (plotly merges equal category labels).
    names = [f"{att.offset + i}: {token_label(t)}" for i, t in enumerate(att.tokens)]
    if not att.offset:  # the token every text starts with (the model's <|endoftext|> or <bos>): named for what it is
        names[0] = "0: start token"
    z = [list(row) for row in att.weights]
    x = list(names)
    if att.offset:
        z = [[e, *row] for e, row in zip(att.earlier, z, strict=True)]
        x = [f"0–{att.offset - 1}: earlier", *x]
    # The causal mask makes the upper triangle exactly 0: draw it as empty, not as "no attention".
    z = [[None if j > i + (1 if att.offset else 0) else v for j, v in enumerate(row)] for i, row in enumerate(z)]
    small = len(names) <= 16
    fig = go.Figure(go.Heatmap(
        z=z, x=x, y=names, colorscale="Blues", zmin=0, zmax=1, colorbar=dict(title=dict(text="weight", side="right")),
        # ".98" rather than "0.98": at 800 px seventeen columns of "0.98" touched each other.
        text=[["" if v is None else f"{v:.2f}".lstrip("0") or "0" for v in row] for row in z],
        texttemplate="%{text}" if small else None, textfont=dict(size=12),
        hovertemplate="%{y} reads %{x}: %{z:.3f}<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed", title="query (the token reading)")
    fig.update_xaxes(title="key (the token read)", tickangle=-45)
    fig.update_layout(font=FONT, height=max(460, 34 * len(names) + 240), margin=dict(l=40, r=20, t=60, b=40),
                      title=f"Attention, layer {att.layer}, head {att.head}: last {len(names)} of {att.total_tokens} tokens")
    return fig


# What the views read: the README's "The capital of France is" -> " Paris" needs the bare prompt.
READ_CHOICES = [("prompt + generated text", "both"), ("the prompt only", "prompt")]


def prefix(prompt: str, output: str, read: str = "both") -> str:
    """The text a view of the next step reads: the prompt, plus the generated text unless ``read`` is "prompt"."""
    return (prompt or "") + ("" if read == "prompt" else (output or ""))


@guard
def logit_lens(prompt, output, model_key, top_k, read="both"):
    """Logit lens of the prefix (prompt + generated text, or the prompt only): (figure, status, context HTML)."""
    text = prefix(prompt, output, read)
    lens = inside_step.logit_lens(registry.load_causal_lm(model_key), text, top_k)
    # counted as the attention map counts them: the start token is one of the tokens the model reads
    status = (f"{len(lens.prefix_tokens) + 1} tokens read (the start token and {len(lens.prefix_tokens)} of the text) · "
              f"{len(lens.rows) - 1} layers · next token {token_label(lens.final_token)}")
    return (lens_figure(lens), (f"**Note:** {lens.notice} · " if lens.notice else "") + status,
            context_html(text, "The logit lens and the attention map read", model_key))


@guard
def attention(prompt, output, model_key, layer, head, window, read="both"):
    """One layer's and head's attention weights over the end of the prefix: a figure."""
    att = inside_step.attention_map(registry.load_causal_lm(model_key), prefix(prompt, output, read), layer, head,
                                    window)
    return attention_figure(att)


def _shape_update(model_key):
    """Slider ranges for the chosen model (read from its config; unchanged if that cannot be read)."""
    shape = inside_step.config_shape(model_key)
    if shape is None:
        return gr.update(), gr.update()
    layers, heads = shape
    return gr.update(maximum=layers, value=1), gr.update(maximum=heads, value=1)


def build(prompt: gr.Textbox, output: gr.Textbox, model: gr.Dropdown) -> None:
    """Lay out and wire the view; reads the Generate tab's prompt, generated text and model."""
    layers, heads = inside_step.config_shape(model.value) or (12, 12)
    with gr.Tab("Logit lens and attention", id="inside-lens", elem_id="step-accordion"):
        read = gr.Radio(READ_CHOICES, value="both", label="Read", elem_id="step-read",
                        info="the Generate tab's prompt, with or without the text generated after it")
        with gr.Row():
            top_k = WholeSlider(1, 10, value=5, label="Guesses per layer", info="top-k of the logit lens",
                              elem_id="step-top-k")
            layer = WholeSlider(1, layers, value=1, label="Attention layer", info="1 = first block",
                              elem_id="step-layer")
            head = WholeSlider(1, heads, value=1, label="Attention head", info="1 = first head",
                               elem_id="step-head")
            window = WholeSlider(4, 48, value=16, label="Tokens shown",
                               info="the attention map shows the last n tokens", elem_id="step-window")
        look = gr.Button("Look inside the next step", variant="primary", elem_id="step-go")
        context = gr.HTML(elem_id="step-context", padding=False)
        status = gr.Markdown("", elem_classes=["lmlab-status"], elem_id="step-status")
        lens_plot = gr.Plot(label="Logit lens", show_label=False, elem_id="step-lens")
        attn_plot = gr.Plot(label="Attention weights", show_label=False, elem_id="step-attention")
        explain("What do these pictures show?", EXPLANATION)

    lens_inputs = [prompt, output, model, top_k, read]
    attn_inputs = [prompt, output, model, layer, head, window, read]
    lens_outputs = [lens_plot, status, context]
    # Gradio's progress timer goes on the pictures, never on the lines a class reads (it would show a previous
    # run's estimate there): here and on every tab.
    look.click(zerogpu.gpu(logit_lens), lens_inputs, lens_outputs, api_name="logit_lens", concurrency_id="model",
               show_progress_on=[lens_plot])
    look.click(zerogpu.gpu(attention), attn_inputs, attn_plot, api_name="attention", concurrency_id="model")
    # `input` fires for a drag and for a number typed in the box (`release` only for the mouse); always_last
    # drops the intermediate positions of a drag.
    top_k.input(zerogpu.gpu(logit_lens), lens_inputs, lens_outputs, api_visibility="private",
                concurrency_id="model", trigger_mode="always_last", show_progress_on=[lens_plot])
    for slider in (layer, head, window):
        slider.input(zerogpu.gpu(attention), attn_inputs, attn_plot, api_visibility="private",
                     concurrency_id="model", trigger_mode="always_last")
    # A changed text (typed prompt, a new generation, the other reading) makes the pictures stale.
    stale = stale_js("Look inside the next step", plots=2, texts=1, reads_prefix=True)
    for changed in (prompt.change, output.change, read.change, model.change):
        changed(None, [context, prompt, output, read, model], [context, lens_plot, attn_plot, status], js=stale,
                api_visibility="private", queue=False)
    model.change(_shape_update, model, [layer, head], api_visibility="private", queue=False)


"""Under the Generate tab: the beam-search tree for the prompt, next to greedy decoding and sampling."""

from __future__ import annotations

import gradio as gr
import plotly.graph_objects as go

from components.common import WholeNumber, WholeSlider, context_html, explain, guard, stale_js
from components.plots import FONT, token_label
from models.core import registry, zerogpu
from models.generation import beam_tree

EXPLANATION = """
**Beam search** keeps the *n* most likely partial texts (the beams) instead of one. At each step every beam is
extended by its best next tokens, all candidates are ranked by their **surprisal in bits** (the sum of −log₂ p of
their tokens: fewer bits = more likely, and the bits an arithmetic coder would spend on that text), and only the
best *n* survive: the others are **pruned** (grey). A beam that ends with the end-of-text token is set aside as a
finished hypothesis.

The **length penalty** ranks finished hypotheses by their log-probability divided by length^penalty (the beam
score, in ln p as `generate()` reports it): above 0 it favours longer texts, below 0 shorter ones. The highlighted
path is what `generate(num_beams=…)` returns.

**Greedy** decoding is beam search with one beam: it can miss a better text whose first token looked worse.
**Sampling** draws each token at random: less likely overall (more bits) but less repetitive.
"""

COLOURS = {"best": "#ea580c", "returned": "#4f46e5", "pruned": "#cbd5e1", "root": "#334155"}
TEXT_COLOURS = {"best": "#9a3412", "returned": "#3730a3", "pruned": "#94a3b8", "root": "#334155"}
WIDTHS = {"best": 5, "returned": 3, "pruned": 2}
TABLE_COLUMNS = ("method", "continuation", "tokens", "bits (−log₂ p, fewer = likelier)", "bits per token",
                 "ln p (natural log, = −bits × ln 2)", "beam score (ln p / length ^ penalty)")


def _layout(tree: beam_tree.BeamTree) -> dict[int, float]:
    """y of every node: leaves one row apart (most likely on top), a parent centred on its children."""
    children: dict[int, list[beam_tree.BeamNode]] = {}
    for node in tree.nodes[1:]:
        children.setdefault(node.parent, []).append(node)
    y: dict[int, float] = {}
    next_row = [0.0]

    def place(node_id: int) -> float:  # depth ≤ 24 (max new tokens): recursion is fine
        kids = sorted(children.get(node_id, []), key=lambda n: -n.cum_logprob)
        if not kids:
            y[node_id] = next_row[0]
            next_row[0] -= 1
        else:
            ys = [place(k.id) for k in kids]
            y[node_id] = sum(ys) / len(ys)
        return y[node_id]

    place(0)
    return y


def tree_figure(tree: beam_tree.BeamTree) -> go.Figure:
    """Nodes at (step, row) labelled token and cumulative bits; edges coloured best / returned / pruned."""
    y = _layout(tree)
    nodes = tree.nodes
    fig = go.Figure()
    for status, name in (("pruned", "pruned"), ("returned", "other finished beams"), ("best", "the text beam search returns")):
        xs, ys = [], []
        for n in nodes[1:]:
            if n.status == status:
                xs += [nodes[n.parent].step, n.step, None]
                ys += [y[n.parent], y[n.id], None]
        fig.add_scatter(x=xs, y=ys, mode="lines", name=name, hoverinfo="skip",
                        line=dict(color=COLOURS[status], width=WIDTHS[status], dash="dot" if status == "pruned" else "solid"))
    labels = ["prompt"] + [f"{token_label(n.token)}<br>{n.cum_bits:.1f} bits" for n in nodes[1:]]
    hover = ["the prompt"] + [f"{token_label(n.token)}: {n.bits:.2f} bits (ln p = {n.logprob:.2f}); {n.cum_bits:.2f} bits "
                              f"from the prompt ({n.status})" for n in nodes[1:]]
    fig.add_scatter(
        x=[n.step for n in nodes], y=[y[n.id] for n in nodes], mode="markers+text", text=labels, hovertext=hover,
        hoverinfo="text", textposition="top center", showlegend=False,
        marker=dict(size=[14 if n.status == "best" else 10 for n in nodes], color=[COLOURS[n.status] for n in nodes]),
        textfont=dict(size=15, color=[TEXT_COLOURS[n.status] for n in nodes]),
    )
    rows = -min(y.values()) + 1
    best = tree.best
    fig.update_layout(
        font=FONT, height=max(420, 62 * rows + 160), margin=dict(l=20, r=20, t=90, b=50),
        # one line that fits 800 px: the returned text itself is the table's first row, below
        title=f"{tree.num_beams} beams: the orange path is the text returned ({best.bits:.1f} bits)",
        legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0),
        xaxis=dict(title="step (new token)", dtick=1, range=[-0.5, tree.max_new_tokens + 0.6]),
        yaxis=dict(visible=False, range=[min(y.values()) - 0.6, 0.9]),
        plot_bgcolor="white",
    )
    return fig


@guard
def beam_search(prompt, model_key, num_beams, length_penalty, max_new_tokens, temperature, seed):
    """Beam tree for the prompt and the comparison table: (figure, table rows, status, context HTML)."""
    loaded = registry.load_causal_lm(model_key)
    tree = beam_tree.beam_tree(loaded, prompt, num_beams, length_penalty, max_new_tokens)
    rows = beam_tree.side_by_side(loaded, prompt, tree, temperature, seed)
    table = [[r.method, r.text.replace("\n", "↵"), r.n_tokens, round(r.bits, 2), round(r.bits_per_token, 2),
              round(r.cum_logprob, 3), round(r.extra["score"], 3) if "score" in r.extra else ""] for r in rows]
    pruned = sum(n.status == "pruned" for n in tree.nodes)
    drawn = len(tree.nodes) - 1
    status = (f"{drawn} {'candidate' if drawn == 1 else 'candidates'} drawn · {pruned} pruned · "
              f"{len(tree.hypotheses)} finished {'hypothesis' if len(tree.hypotheses) == 1 else 'hypotheses'} · "
              f"numbers on the tree: bits from the prompt to that token (−log₂ p, fewer = more likely)")
    return (tree_figure(tree), table, (f"**Note:** {tree.notice} · " if tree.notice else "") + status,
            context_html(prompt or "", "Beam search, greedy decoding and sampling continue the prompt", model_key))


def build(prompt: gr.Textbox, output: gr.Textbox, model: gr.Dropdown) -> None:
    """Lay out and wire the view; reads the Generate tab's prompt and model (the generated text is not used)."""
    lo, hi = beam_tree.LIMITS["num_beams"]
    with gr.Tab("Beam search", id="inside-beam", elem_id="beam-accordion"):
        with gr.Row():
            num_beams = WholeSlider(lo, hi, value=3, label="Number of beams", elem_id="beam-n", min_width=200)
            length_penalty = gr.Slider(-2, 3, value=1.0, step=0.1, label="Length penalty",
                                       info="> 0 favours longer texts, < 0 shorter", elem_id="beam-lp", min_width=200)
            max_new = WholeSlider(1, 16, value=6, label="Max new tokens", elem_id="beam-max-new", min_width=200)
            temperature = gr.Slider(0.05, 2, value=0.8, step=0.05, label="Sampling temperature",
                                    info="for the sampled row (top-p 0.95, top-k 50)", elem_id="beam-temperature",
                                    min_width=200)
            seed = WholeNumber(value=0, minimum=0, label="Sampling seed", elem_id="beam-seed", min_width=200)
        go_btn = gr.Button("Run beam search, greedy and sampling", variant="primary", elem_id="beam-go")
        context = gr.HTML(elem_id="beam-context", padding=False)
        status = gr.Markdown("", elem_classes=["lmlab-status"], elem_id="beam-status")
        plot = gr.Plot(label="Beam-search tree", show_label=False, elem_id="beam-tree")
        table = gr.Dataframe(headers=list(TABLE_COLUMNS), label="The same prompt, three ways", interactive=False,
                             wrap=True, elem_id="beam-table", column_widths=["17%", "23%", "10%", "13%", "9%", "14%", "14%"])
        explain("How does beam search work?", EXPLANATION)
    inputs = [prompt, model, num_beams, length_penalty, max_new, temperature, seed]
    go_btn.click(zerogpu.gpu(beam_search), inputs, [plot, table, status, context], api_name="beam_search",
                 concurrency_id="model", show_progress_on=[plot])
    # the table goes with the tree, as Generate's candidates do: its rows continue the old prompt
    stale = stale_js("Run beam search, greedy and sampling", plots=1, texts=1, reads_prefix=True, prompt_only=True,
                     tables=(TABLE_COLUMNS,))
    for changed in (prompt.change, model.change):
        changed(None, [context, prompt, model], [context, plot, status, table], js=stale, api_visibility="private",
                queue=False)

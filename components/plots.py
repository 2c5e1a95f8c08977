"""Plotly figures shared by the tabs. Data comes in ready-made; these only draw it."""

from __future__ import annotations

import plotly.graph_objects as go

FONT = dict(size=16)


def next_token_figure(cands, temperature: float, top_p: float, top_k: int, penalty: float = 1.0) -> go.Figure:
    """Grouped bars per candidate token: model, after penalty and temperature, after top-k/top-p (cut = grey)."""
    labels = [repr(c.token)[1:-1] or "∅" for c in cands]
    labels = [f"{i + 1}. {t}" for i, t in enumerate(labels)]
    fig = go.Figure()
    fig.add_bar(name="model (T = 1)", x=labels, y=[c.prob for c in cands], marker_color="#94a3b8")
    stage = f"temperature {temperature:g}" if temperature else "greedy (temperature 0)"
    if penalty != 1.0:
        stage = f"penalty {penalty:g}, {stage}"
    fig.add_bar(name=f"after {stage}", x=labels, y=[c.prob_tempered for c in cands], marker_color="#818cf8")
    cut = "greedy: the most likely token only" if not temperature else f"top-k {top_k or 'off'}, top-p {top_p:g}"
    fig.add_bar(name=f"sampled from ({cut})", x=labels, y=[c.prob_final for c in cands],
                marker_color=["#f59e0b" if c.kept else "#e5e7eb" for c in cands])
    kept = sum(c.kept for c in cands)
    fig.update_layout(barmode="group", font=FONT, height=430, margin=dict(l=40, r=10, t=50, b=90),
                      title=f"Next-token candidates: {kept} of the top {len(cands)} survive the cut",
                      yaxis_title="probability", legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0),
                      xaxis_tickangle=-40)
    return fig


def loss_figure(series: dict[str, tuple[list[float], list[float]]], title: str = "Loss",
                y_title: str = "loss") -> go.Figure:
    """Line chart of several (x, y) series, e.g. train/eval loss by step."""
    fig = go.Figure()
    for name, (xs, ys) in series.items():
        if len(xs) == 1:  # a single marked point (the best checkpoint, a divergence): a large symbol
            fig.add_scatter(x=xs, y=ys, mode="markers", name=name,
                            marker=dict(size=16, symbol="x" if "diverged" in name else "star"))
            continue
        fig.add_scatter(x=xs, y=ys, mode="lines+markers" if len(xs) < 40 else "lines", name=name)
    fig.update_layout(font=FONT, height=380, margin=dict(l=50, r=10, t=50, b=40), title=title,
                      xaxis_title="step", yaxis_title=y_title, legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0))
    return fig


def bar_figure(names: list[str], values: list[float], title: str, y_title: str, colors: list[str] | None = None,
               text: list[str] | None = None) -> go.Figure:
    fig = go.Figure(go.Bar(x=names, y=values, marker_color=colors, text=text, textposition="outside"))
    fig.update_layout(font=FONT, height=400, margin=dict(l=50, r=10, t=50, b=80), title=title, yaxis_title=y_title)
    return fig

"""Plotly figures shared by the tabs. Data comes in ready-made; these only draw it."""

from __future__ import annotations

import html
import textwrap

import plotly.graph_objects as go

from components.tokens import visible

FONT = dict(size=16)


def heading(fig: go.Figure, title: str, legend_rows: int) -> None:
    """The title at the top of the figure, the legend under it across the whole width, then the plot.

    A horizontal legend wraps in a narrow window (at 800 px, to up to ``legend_rows`` lines); anchored to the
    plot it grew upwards over the title. One line of title (plotly anchors a title's first line, so a second
    one ran off the top): keep it under about 55 characters to fit 800 px. Needs ``fig.layout.height`` set."""
    height = fig.layout.height
    title_px = 14 + 28 * (title.count("<br>") + 1)
    fig.update_layout(title=dict(text=title, yref="container", y=1 - 8 / height, yanchor="top"),
                      legend=dict(orientation="h", xref="container", x=0.01, yref="container",
                                  y=1 - title_px / height, yanchor="top"),
                      margin_t=title_px + 26 * legend_rows + 10)


def next_token_figure(cands, temperature: float, top_p: float, top_k: int, penalty: float = 1.0,
                      note: str = "") -> go.Figure:
    """Grouped bars per candidate token: model, after penalty and temperature, after top-k/top-p (cut = grey).

    Candidates from a model server carry the model's probability only (the other stages are NaN): one bar
    each, and ``note`` (what the server does not send) under the title."""
    labels = [f"{i + 1}. {token_label(c.token)}" for i, c in enumerate(cands)]
    fig = go.Figure()
    fig.add_bar(name="model (T = 1)", x=labels, y=[c.prob for c in cands], marker_color="#94a3b8")
    if cands and all(c.prob_tempered != c.prob_tempered for c in cands):  # NaN: from a model server
        shown = sum(c.prob for c in cands)
        lines = _wrap(note, 75)
        rows = lines.count("<br>") + 1
        fig.update_layout(font=FONT, height=400 + 30 * rows, yaxis_title="probability",
                          margin=dict(l=40, r=10, t=55 + 28 * rows, b=90),
                          title=dict(text=f"The server's top {len(cands)} tokens: {shown:.0%} of the probability"
                                          f"<br><sup>{lines}</sup>", yref="container", y=0.97, yanchor="top"),
                          showlegend=False, xaxis_tickangle=-40)
        return fig
    stage = f"temperature {temperature:g}" if temperature else "greedy (temperature 0)"
    if penalty != 1.0:
        stage = f"penalty {penalty:g}, {stage}"
    fig.add_bar(name=f"after {stage}", x=labels, y=[c.prob_tempered for c in cands], marker_color="#818cf8")
    cut = "greedy: the most likely token only" if not temperature else f"top-k {top_k or 'off'}, top-p {top_p:g}"
    fig.add_bar(name=f"sampled from ({cut})", x=labels, y=[c.prob_final for c in cands],
                marker_color=["#f59e0b" if c.kept else "#e5e7eb" for c in cands])
    kept = sum(c.kept for c in cands)
    fig.update_layout(barmode="group", font=FONT, height=500, margin=dict(l=40, r=10, b=90),
                      yaxis_title="probability", xaxis_tickangle=-40)
    heading(fig, f"Next-token candidates: {kept} of the top {len(cands)} survive the cut", legend_rows=3)
    return fig


def _wrap(text: str, width: int = 110) -> str:
    """Plotly titles do not wrap: break a sentence into <br>-separated lines."""
    return "<br>".join(textwrap.wrap(text, width))


def loss_figure(series: dict[str, tuple[list[float], list[float]]], title: str = "Loss",
                y_title: str = "loss") -> go.Figure:
    """Line chart of several (x, y) series, e.g. train/eval loss by step."""
    fig = go.Figure()
    for name, (xs, ys) in series.items():
        if len(xs) == 1:  # a single marked point (the best checkpoint, a divergence): a large symbol
            # a star for the best checkpoint, a cross for a divergence, a plain mark for a measurement (the test
            # loss before training, alone until the run ends)
            fig.add_scatter(x=xs, y=ys, mode="markers", name=name, marker=dict(
                size=16, symbol="x" if "diverged" in name else "star" if "best" in name else "diamond"))
            continue
        fig.add_scatter(x=xs, y=ys, mode="lines+markers" if len(xs) < 40 else "lines", name=name)
    # The y-axis starts at 0: an auto-zoomed axis draws 4.185 -> 4.201 as a cliff.
    # plain decimals: plotly's SI prefixes wrote a learning rate of 0.0005 as "500μ"
    fig.update_layout(font=FONT, height=420, margin=dict(l=50, r=10, b=40),
                      xaxis=dict(title="step", **_step_axis(series)),
                      yaxis=dict(title=y_title, rangemode="tozero", tickformat="~g"))
    heading(fig, title, legend_rows=2 if len(series) > 1 else 0)  # plotly draws no legend for a single line
    if not any(xs for xs, _ in series.values()):  # nothing yet: no made-up scale (its two 0s met in the corner)
        fig.update_xaxes(showticklabels=False)
        fig.update_yaxes(showticklabels=False)
    return fig


def _step_axis(series: dict[str, tuple[list[float], list[float]]]) -> dict:
    """The step axis: whole-number ticks from 0 up, and a margin left of the first step, so that the step
    axis' "0" and the loss axis' "0" do not meet in the corner (they overlapped at 800 px)."""
    xs = [x for xs, _ in series.values() for x in xs]
    if not xs:
        return dict(rangemode="tozero")
    low, high = min(0.0, min(xs)), max(xs)
    span = max(high - low, 1.0)
    dtick = next(d * 10**k for k in range(0, 9) for d in (1, 2, 5) if d * 10**k >= span / 6)
    pad = max(0.04 * span, 0.3 * dtick)  # less than one tick: no tick below 0 is drawn
    return dict(range=[low - pad, high + pad], tick0=0, dtick=dtick)


def bar_figure(names: list[str], values: list[float], title: str, y_title: str, colors: list[str] | None = None,
               text: list[str] | None = None) -> go.Figure:
    fig = go.Figure(go.Bar(x=names, y=values, marker_color=colors, text=text, textposition="outside", cliponaxis=False))
    # Headroom above the tallest bar, so the value printed on top of it is not cut by the title or the frame.
    top = max([v for v in values if v is not None] or [0]) or 1
    fig.update_layout(font=FONT, height=400, margin=dict(l=50, r=10, t=60, b=80), title=title, yaxis_title=y_title,
                      yaxis_range=[0, top * 1.18])
    return fig


END_OF_TEXT = "⏹ end of text"  # a coding step's or slice's token that ends the text (``end``): it writes nothing


def token_label(token: str, end: bool = False) -> str:
    """A token as ``tokens.visible`` writes it (␣ ↵ → ∅), or the end of text, for a chart's labels and titles.
    Escaped once, for plotly: it reads label text as its own markup (a token "<br>" would break the label,
    "&amp;" would show as "&"), and turns &amp; &lt; &gt; back into the characters."""
    if end:
        return END_OF_TEXT
    return html.escape(visible(token), quote=False)


def interval_figure(steps, title: str) -> go.Figure:
    """Arithmetic coding, one row per step: the current interval stretched to [0, 1], the likeliest
    tokens' slices in grey, the coded (or sampled) token's slice in orange, and the random number u
    (sampling) as a black diamond. The orange slice is the next row's whole interval. Each row's p and
    bits stand in the right margin, where no slice can cover them."""
    fig = go.Figure()
    labels = [f"{i + 1}. {token_label(s.token, getattr(s, 'end', False))}" for i, s in enumerate(steps)]
    grey_x, grey_base, grey_y, grey_text = [], [], [], []
    for label, s in zip(labels, steps, strict=True):
        for o in s.others:
            if o.token != s.token or abs(o.start - s.start) > 1e-12:
                grey_x.append(o.p)
                grey_base.append(o.start)
                grey_y.append(label)
                grey_text.append(token_label(o.token, getattr(o, "end", False)))
    fig.add_bar(x=grey_x, base=grey_base, y=grey_y, orientation="h", name="other likely tokens",
                marker=dict(color="#cbd5e1", line=dict(color="#475569", width=1)), text=grey_text,
                textposition="inside", insidetextanchor="middle", textangle=0, textfont=dict(size=14, color="#0f172a"),
                hovertemplate="%{y}: %{text} had p = %{x:.4g}<extra></extra>")
    # A slice of p = 0.001 would be a hairline: drawn at least 0.6 % wide, with a dark edge.
    fig.add_bar(x=[max(s.p, 0.006) for s in steps], base=[s.start for s in steps], y=labels, orientation="h",
                name="the token's slice (becomes the next interval)",
                marker=dict(color="#f97316", line=dict(color="#9a3412", width=1.5)),
                customdata=[s.p for s in steps], hovertemplate="%{y}: p = %{customdata:.4g}<extra></extra>")
    if steps and steps[0].u_position is not None:
        fig.add_scatter(x=[s.u_position for s in steps], y=labels, mode="markers", name="the random number u",
                        marker=dict(symbol="diamond", size=14, color="#0f172a"))
    for row, s in enumerate(steps):  # y by row number: a category name such as "18. ␣" may not match as text
        fig.add_annotation(x=1.01, xref="paper", xanchor="left", y=row, yref="y", showarrow=False,
                           text=f"p={s.p:.3g} · {s.bits:.1f} bits", font=dict(size=15, color="#9a3412"))
    fig.add_annotation(x=1.01, xref="paper", xanchor="left", y=1.0, yref="paper", yanchor="bottom", showarrow=False,
                       text="<b>the token's p, −log₂ p</b>", font=dict(size=14, color="#9a3412"))
    # Labels that would have to shrink below 12 px in a narrow slice are left out rather than drawn tiny.
    fig.update_layout(font=FONT, height=230 + 34 * len(steps), barmode="overlay",
                      uniformtext=dict(minsize=12, mode="hide"),
                      margin=dict(l=170, r=210, b=50), xaxis=dict(range=[0, 1], title="position in the current "
                      "interval<br>(each row zoomed to full width)"), yaxis=dict(autorange="reversed", tickfont=dict(size=16)))
    heading(fig, title, legend_rows=2)
    return fig

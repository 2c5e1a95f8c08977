"""HTML for a token strip: each token a chip coloured by its probability, details on hover."""

from __future__ import annotations

import html


def prob_colour(p: float) -> str:
    """Red (surprising) -> yellow -> green (expected), light enough for black text."""
    p = min(max(p, 0.0), 1.0)
    hue = int(120 * p)  # 0 = red, 120 = green
    return f"hsl({hue}, 85%, 78%)"


def _chip(t) -> str:
    alts = " · ".join(f"{a!r} {p:.1%}" for a, p in t.alternatives)
    tip = html.escape(f"p = {t.prob:.1%}, {t.bits:.2f} bits\ntop-5: {alts}", quote=True)
    text = html.escape(t.text).replace("\n", "↵<span class='nl'></span>")
    return f"<span class='tok' style='background:{prob_colour(t.prob)}' data-tip=\"{tip}\">{text}</span>"


def _legend(caption: str) -> str:
    return ("<div class='tokview-legend'>colour = probability under the model: "
            f"<span style='background:{prob_colour(0.02)}'>2 %</span>"
            f"<span style='background:{prob_colour(0.3)}'>30 %</span>"
            f"<span style='background:{prob_colour(0.95)}'>95 %</span> · hover a token for its bits and the top-5"
            + (f" · {html.escape(caption)}" if caption else "") + "</div>")


class GrowingStrip:
    """HTML for a growing list of tokens (a stream): each chip coloured by its probability, details on
    hover; each call renders only the tokens added since the last. tokens: objects with .text, .prob,
    .bits, .alternatives [(text, p)].

    Legend first and the chips last, with no closing tag after them: each streamed update then only
    appends to the previous one, and Gradio sends the new chips instead of the whole strip again
    (thirty students x every token otherwise re-send kilobytes per token). The browser closes the div.
    Rendering the whole strip again for every streamed token cost ~0.5 ms at 40 tokens, per student
    per token, in the thread that competes with the shared model for the GIL.
    """

    def __init__(self, caption: str = "") -> None:
        self.head = f"{_legend(caption)}<div class='tokview'>"
        self.chips: list[str] = []

    def __call__(self, tokens) -> str:
        self.chips.extend(_chip(t) for t in tokens[len(self.chips):])
        return self.head + "".join(self.chips)

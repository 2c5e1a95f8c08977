"""HTML for a token strip: each token a chip coloured by what it cost in bits, details on hover."""

from __future__ import annotations

import html
import math

# Hover help ([data-tip], assets/style.css: a token's bits and top 5, a byte's or a phrase's meaning) hangs from its
# chip's left edge: near the window's right edge, at 800 px, it ran off the window and cut the top-5 list. As a
# chip is hovered this moves its tooltip left by what would stick out (--tip-left), never past the left edge. One
# listener on the view (gr.HTML(js_on_load=...)), so the chips streamed in later have it too.
TIP_INSIDE_JS = """
element.addEventListener('mouseover', (event) => {
  const tok = event.target.closest('[data-tip]');
  if (!tok) return;
  tok.style.removeProperty('--tip-left');
  // the window, or a box around the view that clips what sticks out of it (at 1400 px one cut the tip's end)
  let lo = 0, hi = document.documentElement.clientWidth;
  for (let box = tok.parentElement; box && box !== document.body; box = box.parentElement) {
    if (getComputedStyle(box).overflowX === 'visible') continue;
    const r = box.getBoundingClientRect();
    lo = Math.max(lo, r.left); hi = Math.min(hi, r.right);
  }
  tok.style.setProperty('--tip-max', (hi - lo - 36) + 'px');  // its text, without the padding: lines wrap beyond
  const tip = getComputedStyle(tok, '::after');
  const width = parseFloat(tip.width) + parseFloat(tip.paddingLeft) + parseFloat(tip.paddingRight);
  const left = tok.getBoundingClientRect().left;
  const shift = Math.max(Math.min(0, hi - 8 - left - width), lo + 8 - left);
  if (shift < 0) tok.style.setProperty('--tip-left', shift + 'px');
});
"""


def visible(token: str) -> str:
    """A token as every view writes it: a space as ␣, a line end as ↵, a tab as →, a carriage return as ␍, a
    no-break space as ⍽, another control character as its code (\\x07), nothing as ∅. Many tokens are just " "
    or "\\n", and a leading space is what tells " Paris" from "Paris". Plain text: the caller escapes it for
    HTML or markdown."""
    shown = token.replace(" ", "␣").replace("\n", "↵").replace("\t", "→").replace("\r", "␍").replace("\xa0", "⍽")
    shown = "".join(f"\\x{ord(c):02x}" if ord(c) < 32 or ord(c) == 127 else c for c in shown)
    return shown or "∅"


def bits_colour(bits: float) -> str:
    """A token's colour from what it cost, -log2 p: 0 bits green (expected), 4 yellow-green, 12 or more red
    (surprising), light enough for black text. The one scale of every token view (Generate's, Compress's heat
    map, the sampling decode): a token of probability p has the same colour wherever a learner meets it (Generate
    coloured by p, linearly, and Compress by bits, so a token of 10 % was red in one and green in the other)."""
    hue = int(120 * (1 - min(max(bits, 0.0), 12.0) / 12.0))  # 0 = red, 120 = green
    return f"hsl({hue}, 85%, 78%)"


# What the legends show: probability and bits side by side, the same colours in every view.
LEGEND_STEPS = ((0.95, "95 %"), (0.3, "30 %"), (1 / 64, "1 in 64"), (1 / 4096, "1 in 4,096"))


def legend_chips() -> str:
    return "".join(f"<span style='background:{bits_colour(-math.log2(p))}'>{label} = {-math.log2(p):.2g} bits</span>"
                   for p, label in LEGEND_STEPS)


def _chip(t) -> str:
    alts = " · ".join(f"{visible(a)} {p:.1%}" for a, p in t.alternatives)
    tip = html.escape(f"p = {t.prob:.1%}, {t.bits:.2f} bits\ntop-5: {alts}", quote=True)
    text = html.escape(t.text).replace("\n", "↵<span class='nl'></span>")
    return f"<span class='tok' style='background:{bits_colour(t.bits)}' data-tip=\"{tip}\">{text}</span>"


def _legend(caption: str) -> str:
    return ("<div class='tokview-legend'>colour = the token's probability, in bits (−log₂ p), the same colours as "
            f"in Compress: {legend_chips()} · hover a token for its bits and the top-5"
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

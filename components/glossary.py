"""The field's words in one place: the glossary under the tabs and the hover help that any view may use.

Each definition is short enough for a tooltip and says what the number means on this page.
"""

from __future__ import annotations

import html

import gradio as gr

TERMS = {
    "token": "A piece of text the model reads and writes in one step: a word, part of a word, a space or a "
             "punctuation mark. The model's vocabulary is its list of tokens (about 50,000). The pages write a "
             "token's leading space as ␣ (␣Paris) and a line end as ↵.",
    "probability (p)": "How likely the model finds a token as the next one, from 0 to 1; the probabilities of "
                       "all tokens add up to 1.",
    "surprisal (bits)": "−log₂ p: how surprised the model is by a token. p = 1/2 is 1 bit, p = 1/8 is 3 bits. "
                        "An arithmetic coder spends almost exactly this many bits on the token, so the bits of a "
                        "text are what the model would compress it to.",
    "bits per byte": "The size of a compressed text in bits, divided by its length in bytes. Plain text is 8 "
                     "bits per byte; the fewer, the better the compressor predicts the text.",
    "bits per token": "A text's surprisal divided by its number of tokens; a fine-tuning run's loss is this "
                      "number, averaged over the training text (nats per token × 1.44).",
    "perplexity": "2 to the power of the bits per token: the number of equally likely tokens the model is, on "
                  "average, choosing between. Lower is better; 1 would be a model that is never surprised.",
    "temperature": "Divides the model's scores before sampling: below 1 the likely tokens get likelier (safer "
                   "text), above 1 the unlikely ones get a chance (wilder text); 0 always takes the likeliest.",
    "beam search": "Keeps the few likeliest partial texts (the beams) at every step instead of one, and returns "
                   "the one with the fewest bits (adjusted for length).",
    "logit lens": "Reads the model's guess for the next token at every layer, not only the last one, by passing "
                  "each layer's state through the final output layer: it shows the answer forming layer by layer.",
    "attention": "How much each token looks at each earlier token when the model computes the next one.",
    "fine-tuning": "Training a pretrained model a little more on new text, with a small learning rate, so it "
                   "adapts without forgetting. LoRA trains small added matrices instead of every weight.",
}


def definition(term: str) -> str:
    return TERMS[term]


def hover(term: str, text: str | None = None) -> str:
    """``text`` (default: the term) as HTML with the term's definition as its tooltip."""
    return (f"<abbr class='lmlab-term' title=\"{html.escape(definition(term), quote=True)}\">"
            f"{html.escape(text or term)}</abbr>")


def markdown() -> str:
    return "\n".join(f"- **{term}**: {text}" for term, text in TERMS.items())


def build() -> None:
    with gr.Accordion("Glossary: the words used on this page", open=False, elem_id="lmlab-glossary"):
        gr.Markdown(markdown())

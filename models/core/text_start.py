"""The token every text the app reads starts after: one rule for generation, the views of one step, and
the text coder, so a token has the same probability in Generate as in Compress.

A causal LM pretrained on documents joined by a separator (GPT-2's and SmolLM2's ``<|endoftext|>``) saw
every document's first token right after it; without it the model reads the prompt's first token as if
it came from the middle of a document, and every later probability shifts (SmolLM2-135M-Instruct gave
" wise" 18 % in Generate and 7 % in Compress for the same text before both used this rule).
"""

from __future__ import annotations


def start_token_id(tokenizer) -> int:
    """The separator raw text follows in pretraining (``<|endoftext|>``) where the vocabulary has one,
    else the BOS, else the EOS token, else id 0. Part of the ``.lmlt`` file format (the coder's first
    context): changing this rule changes every file's probabilities."""
    separator = tokenizer.get_vocab().get("<|endoftext|>")
    for candidate in (separator, tokenizer.bos_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def with_start(tokenizer, ids: list[int]) -> list[int]:
    """``ids`` (a plain-text encoding) with the start token in front, unless the tokenizer put it there."""
    start = start_token_id(tokenizer)
    return list(ids) if ids and ids[0] == start else [start, *ids]

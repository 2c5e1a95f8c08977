"""The reference engine (generate alone) and the classroom engine (the scheduler) give the same tokens."""

from __future__ import annotations

import pytest
import torch

from models.engines import engine as engines
from models.generation import generator
from models.generation.generator import SamplingSettings
from tests.test_scheduler import MIXED


def test_batched_equals_generate_tiny(tiny_gpt2):
    """The scheduler gives the tokens, log-probs and alternatives of the unbatched generate() path."""
    for prompt, kw in MIXED:
        batched = generator.generate_text(tiny_gpt2, prompt, SamplingSettings(**kw)).tokens
        reference = list(generator.stream(tiny_gpt2, prompt, SamplingSettings(**kw), engine=engines.named("reference")))[-1].tokens
        assert [t.token_id for t in batched] == [t.token_id for t in reference], (prompt, kw)
        for a, b in zip(batched, reference, strict=True):  # log-probs and top-5 under the raw model agree too
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
            assert [x for x, _ in a.alternatives] == [x for x, _ in b.alternatives]


def test_generation_respects_the_context_length(gpt2_tokenizer):
    """A GPT-2 with 64 positions asked for 100 tokens: capped with a note, in both paths; a prompt of
    200,000 characters keeps its end, and both paths continue it the same way."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from models.core.device import pick
    from models.core.registry import Loaded, ModelSpec, model_nbytes

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=64,
                                       vocab_size=len(gpt2_tokenizer))).eval()
    loaded = Loaded(ModelSpec("gpt2-64", "GPT-2 with 64 positions", "causal-lm", "local", ""), model,
                    gpt2_tokenizer, pick("cpu"), model_nbytes(model))
    results = {}
    for batched in (True, False):
        last = list(generator.stream(loaded, "Hello", SamplingSettings(temperature=0, max_new_tokens=100),
                                     engine=engines.named("classroom" if batched else "reference")))[-1]
        assert last.done and len(last.tokens) == 62, batched  # the start token and "Hello" take two positions
        assert "capped from 100 to 62" in last.notice
        long_prompt = "word " * 300
        last = list(generator.stream(loaded, long_prompt, SamplingSettings(temperature=0, max_new_tokens=100),
                                     engine=engines.named("classroom" if batched else "reference")))[-1]
        assert last.prompt_tokens + len(last.tokens) <= 64 and "only the last" in last.notice
        huge = "".join(chr(0x41 + i % 26) + ("" if i % 7 else " ") for i in range(200_000))  # 200,000 characters
        events = list(generator.stream(loaded, huge, SamplingSettings(temperature=0, max_new_tokens=8), engine=engines.named("classroom" if batched else "reference")))
        assert events[-1].done and len(events[-1].tokens) == 8 and events[-1].prompt_tokens == 56
        results[batched] = [t.token_id for t in events[-1].tokens]
    assert results[True] == results[False]

"""The sliders' maths: the next-token view is the distribution generation samples, as transformers computes it."""

from __future__ import annotations

import pytest
import torch

from models.generation import generator, sampling
from models.generation.generator import SamplingSettings


def test_next_token_view_is_the_distribution_generation_samples(tiny_gpt2):
    """At every step of a greedy and a seeded sampled generation with a penalty, the view contains the token."""
    prompt = "The dog"
    for kw in (dict(temperature=0.0, repetition_penalty=1.5), dict(temperature=0.9, top_k=30, top_p=0.9,
                                                                   repetition_penalty=1.3, seed=5)):
        ev = generator.generate_text(tiny_gpt2, prompt, SamplingSettings(max_new_tokens=12, **kw))
        ids = tiny_gpt2.tokenizer(prompt)["input_ids"]
        for token in ev.tokens:
            prefix = tiny_gpt2.tokenizer.decode(ids)
            cands, _ = generator.next_token(tiny_gpt2, prefix, kw["temperature"], kw.get("top_p", 1.0),
                                            kw.get("top_k", 0), show=60, repetition_penalty=kw["repetition_penalty"])
            final = {c.token_id: c.prob_final for c in cands}
            assert final.get(token.token_id, 0) > 0, (kw, token)
            if kw["temperature"] == 0:
                assert cands[0].token_id == token.token_id and cands[0].kept and cands[0].prob_final == 1.0
            ids.append(token.token_id)


def test_greedy_view_rows_follow_the_model(tiny_gpt2):
    cands, _ = generator.next_token(tiny_gpt2, "The river", 0.0, 1.0, 0)
    probs = [c.prob for c in cands]
    assert probs == sorted(probs, reverse=True) and probs[1] > 0
    assert [c.kept for c in cands] == [True] + [False] * (len(cands) - 1)


@pytest.mark.parametrize("p", [sampling.Processors(0.7, 0.9, 50, 1.2), sampling.Processors(1.3, 0.5, 0, 1.0),
                               sampling.Processors(1.0, 1.0, 3, 1.0), sampling.Processors(0.0, 1.0, 0, 1.5)])
def test_processors_match_transformers(p):
    from transformers import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(1, 500, generator=g) * 3
    history = torch.tensor([[3, 17, 17, 250, 499]])
    ref = scores.clone()
    if p.repetition_penalty != 1.0:
        ref = RepetitionPenaltyLogitsProcessor(p.repetition_penalty)(history, ref)
    if p.greedy:
        ours = sampling.distribution(scores[0], history[0], p)
        assert int(ours.argmax()) == int(ref.argmax()) and float(ours.max()) == 1.0
        return
    ref = TemperatureLogitsWarper(p.temperature)(history, ref)
    if p.top_k:
        ref = TopKLogitsWarper(p.top_k)(history, ref)
    if p.top_p < 1.0:
        ref = TopPLogitsWarper(p.top_p)(history, ref)
    expected = torch.softmax(ref, -1)[0]
    ours = sampling.distribution(scores[0], history[0], p)
    assert torch.equal(ours > 0, expected > 0)
    assert torch.allclose(ours, expected, atol=1e-6)

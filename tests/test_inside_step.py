"""Logit lens and attention weights: checked against the model's own outputs."""

from __future__ import annotations

import pytest
import torch

from models.core import text_start
from models.core.errors import InputError
from models.generation import inside_step

PREFIX = "The quick brown fox jumps over the lazy dog because the dog was asleep"


def _ids(loaded, text=PREFIX):
    """What the views read: the start token (as in Generate and Compress), then the text's tokens."""
    return torch.tensor([text_start.with_start(loaded.tokenizer, loaded.tokenizer(text)["input_ids"])])


def _check_last_layer_is_the_model(loaded):
    ids = _ids(loaded)
    probs = inside_step.layer_distributions(loaded, ids)
    with torch.inference_mode():
        own = torch.softmax(loaded.model(ids).logits[0, -1].float(), -1)
    n_layers, _ = inside_step.attention_shape(loaded)
    assert probs.shape == (n_layers + 1, own.shape[0])
    torch.testing.assert_close(probs[-1], own, atol=2e-5, rtol=1e-3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(n_layers + 1), atol=1e-4, rtol=0)
    # the intermediate layers are different distributions, not copies of the last one
    assert not torch.allclose(probs[1].log(), probs[-1].log(), atol=1e-3)
    lens = inside_step.logit_lens(loaded, PREFIX, top_k=4)
    assert [r.layer for r in lens.rows] == list(range(n_layers + 1))
    assert lens.rows[-1].token_ids[0] == int(own.argmax())
    assert lens.rows[-1].probs[0] == pytest.approx(float(own.max()), abs=1e-4)
    assert lens.rows[-1].final_token_prob == pytest.approx(float(own.max()), abs=1e-4)
    assert all(len(r.tokens) == 4 and r.probs == sorted(r.probs, reverse=True) for r in lens.rows)


def test_logit_lens_last_layer_is_the_models_next_token_distribution(tiny_gpt2):
    _check_last_layer_is_the_model(tiny_gpt2)


@pytest.mark.slow
def test_logit_lens_last_layer_smollm(smollm):
    """The LLaMA layout (RMSNorm model.norm, untied names) through the same code."""
    _check_last_layer_is_the_model(smollm)
    lens = inside_step.logit_lens(smollm, "The capital of France is", top_k=3)
    assert lens.final_token == " Paris"
    # the answer forms in depth: far more likely at the output than after the embeddings
    assert lens.rows[-1].final_token_prob > 0.5 > lens.rows[0].final_token_prob


def test_inspection_view_shares_weights_and_leaves_the_model_alone(tiny_gpt2):
    model = tiny_gpt2.model
    before = model.config._attn_implementation
    view = inside_step.inspection_view(model)
    assert view is inside_step.inspection_view(model)  # cached
    assert view.config._attn_implementation == "eager"
    assert model.config._attn_implementation == before
    own = dict(model.named_parameters())
    for name, p in view.named_parameters():
        assert p.data_ptr() == own[name].data_ptr(), f"{name} was copied"
    inside_step.logit_lens(tiny_gpt2, PREFIX)  # the lens's hooks live on the view only
    assert not any(m._forward_pre_hooks for m in model.modules())
    assert not any(m._forward_pre_hooks for m in view.modules())


def test_attention_map_is_the_eager_attention(tiny_gpt2):
    from transformers import GPT2LMHeadModel

    model = tiny_gpt2.model
    eager = GPT2LMHeadModel(model.config.__class__.from_dict(model.config.to_dict(), attn_implementation="eager")).eval()
    eager.load_state_dict(model.state_dict())
    ids = _ids(tiny_gpt2)
    n = ids.shape[1]
    with torch.inference_mode():
        reference = eager(ids, output_attentions=True).attentions[1][0, 1]  # layer 2, head 1: (n, n)
    att = inside_step.attention_map(tiny_gpt2, PREFIX, layer=2, head=2, window=6)  # heads count from 1
    assert (att.n_layers, att.n_heads, att.total_tokens, att.offset) == (2, 2, n, n - 6)
    torch.testing.assert_close(torch.tensor(att.weights), reference[n - 6:, n - 6:].float(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(att.earlier), reference[n - 6:, : n - 6].sum(-1).float(), atol=1e-5, rtol=1e-4)
    weights = torch.tensor(att.weights)
    torch.testing.assert_close(weights.sum(-1) + torch.tensor(att.earlier), torch.ones(6), atol=1e-5, rtol=0)
    assert torch.all(weights.triu(1) == 0), "a token attended to a later token"
    assert [t for t in att.tokens] == [tiny_gpt2.tokenizer.decode([i]) for i in ids[0, n - 6:].tolist()]


def test_short_prefix_has_no_earlier_column(tiny_gpt2):
    att = inside_step.attention_map(tiny_gpt2, "Hello world", layer=1, head=1, window=24)
    assert att.offset == 0 and att.earlier == [0.0, 0.0, 0.0] and len(att.weights) == 3  # start, Hello, world
    assert att.tokens[0] == tiny_gpt2.tokenizer.decode([text_start.start_token_id(tiny_gpt2.tokenizer)])
    assert att.weights[0] == pytest.approx([1.0, 0.0, 0.0])


@pytest.mark.parametrize("kwargs,match", [
    (dict(prefix=""), "prefix is empty"),
    (dict(prefix="  \n"), "prefix is empty"),
    (dict(layer=0), "layer must be between 1 and 2"),
    (dict(layer=3), "layer must be between 1 and 2"),
    (dict(head=0), "head must be between 1 and 2"),
    (dict(head=3), "head must be between 1 and 2"),
    (dict(window=1), "window"),
])
def test_attention_rejects_bad_input(tiny_gpt2, kwargs, match):
    args = dict(prefix=PREFIX, layer=1, head=1, window=8) | kwargs
    with pytest.raises(InputError, match=match):
        inside_step.attention_map(tiny_gpt2, args.pop("prefix"), **args)


@pytest.mark.parametrize("top_k", [0, 21, float("nan")])
def test_logit_lens_rejects_bad_top_k(tiny_gpt2, top_k):
    with pytest.raises(InputError, match="top-k"):
        inside_step.logit_lens(tiny_gpt2, PREFIX, top_k)


def test_long_prefix_keeps_the_end(tiny_gpt2):
    text = "one two three four five six seven eight nine ten " * 40  # ~400 tokens > MAX_ATTENTION_TOKENS
    att = inside_step.attention_map(tiny_gpt2, text, layer=1, head=1, window=8)
    assert att.total_tokens == min(inside_step.MAX_ATTENTION_TOKENS, tiny_gpt2.model.config.n_positions)
    assert "reads the last" in att.notice


def test_config_shape_reads_the_config_only():
    assert inside_step.config_shape("smollm2-135m-instruct") == (30, 9)
    assert inside_step.config_shape("no-such-model") is None

"""Grouped-query attention without copying keys and values (models/engines/grouped_attention.py): a model body
attending that way gives the same hidden states as transformers' SDPA path (up to float rounding), over a
masked cache and several query tokens a step (where transformers repeats the key/value heads)."""

from __future__ import annotations

import copy

import pytest
import torch

from models.engines import grouped_attention, kv_cache


def _llama(heads: int, kv_heads: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(num_hidden_layers=2, hidden_size=96, intermediate_size=128, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, vocab_size=300, max_position_embeddings=256,
                         attn_implementation="sdpa")
    return LlamaForCausalLM(config).eval().model


def _steps(body, dtype):
    """Hidden states of a prefill, then steps of 1-3 tokens per lane with some positions masked out."""
    torch.manual_seed(1)
    body = body.to(dtype)
    cache = kv_cache.preallocated(body.config, 128)
    live = torch.ones(3, 20, dtype=torch.bool)
    live[0, :4] = False  # a lane padded at its start
    outs = []
    with torch.inference_mode():
        ids = torch.randint(0, 300, (3, 20))
        outs.append(body(input_ids=ids, attention_mask=live.long(), cache=cache, use_cache=True).last_hidden_state)
        for width in (1, 3, 2, 1, 2):
            new = torch.ones(3, width, dtype=torch.bool)
            new[1, -1] = False  # a pad
            live[2, -1] = False  # a replaced token
            live = torch.cat([live, new], dim=1)
            positions = torch.arange(live.shape[1] - width, live.shape[1]).expand(3, width)
            out = body(input_ids=torch.randint(0, 300, (3, width)), attention_mask=live.long(), position_ids=positions,
                       cache=cache, use_cache=True)
            outs.append(out.last_hidden_state)
    return outs


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("heads,kv_heads", [(6, 2), (6, 1), (4, 4)])
def test_the_same_hidden_states(dtype, heads, kv_heads):
    body = _llama(heads, kv_heads)
    grouped = copy.deepcopy(body)
    grouped_attention.use(grouped)
    assert grouped.config._attn_implementation == grouped_attention.NAME
    assert body.config._attn_implementation == "sdpa"  # the original is untouched
    for a, b in zip(_steps(body, dtype), _steps(grouped, dtype), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-4 if dtype == torch.float32 else 3e-2), (a - b).abs().max()


def test_the_benchmark_times_both_bodies_on_a_masked_cache():
    from benchmarks.grouped_attention import step_seconds

    body = _llama(6, 2)
    grouped = copy.deepcopy(body)
    grouped_attention.use(grouped)
    assert all(step_seconds(b, context=40, lanes=2, width=2, repeats=3) > 0 for b in (body, grouped))

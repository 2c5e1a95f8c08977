"""Grouped-query attention over a masked key/value cache without copying the keys and values.

Checked against transformers 5.24 (``integrations/sdpa_attention.py``), through its public attention
interface (``AttentionInterface``). Given a mask and more than one query token, its SDPA path repeats every
key/value head once per query head it serves (``repeat_kv``) before attention: with SmolLM2's 9 query heads
on 3 key/value heads, six lanes and 8,192 cached positions, that copy is most of a step (one layer, bf16,
2 CPU threads: 45 ms against 3.3 ms folded). Here each key/value head's query heads are folded into the
query length instead, (lanes, kv heads * g, q, d) -> (lanes, kv heads, g * q, d), and the mask is tiled to
match. Every query row meets the same keys, so the output is the same up to float rounding (SDPA may pick
another kernel for the other shape: float32 SmolLM2 differs in the fifth decimal, bfloat16 was equal), so a
coder must record that it attends this way (``tests/test_grouped_attention.py``); transformers already folds
this way for one query token (``pack_gqa``), which this extends to several.

    use(body)   # a model body (a private copy: the choice lives in its config) attends this way
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "lmlab_grouped_sdpa"


def grouped_sdpa(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                 is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, with query heads folded onto their key/value head when a mask is given:
    query (lanes, heads, q, d), key and value (lanes, kv heads, positions, d), mask (lanes or 1, 1 or heads,
    q, positions) -> ((lanes, q, heads, d), None)."""
    groups = getattr(module, "num_key_value_groups", 1)
    lanes, heads, q, dim = query.shape
    if groups == 1 or attention_mask is None or q == 1 or dropout or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, is_causal,
                                      **kwargs)
    kv_heads = heads // groups
    folded = query.reshape(lanes, kv_heads, groups * q, dim)
    mask = attention_mask.expand(attention_mask.shape[0], heads, q, attention_mask.shape[-1])
    mask = mask.reshape(attention_mask.shape[0], kv_heads, groups * q, attention_mask.shape[-1])
    out = torch.nn.functional.scaled_dot_product_attention(folded, key, value, attn_mask=mask, scale=scaling)
    return out.reshape(lanes, heads, q, value.shape[-1]).transpose(1, 2).contiguous(), None


def use(body: torch.nn.Module) -> None:
    """Make ``body`` (a transformers model whose config no other model shares) attend with ``grouped_sdpa``."""
    AttentionInterface.register(NAME, grouped_sdpa)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # the very masks the SDPA path gets
    body.set_attn_implementation(NAME)

"""The scheduler's forward pass for Llama-family decoders, written out over packed, fused matrices.

``models.engines.packed_linear`` gives the scheduler a copy of the model whose matrices run on oneDNN. For
the Llama family (the embedded SmolLM2 among them) this module goes one step further and replaces the
copy of transformers' module tree with the decoder layer written out in a dozen tensor operations:

- the query, key and value projections are one matrix, and the gate and up projections are one
  (two products per layer less; each output column is the same dot product as before, so the numbers
  do not change);
- no module calls, decorators, output hooks or keyword plumbing per layer: with thirty layers, the
  Python around the tensor operations was ~15 % of a decode step of a class of 30 on a 2-core CPU
  (wall time against the operators' own time in ``torch.profiler``).

Why write it out when a library forward exists: a class of 30 is served in ~80 decode steps, and each
step's time is what every student waits for. Measured on a 2-core AMD EPYC with SmolLM2-135M:
- one decode step, all paths interleaved in one run (``benchmarks/packed_linear.py``, median of 21):
  30 rows 150.0 ms on the module copy against 141.4 ms written out, one row 64.9 against 56.5 ms, with
  identical logits;
- a class of 30 through the app (``benchmarks/classroom.py``, three alternating pairs): p95 15.5-15.8 s
  written out against 16.6-19.0 s on the module copy, faster in each pair.

The parts that are not arithmetic stay transformers' own: the rotary embedding module,
``apply_rotary_pos_emb``, the attention function the model is configured with (SDPA by default), and
the cache's ``update``. RMSNorm is ``torch.nn.functional.rms_norm`` (the same
float32 formula as ``LlamaRMSNorm``). Tests compare the hidden states with transformers' forward for
tiny Llama, Mistral and Qwen2 models and the generated tokens on SmolLM2.

Only for decoders whose layers are exactly Llama's (``ARCHITECTURES``, full attention in every layer);
anything else keeps the module copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, eager_attention_forward

from models.engines.packed_linear import PackedLinear

# Model types whose decoder layer is Llama's: RMSNorm, rotary q/k, q/k/v/o projections (biases allowed),
# a gated MLP gate/up/down. Qwen3 (q/k norms), Gemma (scaled embeddings, offset norms) and others are not.
ARCHITECTURES = {"llama", "mistral", "qwen2"}


def supported(model) -> bool:
    """True if ``model`` (a causal LM) is a Llama-family decoder this forward computes exactly."""
    config = model.config.get_text_config(decoder=True)
    if getattr(config, "model_type", None) not in ARCHITECTURES:
        return False
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False
    if set(getattr(config, "layer_types", None) or []) - {"full_attention"}:
        return False
    base = model.base_model
    names = ("embed_tokens", "layers", "norm", "rotary_emb")
    return all(hasattr(base, n) for n in names) and all(
        hasattr(layer, "self_attn") and hasattr(layer, "mlp") for layer in base.layers)


def _fused(modules: list[torch.nn.Linear]) -> PackedLinear:
    """One packed matrix computing ``torch.cat([m(x) for m in modules], -1)``."""
    weight = torch.cat([m.weight.detach() for m in modules])
    biases = [m.bias for m in modules]
    bias = None if all(b is None for b in biases) else torch.cat(
        [b.detach() if b is not None else torch.zeros(m.out_features) for m, b in zip(modules, biases, strict=True)])
    return PackedLinear(weight, bias)


class _Layer(torch.nn.Module):
    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        attn, mlp = layer.self_attn, layer.mlp
        self.qkv = _fused([attn.q_proj, attn.k_proj, attn.v_proj])
        self.o = PackedLinear.of(attn.o_proj)
        self.gate_up = _fused([mlp.gate_proj, mlp.up_proj])
        self.down = PackedLinear.of(mlp.down_proj)
        self.split = [attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features]
        self.intermediate = mlp.gate_proj.out_features
        # Shared with the model, not copied (weights, eps and the activation are the model's own). The
        # attention module is kept outside the module tree: the attention function reads its settings.
        self.norm_in, self.norm_post = layer.input_layernorm, layer.post_attention_layernorm
        self.act = mlp.act_fn
        self.__dict__["attention_module"] = attn


class PackedLlama(torch.nn.Module):
    """``model.base_model``'s forward for a Llama-family decoder, on packed and fused matrices.

    Call as the scheduler calls the base model: ``input_ids`` and ``position_ids`` (rows, positions),
    ``cache`` a transformers ``Cache`` (its ``update`` stores this step's keys and values and returns
    every key and value to attend to), ``attention_mask`` additive (rows, 1, positions, key positions)
    or None (every cached key visible, causal among the new positions, as the attention function does).
    Returns ``BaseModelOutputWithPast`` with ``last_hidden_state`` (rows, positions, hidden) after the
    final norm. Embeddings, norms and the rotary module are the model's own (shared, not copied).
    """

    def __init__(self, base: torch.nn.Module) -> None:
        super().__init__()
        self.embed_tokens, self.norm, self.rotary_emb = base.embed_tokens, base.norm, base.rotary_emb
        self.blocks = torch.nn.ModuleList(_Layer(layer) for layer in base.layers)
        self.config = base.config

    @staticmethod
    def _rms(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, norm.weight.shape, norm.weight, norm.variance_epsilon)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, cache,
                attention_mask: torch.Tensor | None = None, **_unused) -> BaseModelOutputWithPast:
        rows, length = input_ids.shape
        x = self.embed_tokens(input_ids)
        cos, sin = self.rotary_emb(x, position_ids)
        # Looked up per call, as the model's own layers do: the model's attention setting may change.
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        for i, b in enumerate(self.blocks):
            attn = b.attention_module
            q, k, v = b.qkv(self._rms(b.norm_in, x)).split(b.split, -1)
            q = q.view(rows, length, -1, attn.head_dim).transpose(1, 2)  # (rows, heads, positions, head_dim)
            k = k.view(rows, length, -1, attn.head_dim).transpose(1, 2)
            v = v.view(rows, length, -1, attn.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            k, v = cache.update(k, v, i)
            out, _ = attention(attn, q, k, v, attention_mask, dropout=0.0, scaling=attn.scaling)
            x = x + b.o(out.reshape(rows, length, -1))
            gate, up = b.gate_up(self._rms(b.norm_post, x)).split(b.intermediate, -1)
            x = x + b.down(b.act(gate) * up)
        return BaseModelOutputWithPast(last_hidden_state=self._rms(self.norm, x), cache=cache)

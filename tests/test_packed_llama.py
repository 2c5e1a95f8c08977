"""The written-out Llama-family forward computes what transformers' forward computes, and the scheduler uses it."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from models.engines import kv_cache, packed_linear, packed_llama, scheduler
from tests.test_scheduler import MIXED, _request, _run_together

CPU = torch.device("cpu")
pytestmark = pytest.mark.skipif(not packed_linear.supported(torch.nn.Linear(2, 2), CPU),
                                reason="this PyTorch build has no oneDNN linear operators")
SIZES = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256)


def _model(cls, config):
    torch.manual_seed(0)
    model = cls(config).eval()
    for p in model.parameters():  # random biases too (they start at zero), so a lost bias would show
        if p.dim() == 1:
            torch.nn.init.normal_(p, mean=1.0 if p.shape[0] == config.hidden_size else 0.0, std=0.1)
    return model


FAMILY = {
    "llama": lambda: _model(LlamaForCausalLM, LlamaConfig(**SIZES, mlp_bias=True)),
    "mistral": lambda: _model(MistralForCausalLM, MistralConfig(**SIZES, sliding_window=None)),
    "qwen2": lambda: _model(Qwen2ForCausalLM, Qwen2Config(**SIZES)),  # biases on q, k and v only
}


@pytest.mark.parametrize("family", sorted(FAMILY))
def test_same_hidden_states_as_transformers_prefill_then_decode(family):
    model = FAMILY[family]()
    assert packed_llama.supported(model)
    body, _head = packed_linear.for_model(model, CPU)
    assert isinstance(body, packed_llama.PackedLlama)
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, 300, (3, 9), generator=g)
    steps = torch.randint(0, 300, (3, 4), generator=g)
    ours, theirs = (kv_cache.preallocated(model.config, 16) for _ in range(2))
    with torch.inference_mode():
        positions = torch.arange(9).expand(3, 9)
        a = body(input_ids=prompt, position_ids=positions, cache=ours).last_hidden_state
        b = model.base_model(input_ids=prompt, position_ids=positions, cache=theirs, use_cache=True).last_hidden_state
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        for j in range(4):  # one new token per row, then an explicit mask as the scheduler passes
            ids, pos = steps[:, j:j + 1], torch.full((3, 1), 9 + j)
            mask = torch.zeros((3, 1, 1, 10 + j))
            a = body(input_ids=ids, position_ids=pos, cache=ours, attention_mask=mask).last_hidden_state
            b = model.base_model(input_ids=ids, position_ids=pos, cache=theirs, attention_mask=mask,
                                 use_cache=True).last_hidden_state
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # The fused matrices hold the same numbers as the model's: the planned bytes still hold.
    assert packed_linear.nbytes(packed_linear.for_model(model, CPU)) == packed_linear.planned_nbytes(model, CPU)


def test_other_decoders_keep_the_module_copy():
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)).eval()
    qwen3 = Qwen3ForCausalLM(Qwen3Config(**SIZES, head_dim=16)).eval()  # q/k norms: not Llama's layer
    windowed = MistralForCausalLM(MistralConfig(**SIZES, sliding_window=8)).eval()
    for model in (gpt2, qwen3, windowed):
        assert not packed_llama.supported(model)
    body, _head = packed_linear.for_model(gpt2, CPU)
    assert not isinstance(body, packed_llama.PackedLlama)


def test_the_copy_shares_the_models_tensors_and_goes_with_it():
    model = FAMILY["llama"]()
    body, _head = packed_linear.for_model(model, CPU)
    assert body.embed_tokens.weight is model.model.embed_tokens.weight
    assert body.blocks[0].norm_in.weight is model.model.layers[0].input_layernorm.weight
    assert not any(isinstance(m, packed_linear.PackedLinear) for m in model.modules())
    alive = weakref.ref(model)
    del model, body, _head
    gc.collect()
    assert alive() is None  # the copy (a value of a weak-keyed table) holds no reference to its model


def test_scheduler_texts_alone_equal_texts_in_a_mixed_batch_tiny_llama(tiny_gpt2):
    """Seeded and greedy texts through the written-out forward: the same alone and among others."""
    from models.core.registry import Loaded, ModelSpec, model_nbytes

    config = LlamaConfig(**{**SIZES, "vocab_size": len(tiny_gpt2.tokenizer)})
    model = _model(LlamaForCausalLM, config)
    loaded = Loaded(ModelSpec("tiny-llama", "tiny Llama (test)", "causal-lm", "local", ""), model,
                    tiny_gpt2.tokenizer, tiny_gpt2.device, model_nbytes(model))
    sched = scheduler.Scheduler(model, CPU)
    try:
        assert isinstance(sched._parts()[0], packed_llama.PackedLlama)
        alone = [_run_together(sched, [_request(loaded, p, **kw)])[0] for p, kw in MIXED]
        together = _run_together(sched, [_request(loaded, p, **kw) for p, kw in MIXED])
    finally:
        sched.close()
    assert together == alone
    assert [len(t) for t in alone] == [kw["max_new_tokens"] for _, kw in MIXED]

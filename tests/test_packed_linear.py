"""The scheduler's packed copy of a model computes what the model computes, and leaves the model alone."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers.pytorch_utils import Conv1D

from models.engines import packed_linear, scheduler

CPU = torch.device("cpu")
needs_onednn = pytest.mark.skipif(not packed_linear.supported(torch.nn.Linear(2, 2), CPU),
                                  reason="this PyTorch build has no oneDNN linear operators")


@needs_onednn
def test_packed_linear_matches_nn_linear_and_conv1d():
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 40)
    conv = Conv1D(40, 96)  # GPT-2's layer: weight stored (in, out)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(3, 7, 96)  # (batch, positions, features): any leading shape
    for module in (linear, conv):
        packed = packed_linear.PackedLinear.of(module)
        y = packed(x)
        assert y.shape == (3, 7, 40)
        torch.testing.assert_close(y, module(x), rtol=1e-5, atol=1e-5)
    assert packed_linear.PackedLinear.of(torch.nn.LayerNorm(4)) is None


@needs_onednn
def test_a_row_is_computed_the_same_whatever_the_row_count():
    torch.manual_seed(0)
    packed = packed_linear.PackedLinear(torch.randn(1536, 576) * 0.05, None)
    x = torch.randn(40, 576)
    alone = torch.cat([packed(x[i:i + 1].clone()) for i in range(40)])
    for rows in (2, 7, 30, 40):
        assert torch.equal(packed(x[:rows].clone()), alone[:rows]), rows


@needs_onednn
def test_the_copy_shares_parameters_and_leaves_the_model_unchanged(tiny_gpt2):
    model = tiny_gpt2.model
    before = model(torch.tensor([[464, 3290, 318]])).logits
    body, head = packed_linear.for_model(model, CPU)
    assert packed_linear.for_model(model, CPU)[0] is body  # built once per model
    assert not any(isinstance(m, packed_linear.PackedLinear) for m in model.modules())
    assert body.wte.weight is model.base_model.wte.weight  # embeddings and norms are shared, not copied
    ids = torch.tensor([[464, 3290, 318]])
    with torch.inference_mode():
        logits = head(body(input_ids=ids).last_hidden_state)
        torch.testing.assert_close(logits, model(ids).logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(model(ids).logits, before)
    assert packed_linear.nbytes((body, head)) == packed_linear.planned_nbytes(model, CPU) > 0


def test_no_copy_where_it_does_not_apply(tiny_gpt2):
    half = copy.deepcopy(tiny_gpt2.model).to(torch.bfloat16)
    assert packed_linear.for_model(half, CPU) is None
    assert packed_linear.for_model(tiny_gpt2.model, torch.device("meta")) is None  # any device but the CPU
    assert packed_linear.planned_nbytes(half, CPU) == 0


@needs_onednn
def test_the_scheduler_steps_on_the_copy_unless_turned_off(tiny_gpt2, monkeypatch):
    for packed, expect in ((True, True), (False, False)):
        monkeypatch.setattr(packed_linear, "ENABLED", packed)
        s = scheduler.Scheduler(tiny_gpt2.model, CPU)
        try:
            body, head = s._parts()
            assert isinstance(head, packed_linear.PackedLinear) is expect
            assert (body is tiny_gpt2.model.base_model) is not expect
        finally:
            s.close()


@needs_onednn
def test_the_copy_goes_when_the_model_goes():
    """An evicted model takes its packed copy with it (the copy holds no reference to the model)."""
    import gc
    import weakref

    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=32, vocab_size=64)).eval()
    body, head = packed_linear.for_model(model, CPU)
    gone = [weakref.ref(model), weakref.ref(body), weakref.ref(head)]
    del model, body, head
    gc.collect()
    # By identity, not by counting entries: other tests' models may be collected by the same gc.collect().
    assert [ref() for ref in gone] == [None, None, None]


def test_the_installed_torch_is_the_one_the_private_operators_were_checked_against():
    assert torch.__version__.split("+")[0] == packed_linear.TORCH_CHECKED, (
        f"torch is {torch.__version__}; models/engines/packed_linear.py uses torch.ops.mkldnn's private linear "
        f"operators as of {packed_linear.TORCH_CHECKED}: re-check them (these tests, benchmarks.packed_linear), "
        "then update TORCH_CHECKED")


def test_another_torch_steps_on_the_models_own_matrices(monkeypatch):
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert not packed_linear.supported(torch.nn.Linear(2, 2), CPU)

"""models/core/torch_internals.py: the PyTorch release its private calls were checked against."""

from __future__ import annotations

import torch

from models.core import torch_internals


def test_the_installed_torch_is_the_release_the_private_calls_were_checked_against() -> None:
    assert torch_internals.checked_release(), (
        f"torch is {torch.__version__}; models/core/torch_internals.py was checked against "
        f"{torch_internals.TORCH_CHECKED}: re-check torch.ops.mkldnn._is_mkldnn_bf16_supported, then update it")


def test_another_release_gets_the_safe_answer(monkeypatch) -> None:
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert torch_internals.cpu_runs_bf16() is False

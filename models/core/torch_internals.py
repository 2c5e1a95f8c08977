"""What LM Lab asks PyTorch that only a private function answers, in one place, checked against one release.

On another PyTorch release each answer falls back to the safe one; ``tests/test_torch_internals.py``
fails when the installed release is not ``TORCH_CHECKED``, so an upgrade re-checks them. (The
classroom engine's packed matrices keep their own check: ``models/engines/packed_linear.py``.)
"""

from __future__ import annotations

import torch

TORCH_CHECKED = "2.13.0"  # requirements.txt pins it


def checked_release() -> bool:
    """Whether the installed PyTorch is the release these functions were read against."""
    return torch.__version__.split("+")[0] == TORCH_CHECKED


def cpu_runs_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (``torch.ops.mkldnn._is_mkldnn_bf16_supported``);
    False on another release, where float32 is the safe answer."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(checked_release() and check is not None and check())

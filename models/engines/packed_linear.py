"""The scheduler's copy of a causal LM on the CPU, with its matrices in oneDNN's blocked layout.

A decode step of a class of thirty is mostly matrix products of 1-32 rows against the model's
weights (74 % of the step in ``torch.profiler``). PyTorch's CPU wheel hands ``nn.Linear`` to MKL's
sgemm; oneDNN, also inside every x86 and ARM CPU wheel, runs the same products from a copy of each
weight reordered once into its blocked layout (what ``torch.compile``'s CPU "freezing" pass does).
Measured on a 2-core AMD EPYC with SmolLM2-135M, one decode step interleaved in one process
(``benchmarks/packed_linear.py``): 145 ms with MKL against 118 ms packed for 30 rows, 57 against
50 ms for one; the output layer (49,152 x 576) alone 29 against 15 ms for 30 rows.

The copy is transformers' module tree with its matrices swapped (``module_copy``).

The packed matrices come from PyTorch's private oneDNN operators (``torch.ops.mkldnn._reorder_linear_weight``,
``_linear_pointwise``): used only with the PyTorch they were checked against (``TORCH_CHECKED``, the version
requirements.txt pins), and only while ``LMLAB_PACKED`` is not 0; anywhere else the scheduler steps on the
model's own matrices.

Why a second copy and not the model itself: the packed weights replace no parameter, so every other
user of the model (``generate()``, the logit lens, the compression codec with its recorded kernel
fingerprint, training) keeps its exact numbers; only the scheduler's forward passes use the copy.
The cost is memory: one more copy of the matrices (513 MiB for SmolLM2-135M), built on the
scheduler's first step (~0.4 s) and kept while the model is loaded.

Logits differ from MKL's by ~1e-4 at most (float32 rounding in another order; measured by the
benchmark). As with MKL, a row's tokens are the same alone and inside a batch (tests); its log-probs
may differ in the last float32 bits, as the attention kernel's do.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import weakref

import torch

# oneDNN picks its blocked layout for this many rows: a decode step's batch on a CPU (up to 32).
# Layouts chosen for 1 row computed a row differently at different row counts; for 16, 32 and 64 they did not.
ROWS_HINT = 32

# LMLAB_PACKED=0: the scheduler steps on the model's own matrices (MKL on a CPU), for comparison or to
# save the copy's memory.
ENABLED = os.environ.get("LMLAB_PACKED", "1") != "0"

TORCH_CHECKED = "2.13.0"  # the PyTorch whose private oneDNN linear operators this module was checked against

log = logging.getLogger("lmlab.packed_linear")
_twins: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_guard = threading.Lock()


def supported(model, device: torch.device) -> bool:
    """True for a float32 model on the CPU with PyTorch's oneDNN linear operators available, on the PyTorch
    release this module was checked against."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if torch.__version__.split("+")[0] != TORCH_CHECKED:
        log.warning("torch %s: the packed matrices were checked against %s only; using the model's own",
                    torch.__version__, TORCH_CHECKED)
        return False
    ops = torch.ops.mkldnn
    try:
        return (next(model.parameters()).dtype == torch.float32
                and hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise"))
    except (RuntimeError, StopIteration):
        return False


def _is_matrix(module: torch.nn.Module) -> bool:
    """An ``nn.Linear`` or transformers' ``Conv1D`` (GPT-2's, weight stored (in, out))."""
    return isinstance(module, torch.nn.Linear) or (type(module).__name__ == "Conv1D"
                                                   and getattr(module, "weight", None) is not None)


class PackedLinear(torch.nn.Module):
    """``y = x W^T + b`` from ``weight`` (out_features, in_features) reordered for oneDNN.

    Input (..., in_features) float32, output (..., out_features). The weight is copied, not shared:
    later changes to the source module are not seen.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), ROWS_HINT)
        self.bias = None if bias is None else bias.detach()

    @classmethod
    def of(cls, module: torch.nn.Module) -> PackedLinear | None:
        """A packed copy of a matrix module (``_is_matrix``); None for anything else."""
        if not _is_matrix(module):
            return None
        weight = module.weight if isinstance(module, torch.nn.Linear) else module.weight.t()
        return cls(weight, module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).contiguous()
        y = torch.ops.mkldnn._linear_pointwise(rows, self.packed, self.bias, "none", [], "")
        return y.reshape(*x.shape[:-1], self.out_features)


def _twin_of(model) -> tuple[torch.nn.Module, PackedLinear] | None:
    head = PackedLinear.of(model.get_output_embeddings())
    if head is None:  # not a plain linear output layer: nothing to gain from copying the body
        return None
    return module_copy(model), head


def module_copy(model) -> torch.nn.Module:
    """A copy of ``model.base_model`` whose matrices are packed and every other tensor is shared."""
    body = model.base_model
    # A copy of the module tree that shares every parameter and buffer (the memo maps each tensor to
    # itself); only the matrices are then swapped for packed copies.
    memo = {id(t): t for t in [*body.parameters(), *body.buffers()]}
    twin = copy.deepcopy(body, memo)
    for module in list(twin.modules()):
        for child_name, child in list(module.named_children()):
            packed = PackedLinear.of(child)
            if packed is not None:
                setattr(module, child_name, packed)
    return twin.eval()


def for_model(model, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(body, output layer) computing as ``model.base_model`` and ``model.get_output_embeddings()`` do,
    with packed matrices; built once per model and kept while the model lives. None where not
    ``supported`` (GPU, half precision, a build without oneDNN) or where the output layer is not a
    plain linear map: the caller then uses the model itself."""
    if not supported(model, device):
        return None
    with _guard:
        if model not in _twins:
            _twins[model] = _twin_of(model)  # None is remembered too: the model is looked at once
        return _twins[model]


def planned_nbytes(model, device: torch.device) -> int:
    """Bytes ``for_model`` will add for ``model`` (0 where it will not pack): what a model cache counts
    with the weights, so that its memory budget holds once the scheduler has started."""
    if not (ENABLED and supported(model, device)):
        return 0
    parts = [*model.base_model.modules(), model.get_output_embeddings()]
    return sum(m.weight.numel() * m.weight.element_size() for m in parts if _is_matrix(m))


def nbytes(parts: tuple[torch.nn.Module, torch.nn.Module]) -> int:
    """Bytes the packed copies hold (their shared parameters not counted)."""
    return sum(m.packed.numel() * m.packed.element_size() for p in parts for m in p.modules()
               if isinstance(m, PackedLinear))

"""Online adaptation of the model while it codes (dynamic evaluation), identical on both sides.

Dynamic evaluation (Krause et al., "Dynamic Evaluation of Neural Sequence Models", ICML 2018, and
"Dynamic Evaluation of Transformer Language Models", 2019; FineZip, 2024, does the same with a large
model) takes gradient steps on text already coded, so the model drifts toward *this* text's names and
style. A coder can do it because the decoder has decoded the same tokens at the same moment: after every
``every`` steps of the lock-step loop, both sides take one AdamW step on the next-token loss of the
tokens each lane coded in those steps, training the top ``blocks`` transformer blocks and the final norm.

The runner's weights are never touched: the adapter holds private copies of the trained blocks (the lower
blocks, the embeddings and the output layer stay shared and frozen), with float32 master weights for the
optimiser, copied into the model's precision after each step. The key/value caches the lanes hold were
computed with the weights of their time; both sides keep them the same way.

Determinism: the encoder and decoder run the same forward and backward with the same shapes, dtype and
thread count; the file's fingerprint already requires the same kind of CPU/GPU kernels and the same
libraries, which is what makes the optimiser steps bit-identical too.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from models.core.errors import InputError

LOSS_ROWS = 1024  # tokens per slice of the output layer in the loss: the logits of 6,000 tokens would be 1.2 GB


@dataclass(frozen=True)
class AdaptSettings:
    """every: lock-step steps between two optimiser steps (each lane's last ``every`` tokens are the batch);
    lr: AdamW's learning rate; blocks: transformer blocks trained, counted from the top (0: all)."""

    every: int
    lr: float
    blocks: int

    def check(self, n_blocks: int) -> None:
        """InputError unless every >= 1, 0 < lr <= 0.01 and 0 <= blocks <= the model's blocks."""
        if not 1 <= self.every <= 100_000:
            raise InputError(f"adaptation: steps between updates must be between 1 and 100,000 (got {self.every})")
        if not 0 < self.lr <= 0.01:
            raise InputError(f"adaptation: the learning rate must be above 0 and at most 0.01 (got {self.lr})")
        if not 0 <= self.blocks <= n_blocks:
            raise InputError(f"adaptation: trained blocks must be between 0 (all) and the model's {n_blocks} "
                             f"(got {self.blocks})")

    def to_header(self) -> dict:
        return {"every": self.every, "lr": self.lr, "blocks": self.blocks}

    @classmethod
    def from_header(cls, value) -> AdaptSettings:
        """The settings a file records; InputError when they are malformed."""
        try:
            s = cls(every=value["every"], lr=value["lr"], blocks=value["blocks"])
        except (KeyError, TypeError) as exc:
            raise InputError(f"the adaptation settings are malformed ({exc})") from None
        if type(s.every) is not int or type(s.blocks) is not int or type(s.lr) not in (int, float):
            raise InputError("the adaptation settings are malformed (not numbers)")
        return s


def stack_of(body: torch.nn.Module) -> tuple[str, str]:
    """Names of (the list of transformer blocks, the final norm) in a causal LM's body: Llama-style models
    (SmolLM2, Mistral, Qwen) and GPT-2. InputError for other architectures."""
    for blocks, norm in (("layers", "norm"), ("h", "ln_f")):
        if isinstance(getattr(body, blocks, None), torch.nn.ModuleList) and hasattr(body, norm):
            return blocks, norm
    raise InputError(f"online adaptation supports Llama- and GPT-2-style models, not {type(body).__name__}")


def block_count(body: torch.nn.Module) -> int:
    """The number of transformer blocks in a causal LM's body (InputError as ``stack_of``)."""
    return len(getattr(body, stack_of(body)[0]))


class _Frozen(torch.nn.Module):
    """Runs a shared, frozen module without autograd, so only the trained blocks build a graph (the shared
    parameters may require grad: they belong to the loaded model). Attributes the body reads from its
    modules (``attention_type``, ``weight`` ...) pass through."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args, **kwargs):
        with torch.no_grad():
            return self.inner(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("inner"), name)


class Adapter:
    """Private copies of the top blocks of ``body`` that learn from the coded text.

    ``body`` is the runner's transformer body (shared, never modified); ``logits`` maps hidden states
    (..., hidden) to float32 logits (..., vocab) with the frozen output layer. ``model`` is the body to code
    with: the shared lower blocks, then the adapted copies."""

    def __init__(self, body: torch.nn.Module, logits, settings: AdaptSettings) -> None:
        blocks_name, norm_name = stack_of(body)
        blocks = getattr(body, blocks_name)
        settings.check(len(blocks))
        self.settings, self.logits = settings, logits
        cut = len(blocks) - (settings.blocks or len(blocks))
        trained = [copy.deepcopy(b) for b in blocks[cut:]]
        norm = copy.deepcopy(getattr(body, norm_name))
        self.params = [p for m in [*trained, norm] for p in m.parameters()]
        for p in self.params:
            p.requires_grad_(True)
        self.masters = [p.detach().float().clone().requires_grad_(True) for p in self.params]
        self.optimizer = torch.optim.AdamW(self.masters, lr=settings.lr, weight_decay=0.0)
        model = copy.copy(body)  # shallow: shares the frozen modules (embeddings, lower blocks)
        model._modules = {name: None if m is None else _Frozen(m) for name, m in body._modules.items()}
        model._modules[blocks_name] = torch.nn.ModuleList([*(_Frozen(b) for b in blocks[:cut]), *trained])
        model._modules[norm_name] = norm
        self.model = model.eval()
        self.updates = 0

    def due(self, steps_done: int) -> bool:
        return steps_done % self.settings.every == 0

    def update(self, rows: torch.Tensor, mask: torch.Tensor) -> float:
        """One AdamW step on the next-token loss of ``rows`` (lanes, t) token ids, each row read from its
        start; ``mask`` (lanes, t - 1) bool marks the targets that count (tokens the lane really coded).
        Returns the mean loss in bits per token (0 and no step when nothing counts)."""
        count = int(mask.sum())
        if count == 0:
            return 0.0
        total = 0.0
        with torch.enable_grad():  # whatever the caller's mode: the trained blocks need their graph
            out = self.model(input_ids=rows.to(self.params[0].device), use_cache=False)
            hidden = out.last_hidden_state[:, :-1]
            targets = rows[:, 1:].to(hidden.device)[mask.to(hidden.device)]
            selected = hidden[mask.to(hidden.device)]  # (count, hidden), its graph through the trained blocks
            # The loss in slices of the output layer: each slice's gradient reaches `selected`, then one backward.
            leaf = selected.detach().requires_grad_(True)
            for lo in range(0, count, LOSS_ROWS):
                logits = self.logits(leaf[lo:lo + LOSS_ROWS])
                loss = torch.nn.functional.cross_entropy(logits, targets[lo:lo + LOSS_ROWS], reduction="sum") / count
                loss.backward()
                total += float(loss.detach())
            selected.backward(leaf.grad)
        for p, m in zip(self.params, self.masters, strict=True):
            m.grad = None if p.grad is None else p.grad.float()
            p.grad = None
        self.optimizer.step()
        with torch.no_grad():
            for p, m in zip(self.params, self.masters, strict=True):
                p.copy_(m)
        self.updates += 1
        return total / 0.6931471805599453

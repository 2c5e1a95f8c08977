"""A key/value cache that grows into preallocated memory instead of re-concatenating.

transformers' ``DynamicLayer`` appends a step's keys and values with ``torch.cat``, which copies
the whole cache on every step: for the LM codec's lock-step decoding (dozens of lanes, contexts
of a thousand tokens) that copy cost as much as the matrix products. This layer writes each step
into a buffer sized once for the longest context the coder will reach and hands attention a view
of the filled part, so attention sees exactly the tensors a dynamic cache would hold (same
shapes, same values) without the copies. ``StaticCache`` avoids the copies too, but attends over
its whole capacity behind a mask on every step, which costs more at short contexts.

    cache = preallocated(model.config, capacity)   # pass as ``cache=`` to the model's forward
    reset(cache)                                    # empty it for a rebuilt context (no reallocation)

Models with sliding-window layers (Mistral, some Qwen and Gemma) get ``None`` instead: their layers
need transformers' own sliding caches, so they keep the default dynamic cache.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """One transformer layer's keys and values, in buffers of ``capacity`` positions."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        b, h, _, d = key_states.shape
        self._k = torch.empty((b, h, self.capacity, d), dtype=key_states.dtype, device=self.device)
        self._v = torch.empty((b, h, self.capacity, value_states.shape[-1]), dtype=value_states.dtype,
                              device=self.device)
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        end = self.length + n
        if end > self.capacity or key_states.shape[0] != self._k.shape[0]:
            raise RuntimeError(f"the key/value cache holds {self.capacity} positions of {self._k.shape[0]} lanes; "
                               f"{end} positions of {key_states.shape[0]} were asked for")
        self._k[:, :, self.length:end] = key_states
        self._v[:, :, self.length:end] = value_states
        self.length = end
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Each lane's buffers ``repeats`` times (one prefill shared by lanes that read the same tokens)."""
        if self.is_initialized:
            self._k = self._k.repeat_interleave(repeats, dim=0)
            self._v = self._v.repeat_interleave(repeats, dim=0)
            self.keys, self.values = self._k[:, :, :self.length], self._v[:, :, :self.length]

    def reset(self) -> None:
        self.length = 0
        self.keys = self.values = None  # the buffers stay allocated for the next prefill

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove")
        self.length = max(0, self.length + tokens_to_remove)
        if self.is_initialized:
            self.keys, self.values = self._k[:, :, :self.length], self._v[:, :, :self.length]


def preallocated(config, capacity: int) -> Cache | None:
    """A cache for ``config``'s model holding up to ``capacity`` positions per lane (None: use the default)."""
    text = config.get_text_config(decoder=True)
    if getattr(text, "sliding_window", None) or set(getattr(text, "layer_types", None) or []) - {"full_attention"}:
        return None
    layers = int(text.num_hidden_layers)  # GPT-2 configs map it to n_layer
    return Cache(layers=[PreallocatedLayer(capacity) for _ in range(layers)])


def reset(cache: Cache | None) -> None:
    for layer in cache.layers if cache is not None else []:
        layer.reset()

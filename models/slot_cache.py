"""Key/value cache for iteration-level batching: one row (slot) per sequence, each at its own length.

A batched decode step feeds one token per sequence, and the sequences have different lengths. This
cache keeps every layer's keys and values in buffers of shape ``(slots, kv_heads, capacity,
head_dim)``; sequence ``i`` lives in row ``i`` and its token at position ``p`` is written at column
``p``. Attention receives a view of the first ``n`` rows up to the longest sequence, and a 4-D mask
hides the columns each shorter row has not reached. Rows are kept contiguous (a leaving sequence's
row is filled by the last one), so the view is never a copy.

Prefill does not happen here: a newly admitted prompt is run through a staging cache
(``models.compression.kv_cache.preallocated``) and its keys and values are copied in with ``load``.

Sliding-window models are not supported (their layers need transformers' own caches); the scheduler
falls back to one sequence at a time for them.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer


class _DecodeLayer(DynamicLayer):
    """One layer's view of the slot buffers for the current decode step."""

    def __init__(self, owner: SlotCache, index: int) -> None:
        super().__init__()
        self.owner, self.index = owner, index
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        # key_states: (n, kv_heads, 1, head_dim), one new token per row
        o = self.owner
        k, v = o.keys[self.index], o.values[self.index]
        n = key_states.shape[0]
        rows = o.row_index[:n]
        k[rows, :, o.positions] = key_states[:, :, 0]
        v[rows, :, o.positions] = value_states[:, :, 0]
        return k[:n, :, :o.kv_len], v[:n, :, :o.kv_len]

    def get_seq_length(self) -> int:
        return self.owner.kv_len

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.owner.kv_len, 0


class SlotCache:
    """Preallocated keys/values for ``slots`` sequences of up to ``capacity`` positions each."""

    def __init__(self, layers: int, device: torch.device) -> None:
        self.n_layers, self.device = layers, device
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.slots = self.capacity = 0
        self.row_index = torch.arange(0, device=device)
        self.positions = torch.zeros(0, dtype=torch.long, device=device)
        self.kv_len = 0
        self.cache = Cache(layers=[_DecodeLayer(self, i) for i in range(layers)])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def ensure(self, slots: int, capacity: int, like: list[torch.Tensor]) -> None:
        """Grow (never shrink while rows are live) to at least ``slots`` x ``capacity``.

        ``like`` is one layer's keys and values from a staging cache, which give heads, head size and dtype.
        Existing rows are copied into the new buffers.
        """
        if slots <= self.slots and capacity <= self.capacity:
            return
        slots, capacity = max(slots, self.slots), max(capacity, self.capacity)
        new_k, new_v = [], []
        for i in range(self.n_layers):
            k_like, v_like = (self.keys[i], self.values[i]) if self.keys else (like[0], like[1])
            k = torch.zeros((slots, k_like.shape[1], capacity, k_like.shape[3]), dtype=k_like.dtype, device=self.device)
            v = torch.zeros((slots, v_like.shape[1], capacity, v_like.shape[3]), dtype=v_like.dtype, device=self.device)
            if self.keys:
                k[:self.slots, :, :self.capacity] = self.keys[i]
                v[:self.slots, :, :self.capacity] = self.values[i]
            new_k.append(k)
            new_v.append(v)
        self.keys, self.values = new_k, new_v
        self.slots, self.capacity = slots, capacity
        self.row_index = torch.arange(slots, device=self.device)

    def shrink(self, capacity: int) -> None:
        """Reallocate to ``capacity`` positions per row (after a long sequence left), keeping the rows."""
        if capacity >= self.capacity or not self.keys:
            return
        self.keys = [k[:, :, :capacity].clone() for k in self.keys]
        self.values = [v[:, :, :capacity].clone() for v in self.values]
        self.capacity = capacity

    def release(self) -> None:
        """Free the buffers (no live rows): memory goes back when the class goes quiet."""
        self.keys, self.values = [], []
        self.slots = self.capacity = 0

    def load(self, row: int, staging: Cache, lane: int, length: int) -> None:
        """Copy positions ``[0, length)`` of ``lane`` of a staging cache into ``row``."""
        for i, layer in enumerate(staging.layers):
            self.keys[i][row, :, :length] = layer.keys[lane, :, :length]
            self.values[i][row, :, :length] = layer.values[lane, :, :length]

    def move(self, src: int, dst: int, length: int) -> None:
        """Row ``src``'s first ``length`` positions into row ``dst`` (keeps the live rows contiguous)."""
        for k, v in zip(self.keys, self.values, strict=True):
            k[dst, :, :length] = k[src, :, :length]
            v[dst, :, :length] = v[src, :, :length]

    def prepare(self, positions: torch.Tensor) -> Cache:
        """The transformers Cache for one decode step of rows ``0..n-1`` writing at ``positions`` (n,)."""
        self.positions = positions
        self.kv_len = int(positions.max()) + 1
        return self.cache

"""Key/value cache for iteration-level batching: one row (slot) per sequence, each at its own length.

A batched decode step feeds one token per sequence, and the sequences have different lengths. This
cache keeps every layer's keys and values in buffers of shape ``(slots, kv_heads, capacity,
head_dim)``; sequence ``i`` lives in row ``i`` and its token at position ``p`` is written at column
``p``. Attention receives a view of the first ``n`` rows up to the longest sequence, and a 4-D mask
hides the columns each shorter row has not reached. Rows are kept contiguous (a leaving sequence's
row is filled by the last one), so the view is never a copy.

Prefill does not happen here: a newly admitted prompt is run through a staging cache
(``models.engines.kv_cache.preallocated``) and its keys and values are copied in with ``load``.

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
    """Preallocated keys/values for ``slots`` sequences of up to ``capacity`` positions each.

    All layers live in one buffer ``kv`` (layers, 2, slots, kv_heads, capacity, head_dim), key then value;
    ``keys[i]`` and ``values[i]`` are views of it. One buffer makes growing, loading a class's prompts
    and moving a row a handful of tensor operations instead of two per layer and row: every operation
    hands the interpreter lock to the web server's threads and may wait up to the switch interval
    (5 ms) to get it back. Measured: growing to a class of 30 took 65 ms alone and 560-980 ms beside a
    busy Python thread with a buffer per layer; joining 29 rows took 583 ms in the app, copy by copy.
    """

    def __init__(self, layers: int, device: torch.device) -> None:
        self.n_layers, self.device = layers, device
        self.kv: torch.Tensor | None = None
        self.keys: list[torch.Tensor] = []  # views of kv, one per layer
        self.values: list[torch.Tensor] = []
        self._use(None)  # slots, capacity and row_index follow the buffer
        self.positions = torch.zeros(0, dtype=torch.long, device=device)
        self.kv_len = 0
        self.cache = Cache(layers=[_DecodeLayer(self, i) for i in range(layers)])

    @property
    def nbytes(self) -> int:
        return 0 if self.kv is None else self.kv.numel() * self.kv.element_size()

    def _use(self, kv: torch.Tensor | None) -> None:
        self.kv = kv
        self.keys = [] if kv is None else list(kv[:, 0].unbind(0))
        self.values = [] if kv is None else list(kv[:, 1].unbind(0))
        self.slots, self.capacity = (0, 0) if kv is None else (kv.shape[2], kv.shape[4])
        self.row_index = torch.arange(self.slots, device=self.device)

    def ensure(self, slots: int, capacity: int, like: list[torch.Tensor]) -> None:
        """Grow (never shrink while rows are live) to at least ``slots`` x ``capacity``.

        ``like`` is one layer's keys and values from a staging cache (batch, kv_heads, positions,
        head_dim), which give heads, head size and dtype. Existing rows are copied into the new buffer.
        """
        if slots <= self.slots and capacity <= self.capacity:
            return
        slots, capacity = max(slots, self.slots), max(capacity, self.capacity)
        k = like[0]
        # Zeros, not empty: a column no row has reached yet is masked, but a NaN there would still
        # turn its softmax into NaN.
        kv = torch.zeros((self.n_layers, 2, slots, k.shape[1], capacity, k.shape[3]), dtype=k.dtype, device=self.device)
        if self.kv is not None:
            kv[:, :, :self.slots, :, :self.capacity] = self.kv
        self._use(kv)

    def shrink(self, capacity: int) -> None:
        """Reallocate to ``capacity`` positions per row (after a long sequence left), keeping the rows."""
        if capacity >= self.capacity or self.kv is None:
            return
        self._use(self.kv[:, :, :, :, :capacity].clone())

    def release(self) -> None:
        """Free the buffer (no live rows): memory goes back when the class goes quiet."""
        self._use(None)

    def load(self, row: int, staging: Cache, lanes: list[int], length: int) -> None:
        """Copy positions ``[0, length)`` of the staging cache's rows ``lanes`` into rows ``row, row + 1, ...``
        (a lane may repeat: requests with the same prompt share one staging row)."""
        index = torch.tensor(lanes, device=self.device)
        keys = torch.stack([layer.keys[:, :, :length] for layer in staging.layers])  # (layers, lanes, heads, length, d)
        values = torch.stack([layer.values[:, :, :length] for layer in staging.layers])
        end = row + len(lanes)
        self.kv[:, 0, row:end, :, :length] = keys.index_select(1, index)
        self.kv[:, 1, row:end, :, :length] = values.index_select(1, index)

    def move(self, src: int, dst: int, length: int) -> None:
        """Row ``src``'s first ``length`` positions into row ``dst`` (keeps the live rows contiguous)."""
        self.kv[:, :, dst, :, :length] = self.kv[:, :, src, :, :length]

    def prepare(self, positions: torch.Tensor) -> Cache:
        """The transformers Cache for one decode step of rows ``0..n-1`` writing at ``positions`` (n,)."""
        self.positions = positions
        self.kv_len = int(positions.max()) + 1
        return self.cache

"""The slot cache's one buffer: growing, loading a group's prompts, moving and shrinking rows keep every
row's keys and values where the decode step reads them (``keys[i]`` / ``values[i]`` of layer i)."""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer

from models.engines.slot_cache import SlotCache

LAYERS, HEADS, DIM = 3, 2, 4


def staging(lanes: int, length: int, seed: int) -> Cache:
    """A staging cache as prefill leaves it: per layer keys/values (lanes, heads, length, dim)."""
    g = torch.Generator().manual_seed(seed)
    layers = []
    for _ in range(LAYERS):
        layer = DynamicLayer()
        layer.keys = torch.randn(lanes, HEADS, length, DIM, generator=g)
        layer.values = torch.randn(lanes, HEADS, length, DIM, generator=g)
        layers.append(layer)
    return Cache(layers=layers)


def test_load_copies_each_lane_into_consecutive_rows_even_repeated() -> None:
    cache = SlotCache(LAYERS, torch.device("cpu"))
    group = staging(lanes=2, length=5, seed=0)
    cache.ensure(4, 8, [group.layers[0].keys, group.layers[0].values])
    cache.load(1, group, [1, 0, 1], 5)  # rows 1, 2, 3 from lanes 1, 0, 1
    for i, layer in enumerate(group.layers):
        for row, lane in [(1, 1), (2, 0), (3, 1)]:
            assert torch.equal(cache.keys[i][row, :, :5], layer.keys[lane])
            assert torch.equal(cache.values[i][row, :, :5], layer.values[lane])
        assert not cache.keys[i][0].any()  # untouched row stays zero
        assert not cache.keys[i][:, :, 5:].any()  # positions past the prompts too
    assert cache.nbytes == LAYERS * 2 * 4 * HEADS * 8 * DIM * 4


def test_growing_keeps_rows_and_the_views_follow_the_new_buffer() -> None:
    cache = SlotCache(LAYERS, torch.device("cpu"))
    group = staging(lanes=1, length=3, seed=1)
    like = [group.layers[0].keys, group.layers[0].values]
    cache.ensure(1, 4, like)
    cache.load(0, group, [0], 3)
    cache.ensure(3, 8, like)  # more rows and more positions
    assert (cache.slots, cache.capacity) == (3, 8)
    for i, layer in enumerate(group.layers):
        assert torch.equal(cache.keys[i][0, :, :3], layer.keys[0])
        assert cache.keys[i].data_ptr() == cache.kv[i, 0].data_ptr()  # a view, not a copy
    cache.keys[2][1, 0, 7, 0] = 5.0  # the decode step writes through the views
    assert cache.kv[2, 0, 1, 0, 7, 0] == 5.0


def test_move_and_shrink_keep_the_live_rows() -> None:
    cache = SlotCache(LAYERS, torch.device("cpu"))
    group = staging(lanes=3, length=6, seed=2)
    cache.ensure(3, 16, [group.layers[0].keys, group.layers[0].values])
    cache.load(0, group, [0, 1, 2], 6)
    cache.move(2, 0, 6)  # the last row fills the hole a finished row left
    cache.shrink(8)
    assert cache.capacity == 8
    for i, layer in enumerate(group.layers):
        assert torch.equal(cache.keys[i][0, :, :6], layer.keys[2])
        assert torch.equal(cache.values[i][1, :, :6], layer.values[1])
    cache.release()
    assert (cache.kv, cache.keys, cache.slots, cache.capacity, cache.nbytes) == (None, [], 0, 0, 0)

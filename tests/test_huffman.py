"""Huffman coder: optimality bounds, canonical-code properties, round-trips, statistics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.compression import huffman

counts_strategy = st.lists(st.integers(0, 10**6), min_size=1, max_size=300).map(np.array)


def _prefix_free(lengths, codes) -> bool:
    words = sorted(format(int(c), f"0{int(ln)}b") for c, ln in zip(codes, lengths, strict=True) if ln)
    return all(not b.startswith(a) for a, b in zip(words, words[1:], strict=False))


@settings(max_examples=60, deadline=None)
@given(counts_strategy)
def test_optimal_and_canonical(counts):
    lengths = huffman.code_lengths(counts, max_len=24)  # no limit in effect: the plain Huffman bound holds
    present = counts > 0
    assert np.all((lengths > 0) == present)
    s = huffman.stats(counts, lengths)
    if present.sum() >= 2:
        assert abs(s.kraft - 1.0) < 1e-12  # a full binary tree
        assert s.entropy - 1e-9 <= s.avg_length < s.entropy + 1  # H <= L < H + 1
    codes = huffman.canonical_codes(lengths)
    assert _prefix_free(lengths, codes)
    assert np.all(codes < (1 << lengths.astype(np.int64)))


@settings(max_examples=40, deadline=None)
@given(counts_strategy, st.integers(9, 14))
def test_length_limit_keeps_a_full_tree(counts, max_len):
    lengths = huffman.code_lengths(counts, max_len)
    present = np.flatnonzero(counts)
    if len(present) >= 2:
        assert lengths.max() <= max(max_len, int(np.ceil(np.log2(len(present)))))
        assert abs(np.sum(np.exp2(-lengths[present].astype(float))) - 1) < 1e-12
    assert _prefix_free(lengths, huffman.canonical_codes(lengths))


def test_geometric_source_is_forced_under_the_limit():
    counts = (2 ** np.arange(40, dtype=np.int64))[::-1]  # unlimited depth would be 39
    lengths = huffman.code_lengths(counts, max_len=12)
    assert lengths.max() == 12
    assert np.sum(np.exp2(-lengths.astype(float))) == 1.0
    assert lengths[0] == 1  # the most frequent symbol still gets the shortest code


def test_canonical_codes_known_example():
    # lengths (A2, B1, C3, D3) -> B=0, A=10, C=110, D=111
    codes = huffman.canonical_codes(np.array([2, 1, 3, 3]))
    assert [format(int(c), f"0{n}b") for c, n in zip(codes, [2, 1, 3, 3], strict=True)] == ["10", "0", "110", "111"]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 20000), st.integers(1, 256), st.sampled_from([1, 7, 64, 4096]), st.integers(0, 2**31))
def test_roundtrip_bytes(n, alphabet, block, seed):
    rng = np.random.default_rng(seed)
    symbols = np.minimum(rng.geometric(0.2, size=n) - 1, alphabet - 1).astype(np.uint8)
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=256))
    stream = huffman.encode(symbols, lengths, block)
    assert len(stream.data) * 8 >= huffman.coded_bits(np.bincount(symbols, minlength=256), lengths)
    np.testing.assert_array_equal(huffman.decode(stream, lengths), symbols)


def test_lane_decoder_matches_sequential_decoder():
    rng = np.random.default_rng(1)
    symbols = rng.zipf(1.5, size=30011).clip(0, 255).astype(np.uint8)
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=256))
    stream = huffman.encode(symbols, lengths, block=512)
    np.testing.assert_array_equal(huffman.decode_lanes(stream, lengths), symbols)
    np.testing.assert_array_equal(huffman.decode(stream, lengths), symbols)


def test_sixteen_bit_alphabet_roundtrip():
    rng = np.random.default_rng(2)
    symbols = rng.zipf(1.2, size=200000).clip(0, 65535).astype(np.uint16)
    counts = np.bincount(symbols, minlength=65536)
    lengths = huffman.code_lengths(counts)
    s = huffman.stats(counts, lengths)
    assert s.avg_length < s.entropy * 1.01
    np.testing.assert_array_equal(huffman.decode(huffman.encode(symbols, lengths), lengths), symbols)


def test_single_symbol_and_empty():
    lengths = huffman.code_lengths(np.array([0, 5, 0]))
    assert list(lengths) == [0, 1, 0]
    sym = np.ones(10, np.uint8)
    np.testing.assert_array_equal(huffman.decode(huffman.encode(sym, lengths), lengths), sym)
    empty = huffman.encode(np.zeros(0, np.uint8), lengths)
    assert empty.n == 0 and len(huffman.decode(empty, lengths)) == 0
    assert huffman.stats(np.zeros(4, np.int64)).leaves == 0


def test_symbol_without_code_is_refused():
    lengths = huffman.code_lengths(np.array([3, 4, 0]))
    with pytest.raises(ValueError, match="has no code"):
        huffman.encode(np.array([0, 2], np.uint8), lengths)


def test_stats_numbers_and_tree():
    counts = np.array([45, 13, 12, 16, 9, 5])  # the textbook example: L = 2.24 bits
    s = huffman.stats(counts, huffman.code_lengths(counts, 24))
    assert s.avg_length == pytest.approx(2.24)
    assert s.entropy == pytest.approx(2.2199, abs=1e-3)
    assert s.redundancy == pytest.approx(s.avg_length - s.entropy)
    assert s.efficiency == pytest.approx(s.entropy / s.avg_length)
    assert s.depth == 4 and s.leaves == 6 and s.length_histogram == {1: 1, 3: 3, 4: 2}
    assert s.top[0]["symbol"] == 0 and s.top[0]["code"] == "0"
    root = s.tree[0]
    assert root["weight"] == 100
    children = [n for n in s.tree if n["parent"] == ""]
    assert sum(n["weight"] for n in children) == 100
    assert {n["symbol"] for n in s.tree if n["symbol"] is not None} == set(range(6))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 3000), st.sampled_from([1, 3, 4, 5, 64, 1000]), st.integers(0, 2**31))
def test_decode_into_never_writes_past_the_end(n, block, seed):
    rng = np.random.default_rng(seed)
    symbols = rng.integers(0, 5, size=n).astype(np.uint8)
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=256) + (np.arange(256) < 5))
    stream = huffman.encode(symbols, lengths, block)
    guard = np.full(n + 8, 77, np.uint8)
    huffman.Decoder(lengths).decode_into(stream, guard[:n])
    np.testing.assert_array_equal(guard[:n], symbols)
    assert np.all(guard[n:] == 77)


def test_lane_decoder_with_torch_tensors():
    torch = pytest.importorskip("torch")
    device = "cuda" if torch.cuda.is_available() else "cpu"  # the GPU path where one is present
    rng = np.random.default_rng(4)
    symbols = rng.geometric(0.3, size=5000).clip(0, 255).astype(np.uint8)
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=256))
    out = huffman.decode_lanes(huffman.encode(symbols, lengths, block=256), lengths, xp=torch, device=device)
    np.testing.assert_array_equal(out.cpu().numpy(), symbols)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 10**6), min_size=256, max_size=256).map(np.array), st.integers(9, 14))
def test_compiled_batch_lengths_match_the_reference(counts, max_len):
    from models.compression.checkpoint.fast import plane_kernels as pk

    lens, bits = pk.lengths_batch(np.stack([counts, counts[::-1]]).astype(np.int64), max_len)
    assert (lens[0] == huffman.code_lengths(counts, max_len)).all()
    assert (lens[1] == huffman.code_lengths(counts[::-1], max_len)).all()
    assert bits[0] == huffman.coded_bits(counts, lens[0])

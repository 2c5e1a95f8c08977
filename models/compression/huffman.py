"""Huffman coding for alphabets of up to 2**16 symbols: code lengths, canonical codes, a block
coder, and the statistics a classroom looks at.

Public API (stable; other modules build on it):

- ``code_lengths(counts, max_len=DEFAULT_MAX_LEN) -> np.ndarray[uint8]``: optimal Huffman code
  length per symbol (0 for symbols that never occur), limited to ``max_len`` bits (raised to
  ``ceil(log2(#present))`` when the alphabet needs it). A lone symbol gets length 1.
- ``canonical_codes(lengths) -> np.ndarray[uint32]``: the canonical code of every symbol (its
  ``lengths[s]`` low bits; 0 where the length is 0). Codes are ordered by (length, symbol).
- ``encode(symbols, lengths, block=DEFAULT_BLOCK) -> EncodedStream``: MSB-first bit stream plus the
  bit offset where each block of ``block`` symbols starts, so blocks decode independently.
- ``decode(stream, lengths) -> np.ndarray``: the symbols back (uint8 for alphabets <= 256, else
  uint16). ``decode_lanes(stream, lengths, xp)`` decodes all blocks as parallel lanes with a lookup
  table, one vectorised step per symbol position (the way DFloat11 decodes on a GPU); with
  ``xp=torch`` on a CUDA device it runs there.
- ``stats(counts, lengths=None, top=16, tree_depth=6) -> HuffmanStats``: entropy, average length,
  redundancy, efficiency, Kraft sum, depth, leaves, code-length histogram, top symbols with their
  codes, and the top of the tree as a node list for drawing.
- ``entropy_bits(counts) -> float`` (bits per symbol) and ``coded_bits(counts, lengths) -> int``.

The inner loops (tree construction, bit packing, table decoding) are compiled with numba when it
is installed; a Python loop per symbol is never run on real data sizes (the pure-Python fallback
is there only so the module imports, and is used for tiny inputs in that case).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

try:  # compiled kernels: 100x faster than the same loops in Python
    from numba import njit
except ImportError:  # pragma: no cover - numba is in requirements.txt

    def njit(*args, **kwargs):
        if args and callable(args[0]):
            return args[0]
        return lambda fn: fn


DEFAULT_MAX_LEN = 12  # like zstd's Huff0 (11): the decode table (2**12 entries) stays in L1 cache
MAX_ALPHABET = 1 << 16
HARD_MAX_LEN = 24  # the decoder peeks 32 bits at a byte boundary: 24 + 7 <= 32
DEFAULT_BLOCK = 4096


# --- code lengths --------------------------------------------------------------------------


@njit(cache=True)
def _mk_lengths(a):
    """In-place Moffat-Katajainen: ``a`` = weights sorted ascending -> code lengths (same order)."""
    n = a.shape[0]
    if n == 0:
        return
    if n == 1:
        a[0] = 1
        return
    # phase 1: build the tree in place; a[i] becomes the parent pointer of internal node i
    a[0] += a[1]
    root = 0
    leaf = 2
    for nxt in range(1, n - 1):
        if leaf >= n or a[root] < a[leaf]:
            a[nxt] = a[root]
            a[root] = nxt
            root += 1
        else:
            a[nxt] = a[leaf]
            leaf += 1
        if leaf >= n or (root < nxt and a[root] < a[leaf]):
            a[nxt] += a[root]
            a[root] = nxt
            root += 1
        else:
            a[nxt] += a[leaf]
            leaf += 1
    # phase 2: parent pointers -> depths of internal nodes
    a[n - 2] = 0
    for nxt in range(n - 3, -1, -1):
        a[nxt] = a[a[nxt]] + 1
    # phase 3: depths of internal nodes -> depths of leaves
    avbl = 1
    used = 0
    depth = 0
    root = n - 2
    nxt = n - 1
    while avbl > 0:
        while root >= 0 and a[root] == depth:
            used += 1
            root -= 1
        while avbl > used:
            a[nxt] = depth
            nxt -= 1
            avbl -= 1
        avbl = 2 * used
        depth += 1
        used = 0


def _limit(bl_count: np.ndarray, max_len: int) -> np.ndarray:
    """Move leaves deeper than ``max_len`` up, keeping the Kraft sum at 1 (JPEG Annex K.3)."""
    bits = bl_count.astype(np.int64).copy()
    for i in range(len(bits) - 1, max_len, -1):
        while bits[i] > 0:
            j = i - 2
            while bits[j] == 0:
                j -= 1
            bits[i] -= 2  # two leaves at depth i: one moves up to replace their parent...
            bits[i - 1] += 1
            bits[j + 1] += 2  # ...the other hangs, with a leaf from depth j, under a new node
            bits[j] -= 1
    return bits[: max_len + 1]


def code_lengths(counts: np.ndarray, max_len: int = DEFAULT_MAX_LEN) -> np.ndarray:
    """Huffman code length of every symbol (uint8), 0 for absent symbols, at most ``max_len``."""
    counts = np.asarray(counts)
    if counts.ndim != 1 or len(counts) > MAX_ALPHABET:
        raise ValueError(f"counts must be a 1-d histogram of at most {MAX_ALPHABET} symbols")
    if len(counts) and counts.min() < 0:
        raise ValueError("counts must be non-negative")
    lengths = np.zeros(len(counts), dtype=np.uint8)
    present = np.flatnonzero(counts)
    if len(present) == 0:
        return lengths
    needed = int(np.ceil(np.log2(len(present)))) if len(present) > 1 else 1
    if needed > max_len:  # a big alphabet: leave room above the flat code so frequent symbols stay short
        max_len = min(HARD_MAX_LEN, needed + 4)
    order = present[np.argsort(counts[present], kind="stable")]  # ascending weight
    work = counts[order].astype(np.int64)
    _mk_lengths(work)
    if work.max() <= max_len:
        lengths[order] = work
        return lengths
    bl_count = np.bincount(work, minlength=max_len + 1)
    bits = _limit(bl_count, max_len)
    # the most frequent symbols get the shortest codes: lengths ascend along descending weight
    assigned = np.repeat(np.arange(len(bits), dtype=np.uint8), bits)
    lengths[order[::-1]] = assigned
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical codes (uint32): by (length, symbol), each code = previous + 1, shifted on length change."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(len(lengths), dtype=np.uint32)
    present = np.flatnonzero(lengths)
    if len(present) == 0:
        return codes
    order = present[np.lexsort((present, lengths[present]))]
    ls = lengths[order]
    max_len = int(ls.max())
    bl_count = np.bincount(ls, minlength=max_len + 1)
    bl_count[0] = 0
    first = np.zeros(max_len + 1, dtype=np.int64)
    code = 0
    for length in range(1, max_len + 1):
        code = (code + bl_count[length - 1]) << 1
        first[length] = code
    group_start = np.concatenate(([0], np.cumsum(bl_count)))[ls]  # index of the first code of its length
    codes[order] = (first[ls] + np.arange(len(order)) - group_start).astype(np.uint32)
    return codes


def entropy_bits(counts: np.ndarray) -> float:
    """Order-0 entropy in bits per symbol."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return max(0.0, float(-(p * np.log2(p)).sum()))


def coded_bits(counts: np.ndarray, lengths: np.ndarray) -> int:
    """Size in bits of the data with this histogram under these code lengths."""
    return int(np.dot(np.asarray(counts, dtype=np.int64), np.asarray(lengths, dtype=np.int64)))


# --- block coder -----------------------------------------------------------------------------


@dataclass
class EncodedStream:
    data: bytes  # MSB-first bits, zero-padded to a whole byte
    block_bits: np.ndarray  # uint64: bit offset where each block of `block` symbols starts
    n: int  # number of symbols
    block: int = DEFAULT_BLOCK

    @property
    def nbytes(self) -> int:
        return len(self.data)


@njit(cache=True, nogil=True)
def _encode_kernel(symbols, table, block, out32, block_bits):
    # table[s] = code << 8 | length. A 64-bit accumulator flushed 32 bits at a time; codes are at
    # most 24 bits, so nothing overflows. Returns the number of bits, or -1 - i for a symbol i
    # without a code.
    acc = np.uint64(0)
    nacc = np.uint64(0)
    pos = 0
    bitpos = 0
    n = symbols.shape[0]
    nt = table.shape[0]
    for b in range((n + block - 1) // block):
        block_bits[b] = bitpos + nacc
        for i in range(b * block, min(n, (b + 1) * block)):
            s = symbols[i]
            if s >= nt:
                return -1 - i
            entry = table[s]
            length = entry & np.uint64(0xFF)
            if length == 0:
                return -1 - i
            acc = (acc << length) | (entry >> np.uint64(8))
            nacc += length
            if nacc >= 32:
                nacc -= np.uint64(32)
                out32[pos] = np.uint32((acc >> nacc) & np.uint64(0xFFFFFFFF))
                pos += 1
                bitpos += 32
    if nacc > 0:
        out32[pos] = np.uint32((acc << (np.uint64(32) - nacc)) & np.uint64(0xFFFFFFFF))
    return bitpos + nacc


def encode(symbols: np.ndarray, lengths: np.ndarray, block: int = DEFAULT_BLOCK) -> EncodedStream:
    """Huffman-code ``symbols`` (ints < len(lengths)) with the canonical code of ``lengths``."""
    symbols = np.ascontiguousarray(symbols).ravel()
    lengths = np.asarray(lengths, dtype=np.uint8)
    if block <= 0:
        raise ValueError("block must be positive")
    if symbols.dtype.kind not in "ui":
        raise ValueError(f"symbols must be unsigned integers, not {symbols.dtype}")
    codes = canonical_codes(lengths)
    max_len = int(lengths.max()) if len(lengths) else 0
    out32 = np.empty(len(symbols) * max_len // 32 + 2, dtype=np.uint32)
    block_bits = np.zeros(-(-len(symbols) // block), dtype=np.uint64)
    table = (codes.astype(np.uint64) << np.uint64(8)) | lengths.astype(np.uint64)
    total_bits = int(_encode_kernel(symbols, table, block, out32, block_bits))
    if total_bits < 0:
        raise ValueError(f"symbol {int(symbols[-1 - total_bits])} at index {-1 - total_bits} has no code: "
                         "build the lengths from the histogram of these symbols")
    out32 = out32[: total_bits // 32 + 1]
    data = out32.astype(">u4").tobytes()[: (total_bits + 7) // 8]  # MSB-first bytes
    return EncodedStream(data, block_bits, len(symbols), block)


def decode_table(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Lookup table over ``max_len``-bit windows: (symbol, code length) for each window value."""
    lengths = np.asarray(lengths, dtype=np.int64)
    present = np.flatnonzero(lengths)
    max_len = int(lengths.max()) if len(present) else 1
    order = present[np.lexsort((present, lengths[present]))]  # canonical order = increasing window
    span = 1 << (max_len - lengths[order])
    sym_dtype = np.uint8 if len(lengths) <= 256 else np.uint16
    lut_sym = np.zeros(1 << max_len, dtype=sym_dtype)
    lut_len = np.full(1 << max_len, max_len, dtype=np.uint8)  # unused windows (Kraft < 1) still advance
    filled = int(span.sum())
    lut_sym[:filled] = np.repeat(order, span)
    lut_len[:filled] = np.repeat(lengths[order], span)
    return lut_sym, lut_len, max_len


MULTI = 4  # symbols a single table look-up may emit


@njit(cache=True, nogil=True)
def _multi_table(lut_sym, lut_len, max_len):
    """For every ``max_len``-bit window: up to MULTI whole codes it holds, and the bits they use."""
    size = lut_sym.shape[0]
    syms = np.zeros((size, MULTI), dtype=lut_sym.dtype)
    count = np.zeros(size, dtype=np.int64)
    used = np.zeros(size, dtype=np.int64)
    mask = size - 1
    for w in range(size):
        bits = 0
        k = 0
        while k < MULTI:
            idx = (w << bits) & mask
            length = lut_len[idx]
            if bits + length > max_len:
                break
            syms[w, k] = lut_sym[idx]
            bits += length
            k += 1
        count[w] = k
        used[w] = bits
    return syms, count, used


@njit(cache=True, inline="always")
def _refill(data, byte, buf, nbits):
    while nbits <= 56:
        buf |= np.uint64(data[byte]) << np.uint64(56 - nbits)
        byte += 1
        nbits += 8
    return byte, buf, nbits


@njit(cache=True, inline="always")
def _start(data, start_bit):
    byte, buf, nbits = _refill(data, start_bit >> 3, np.uint64(0), 0)
    skip = start_bit & 7
    return byte, buf << np.uint64(skip), nbits - skip


@njit(cache=True, inline="always")
def _step(data, byte, buf, nbits, i, shift, syms, count, used, out):
    """One look-up: writes MULTI symbols at out[i:], returns the state after the ones that count."""
    idx = buf >> shift
    for k in range(MULTI):
        out[i + k] = syms[idx, k]
    u = used[idx]
    byte, buf, nbits = _refill(data, byte, buf << np.uint64(u), nbits - u)
    return byte, buf, nbits, i + count[idx]


@njit(cache=True, nogil=True)
def _finish(data, byte, buf, nbits, i, end, shift, syms, count, used, out):
    """Decode up to `end` writing nothing past it (the next block may already be decoded)."""
    while i < end:
        idx = buf >> shift
        c = min(count[idx], end - i)
        for k in range(c):
            out[i + k] = syms[idx, k]
        i += c
        u = used[idx]
        byte, buf, nbits = _refill(data, byte, buf << np.uint64(u), nbits - u)


@njit(cache=True, nogil=True)
def _decode_kernel(data, block_bits, n, block, syms, count, used, max_len, out):
    # Four blocks decode side by side: their dependency chains (window -> table -> shift) interleave,
    # the way a GPU runs blocks as parallel lanes and zstd's Huff0 runs four streams.
    shift = np.uint64(64 - max_len)
    nb = block_bits.shape[0]
    b = 0
    while b + 4 <= nb and (b + 4) * block <= n:
        y0, f0, n0 = _start(data, np.int64(block_bits[b]))
        y1, f1, n1 = _start(data, np.int64(block_bits[b + 1]))
        y2, f2, n2 = _start(data, np.int64(block_bits[b + 2]))
        y3, f3, n3 = _start(data, np.int64(block_bits[b + 3]))
        i0, i1, i2, i3 = b * block, (b + 1) * block, (b + 2) * block, (b + 3) * block
        e0, e1, e2, e3 = i1, i2, i3, (b + 4) * block
        while i0 + MULTI <= e0 and i1 + MULTI <= e1 and i2 + MULTI <= e2 and i3 + MULTI <= e3:
            y0, f0, n0, i0 = _step(data, y0, f0, n0, i0, shift, syms, count, used, out)
            y1, f1, n1, i1 = _step(data, y1, f1, n1, i1, shift, syms, count, used, out)
            y2, f2, n2, i2 = _step(data, y2, f2, n2, i2, shift, syms, count, used, out)
            y3, f3, n3, i3 = _step(data, y3, f3, n3, i3, shift, syms, count, used, out)
        _finish(data, y0, f0, n0, i0, e0, shift, syms, count, used, out)
        _finish(data, y1, f1, n1, i1, e1, shift, syms, count, used, out)
        _finish(data, y2, f2, n2, i2, e2, shift, syms, count, used, out)
        _finish(data, y3, f3, n3, i3, e3, shift, syms, count, used, out)
        b += 4
    for bb in range(b, nb):  # the rest one at a time; out has MULTI spare slots past n
        y, f, m = _start(data, np.int64(block_bits[bb]))
        i = bb * block
        end = min(n, i + block)
        while i + MULTI <= end:
            y, f, m, i = _step(data, y, f, m, i, shift, syms, count, used, out)
        _finish(data, y, f, m, i, end, shift, syms, count, used, out)


def _padded(data: bytes, reach: int = 0) -> np.ndarray:
    buf = np.zeros(max(len(data), reach) + 16, dtype=np.uint8)  # the decoder reads up to 8 bytes ahead
    buf[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    return buf


class Decoder:
    """The decode tables of one code, built once and reused for every stream coded with it."""

    def __init__(self, lengths: np.ndarray) -> None:
        self.lut_sym, self.lut_len, self.max_len = decode_table(lengths)
        self.syms, self.count, self.used = _multi_table(self.lut_sym, self.lut_len, self.max_len)

    def decode(self, stream: EncodedStream) -> np.ndarray:
        out = np.empty(stream.n, dtype=self.lut_sym.dtype)
        self._run(stream, out)
        return out

    def decode_into(self, stream: EncodedStream, out: np.ndarray) -> None:
        """Decode into ``out`` (length n) without an intermediate copy: the kernel never writes past n."""
        if len(out) != stream.n:
            raise ValueError("output length differs from the stream's symbol count")
        self._run(stream, out)

    def _run(self, stream: EncodedStream, out: np.ndarray) -> None:
        if not stream.n:
            return
        _check_offsets(stream)
        # A corrupt stream can ask a block for more bits than the data holds; the kernel has no bounds
        # checks, so pad to the most any block can read (block * max_len bits) and it reads zeros instead.
        reach = (int(stream.block_bits.max()) + min(stream.block, stream.n) * self.max_len) // 8
        _decode_kernel(_padded(stream.data, reach), stream.block_bits, stream.n, stream.block, self.syms, self.count,
                       self.used, self.max_len, out)


def decode(stream: EncodedStream, lengths: np.ndarray) -> np.ndarray:
    """The symbols of ``stream`` (uint8 if the alphabet has <= 256 symbols, else uint16)."""
    return Decoder(lengths).decode(stream)


def _check_offsets(stream: EncodedStream) -> None:
    if len(stream.block_bits) != -(-stream.n // stream.block):
        raise ValueError("the stream's block table does not match its symbol count")
    if len(stream.block_bits) and (int(stream.block_bits.max()) > 8 * len(stream.data)
                                   or np.any(np.diff(stream.block_bits.astype(np.int64)) < 0)):
        raise ValueError("the stream's block offsets point outside its data")


def decode_lanes(stream: EncodedStream, lengths: np.ndarray, xp=np, device=None):
    """Decode every block at once, one lane per block: ``block`` vectorised table look-ups.

    ``xp`` is numpy or torch; with torch and ``device='cuda'`` the lanes run on the GPU. Returns an
    array of ``xp`` (on ``device``). Slower than ``decode`` on a CPU; it shows the GPU method and
    checks it gives the same symbols.
    """
    lut_sym, lut_len, max_len = decode_table(lengths)
    if stream.n == 0:
        return xp.asarray(np.zeros(0, dtype=lut_sym.dtype)) if xp is np else xp.zeros(0, dtype=xp.int64, device=device)
    _check_offsets(stream)
    data = _padded(stream.data).astype(np.int64)
    pos = stream.block_bits.astype(np.int64)
    lanes = len(pos)
    if xp is np:
        sym_t, len_t, data_t, pos_t = lut_sym.astype(np.int64), lut_len.astype(np.int64), data, pos
        out = np.zeros((lanes, stream.block), dtype=np.int64)
    else:
        sym_t = xp.as_tensor(lut_sym.astype(np.int64), device=device)
        len_t = xp.as_tensor(lut_len.astype(np.int64), device=device)
        data_t = xp.as_tensor(data, device=device)
        pos_t = xp.as_tensor(pos, device=device)
        out = xp.zeros((lanes, stream.block), dtype=xp.int64, device=device)
    shift = 32 - max_len
    for step in range(stream.block):  # one step decodes one symbol in every lane
        byte = (pos_t >> 3).clip(max=len(data) - 4)  # finished lanes of a short last block idle at the end
        w = (data_t[byte] << 24) | (data_t[byte + 1] << 16) | (data_t[byte + 2] << 8) | data_t[byte + 3]
        idx = ((w << (pos_t & 7)) & 0xFFFFFFFF) >> shift
        out[:, step] = sym_t[idx]
        pos_t = pos_t + len_t[idx]
    return out.reshape(-1)[: stream.n]


# --- statistics ------------------------------------------------------------------------------


@dataclass
class HuffmanStats:
    symbols: int  # number of coded symbols (sum of counts)
    entropy: float  # H, bits per symbol
    avg_length: float  # L, bits per symbol
    redundancy: float  # L - H
    efficiency: float  # H / L
    kraft: float  # sum 2**-l over present symbols (1 for a full tree)
    depth: int  # longest code
    leaves: int  # symbols present
    length_histogram: dict[int, int]  # code length -> number of symbols with that length
    top: list[dict] = field(default_factory=list)  # symbol, count, p, bits (-log2 p), length, code
    tree: list[dict] = field(default_factory=list)  # id (bit prefix), parent, depth, weight, symbol|None

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def stats(counts: np.ndarray, lengths: np.ndarray | None = None, top: int = 16, tree_depth: int = 6) -> HuffmanStats:
    """The statistics of the Huffman code for this histogram (built if ``lengths`` is None)."""
    counts = np.asarray(counts, dtype=np.int64)
    lengths = code_lengths(counts) if lengths is None else np.asarray(lengths, dtype=np.uint8)
    codes = canonical_codes(lengths)
    total = int(counts.sum())
    present = np.flatnonzero(counts)
    h = entropy_bits(counts)
    avg = coded_bits(counts, lengths) / total if total else 0.0
    ls = lengths[present].astype(np.int64)
    hist = np.bincount(ls, minlength=1) if len(ls) else np.zeros(1, dtype=np.int64)
    top_syms = present[np.argsort(-counts[present], kind="stable")][:top]
    top_rows = [
        dict(symbol=int(s), count=int(counts[s]), p=counts[s] / total, bits=float(-np.log2(counts[s] / total)),
             length=int(lengths[s]), code=format(int(codes[s]), f"0{int(lengths[s])}b"))
        for s in top_syms
    ]
    return HuffmanStats(
        symbols=total, entropy=h, avg_length=avg, redundancy=avg - h, efficiency=h / avg if avg else 1.0,
        kraft=float(np.sum(np.exp2(-ls.astype(np.float64)))), depth=int(ls.max()) if len(ls) else 0,
        leaves=len(present), length_histogram={int(i): int(c) for i, c in enumerate(hist) if c},
        top=top_rows, tree=_tree_nodes(counts, lengths, codes, tree_depth),
    )


def _tree_nodes(counts: np.ndarray, lengths: np.ndarray, codes: np.ndarray, max_depth: int) -> list[dict]:
    """Nodes of the canonical tree down to ``max_depth``: internal nodes weigh the sum of their leaves."""
    present = np.flatnonzero(lengths)
    total = int(counts[present].sum())
    nodes = [dict(id="", parent=None, depth=0, weight=total, symbol=None)]
    ls = lengths[present].astype(np.int64)
    cs = codes[present].astype(np.int64)
    ws = counts[present]
    for d in range(1, max_depth + 1):
        deep = ls >= d
        if not deep.any():
            break
        prefix = cs[deep] >> (ls[deep] - d)
        uniq, inv = np.unique(prefix, return_inverse=True)
        weight = np.bincount(inv, weights=ws[deep])
        is_leaf = ls[deep] == d
        leaf_sym = dict(zip(prefix[is_leaf].tolist(), present[deep][is_leaf].tolist(), strict=True))
        for p, w in zip(uniq, weight, strict=True):
            node_id = format(int(p), f"0{d}b")
            nodes.append(dict(id=node_id, parent=node_id[:-1], depth=d, weight=int(w), symbol=leaf_sym.get(int(p))))
    return nodes

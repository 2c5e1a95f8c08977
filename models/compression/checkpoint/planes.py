"""Byte planes of a tensor's values and the chunk records that store them: the checkpoint codec's kernels.

Plane ``j`` of a tensor's m-byte values ``v`` is byte j of each value (after rotating a float left by
one bit, so that its exponent fills the top byte). A plane is cut into chunks of ``chunk`` symbols,
and each chunk is stored as one record (container.py describes the bytes):

    RAW       the bytes as they are
    CONSTANT  the one byte every symbol of the chunk is
    HUFFMAN   [its 256 code lengths as nibbles, unless the plane shares one table], the bit offset of
              each block of ``block`` symbols, then the canonical Huffman codes, MSB first
    PAIRS     the map of the u bytes the chunk uses, the code lengths of the u*u pairs of neighbouring
              bytes, the block offsets, then the codes of the pairs (a block is ``block`` bytes)

The bit streams are those of ``models.compression.huffman`` (``encode``, ``Decoder``). Loops that numpy
cannot write without a pass per operation (picking a plane's byte, counting, making and unmaking byte
pairs) are short numba kernels; the rest is numpy over a chunk at a time. ``fast/plane_kernels.py``
holds the same kernels hand-unrolled (the same bytes, faster; see codec.FAST).

    plane_params(item, rotate, j) -> (a, ma, c): byte(v, j) = ((v << a) & ma | v >> c) & 0xFF
    copy_plane(v, a, ma, c, out, pos)      sample_hists(v, a, ma, c, chunk, run, step)
    chunk_hists(plane, chunk)              pair_stats(plane, chunk, max_len, active)
    plan(...) -> how each chunk is coded, every size exact     encode_plane(...) -> end offset
    decode_tensor(...) -> (status, plane)
"""

from __future__ import annotations

import numpy as np
from numba import njit

from models.compression import huffman
from models.compression.checkpoint.container import CHUNK_RECORD, CONSTANT, HUFFMAN, PAIRS, RAW

MAX_LEN = 14  # longest code: 12 costs MiniLM's exponents 0.4 % more bits, 14 only 0.15 %
TABLE_BYTES = 128  # 256 code lengths as nibbles
RECORD = CHUNK_RECORD.size  # codec (1 byte), symbol count, body size (uint32 LE each)
# PAIRS: an exponent byte's most common value has p ~ 0.29, which keeps even an optimal code for single
# bytes 1.2-1.4 % above their entropy; for pairs (p_max ~ 0.08) that drops to ~0.7 %.
PAIR_MAX_USED = 64  # pairs are tried only in chunks with at most 64 distinct bytes (table <= 2 KiB)
# A chunk is Huffman-coded only if that saves at least 4 % of it: below that its codes are ~7.7+ bits
# long, and decoding it costs as much as an exponent chunk for almost no saving.
CHUNK_WORTH = 0.96
PRESENCE_BYTES = 32  # a pair table starts with the 256-bit map of the bytes the chunk uses
# decode_tensor status codes (0 = fine)
ENDS_EARLY, DOES_NOT_FIT, BAD_TABLE, UNKNOWN_CODEC, SHORT_OFFSETS = 1, 2, 3, 4, 5


def plane_params(item: int, rotate: bool, j: int) -> tuple[np.uint32, np.uint32, np.uint32]:
    """Shifts that pick byte ``j`` of a value (after rotating it left by one bit when ``rotate``).

    32-bit shift amounts keep 16- and 32-bit values in 32-bit lanes, so the loops vectorise.
    """
    if rotate and j == 0:  # the low byte of rotl1(v): 7 low bits moved up, the sign bit below them
        return np.uint32(1), np.uint32(0xFF), np.uint32(8 * item - 1)
    return np.uint32(0), np.uint32(0), np.uint32(8 * j - 1 if rotate else 8 * j)


@njit(cache=True, inline="always")
def _byte(x, a, ma, c):
    return np.uint8((((x << a) & ma) | (x >> c)) & np.uint32(0xFF))


@njit(cache=True, nogil=True)
def copy_plane(v, a, ma, c, out, pos):
    """Write plane (a, ma, c) of the values ``v`` to ``out[pos:pos + len(v)]``."""
    o = out[pos:pos + v.shape[0]]
    for i in range(v.shape[0]):
        o[i] = _byte(v[i], a, ma, c)


@njit(cache=True, nogil=True)
def sample_hists(v, a, ma, c, chunk, run, step):
    """Per chunk of ``chunk`` values, the histogram (int64[k, 256]) of plane (a, ma, c) over a sample:
    the first ``run`` values of every ``run * step`` (contiguous runs read a step-th of the memory)."""
    n = v.shape[0]
    k = (n + chunk - 1) // chunk
    out = np.zeros((k, 256), dtype=np.int64)
    for ci in range(k):
        end = min(n, (ci + 1) * chunk)
        for s in range(ci * chunk, end, run * step):
            for i in range(s, min(end, s + run)):
                out[ci, np.intp(_byte(v[i], a, ma, c))] += 1
    return out


def chunk_hists(plane: np.ndarray, chunk: int) -> np.ndarray:
    """Per chunk of a byte plane, its histogram: the sample that takes every value."""
    return sample_hists(plane, np.uint32(0), np.uint32(0), np.uint32(0), chunk, max(1, chunk), 1)


@njit(cache=True, nogil=True)
def _pair_symbols(plane, alpha):
    """Neighbouring bytes (x[2i], x[2i+1]) as rank(first) * u + rank(second), ranks among the u bytes
    ``alpha`` in byte order; an odd last byte pairs with itself."""
    rank = np.zeros(256, np.uint16)
    for r in range(len(alpha)):
        rank[alpha[r]] = r
    out = np.empty((len(plane) + 1) // 2, np.uint16)
    for i in range(len(out)):
        first = plane[2 * i]
        second = plane[2 * i + 1] if 2 * i + 1 < len(plane) else first
        out[i] = rank[first] * len(alpha) + rank[second]
    return out


@njit(cache=True, nogil=True)
def _unpair(symbols, alpha, into):
    """The bytes of pair symbols (``_pair_symbols`` backwards), ``len(into)`` of them."""
    u = len(alpha)
    first = np.empty(u * u, np.uint8)
    second = np.empty(u * u, np.uint8)
    for t in range(u * u):
        first[t], second[t] = alpha[t // u], alpha[t % u]
    for i in range(len(into) // 2):
        into[2 * i], into[2 * i + 1] = first[symbols[i]], second[symbols[i]]
    if len(into) % 2:
        into[-1] = first[symbols[-1]]


def pair_stats(plane: np.ndarray, chunk: int, max_len: int, active: np.ndarray):
    """Per chunk of a byte plane: its byte histogram and, for the PAIRS codec, its alphabet size u
    (0 where pairs are not tried), the code lengths of its u*u pairs, their coded bits and their
    order-0 entropy in bits. Chunks with ``active[k] == 0`` are left empty."""
    k = (len(plane) + chunk - 1) // chunk
    hists = np.zeros((k, 256), np.int64)
    used, bits, ent = np.zeros(k, np.int64), np.zeros(k, np.int64), np.zeros(k)
    lens = np.zeros((k, PAIR_MAX_USED * PAIR_MAX_USED), np.uint8)
    for ci in np.flatnonzero(active):
        pc = plane[ci * chunk:(ci + 1) * chunk]
        hists[ci] = chunk_hists(pc, len(pc))[0]
        alpha = np.flatnonzero(hists[ci])
        u = len(alpha)
        if not 2 <= u <= PAIR_MAX_USED:
            continue
        counts = np.bincount(_pair_symbols(pc, alpha), minlength=u * u)
        lens[ci, :u * u] = huffman.code_lengths(counts, max_len)
        used[ci], bits[ci] = u, huffman.coded_bits(counts, lens[ci, :u * u])
        ent[ci] = huffman.entropy_bits(counts) * counts.sum()
    return hists, used, lens, bits, ent


def plan(hists, n, chunk, block, max_len, worth, pair_used, pair_bits, pair_ent, active):
    """Choose how a plane is coded from its per-chunk histograms (and pair statistics), every size exact.

    Modes: 0 raw, 1 chunked (per-chunk tables: a chunk takes the smaller of its byte code and its pair
    code), 2 shared (one byte table); the cheapest wins unless it saves less than 1 - worth of the plane.
    Within a coded plane a chunk stays raw unless coding saves 1 - CHUNK_WORTH of it; a chunk of one
    repeated byte is CONSTANT. Returns (mode, codec per chunk, code lengths per chunk, coded bits per
    chunk, size in bytes, shared code lengths, Huffman-coded symbols, their bits, the chunk-local
    order-0 entropy of the symbols coded (bytes or pairs) and of their bytes).
    """
    k = len(hists)
    active = np.asarray(active, bool)
    sizes = np.minimum(chunk, n - chunk * np.arange(k))
    offsets = 4 * ((sizes + block - 1) // block)  # bytes of block offsets
    lens = np.array([huffman.code_lengths(h, max_len) for h in hists], np.uint8).reshape(k, 256)
    bits = (hists * lens).sum(axis=1)
    shared = huffman.code_lengths(hists.sum(axis=0), max_len)
    sh_bits = hists @ shared.astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        byte_ent = -np.where(hists > 0, hists * np.log2(hists / sizes[:, None]), 0.0).sum(axis=1)
    own = (bits + 7) // 8 + TABLE_BYTES + offsets
    sh = (sh_bits + 7) // 8 + offsets
    pair_coded = PRESENCE_BYTES + (pair_used * pair_used + 1) // 2 + offsets + (pair_bits + 7) // 8
    paired = active & (pair_used > 0) & (pair_coded < own)
    own = np.where(paired, pair_coded, own)
    constant = active & ((hists > 0).sum(axis=1) == 1)  # one value repeated (the zero low bytes of upcasts)
    own[constant] = sh[constant] = 1
    paired &= ~constant
    own[~active] = sh[~active] = sizes[~active] + 1  # not counted (a sample showed it would not pay): raw
    c_own = RECORD * k + np.where(own < CHUNK_WORTH * sizes, own, sizes).sum()
    c_sh = RECORD * k + TABLE_BYTES // 2 + np.where(sh < CHUNK_WORTH * sizes, sh, sizes).sum()
    use = np.zeros(k, np.int64)  # per chunk: RAW, HUFFMAN, CONSTANT or PAIRS
    if min(c_own, c_sh) > worth * n:  # near-uniform planes (bf16/fp16 mantissas): coding buys nothing
        return 0, use, lens, bits, n, shared, 0, 0, 0.0, 0.0
    mode, coded = (1, own) if c_own <= c_sh else (2, sh)
    if mode == 2:
        bits, lens[:], paired[:] = sh_bits, shared, False
    is_constant = (coded == 1) & (sizes > 1)
    is_coded = ~is_constant & (coded < CHUNK_WORTH * sizes)
    use[is_constant] = CONSTANT
    use[is_coded] = np.where(paired, PAIRS, HUFFMAN)[is_coded]
    bits = np.where(use == PAIRS, pair_bits, bits)
    size = RECORD * k + is_constant.sum() + coded[is_coded].sum() + sizes[~is_constant & ~is_coded].sum()
    entropy = np.where(paired, pair_ent, byte_ent)
    return (mode, use, lens, bits, size, shared, sizes[is_coded].sum(), bits[is_coded].sum(), entropy[is_coded].sum(),
            byte_ent[is_coded].sum())


def _nibbles(lengths: np.ndarray) -> np.ndarray:
    """Code lengths two to a byte, the first in the high nibble (an odd count ends with a 0 nibble)."""
    ls = np.zeros(len(lengths) + len(lengths) % 2, np.uint8)
    ls[:len(lengths)] = lengths
    return (ls[0::2] << 4) | ls[1::2]


def _unnibble(table: np.ndarray) -> np.ndarray:
    out = np.empty(2 * len(table), np.uint8)
    out[0::2], out[1::2] = table >> 4, table & 0x0F
    return out


def _coded(symbols: np.ndarray, lengths: np.ndarray, block: int) -> list:
    """The block offsets (uint32 LE, in bits) and the bit stream of ``symbols`` in the canonical code."""
    stream = huffman.encode(symbols, lengths, block)
    return [stream.block_bits.astype("<u4").view(np.uint8), np.frombuffer(stream.data, np.uint8)]


def encode_plane(src, chunk, block, use, lens, bits, with_table, out, pos, hists, pair_used, pair_lens):
    """Write the byte plane ``src`` as chunk records at ``out[pos:]``; returns the end offset.

    ``use[k]``: chunk k's codec; a Huffman chunk has the code lengths ``lens[k]``, a PAIRS chunk
    ``pair_lens[k]`` over its ``pair_used[k]`` bytes (those with ``hists[k] > 0``). ``bits``: the coded
    bits of each chunk, known to ``plan`` (the records' sizes follow from the streams themselves).
    """
    for ci, codec in enumerate(use):
        c = src[ci * chunk:(ci + 1) * chunk]
        if codec == RAW:
            body = [c]
        elif codec == CONSTANT:
            body = [c[:1]]
        elif codec == HUFFMAN:
            body = ([_nibbles(lens[ci])] if with_table else []) + _coded(c, lens[ci], block)
        else:  # PAIRS
            alpha = np.flatnonzero(hists[ci])
            uu = len(alpha) ** 2
            body = [np.packbits(hists[ci] > 0, bitorder="little"), _nibbles(pair_lens[ci, :uu]),
                    *_coded(_pair_symbols(c, alpha), pair_lens[ci, :uu], block // 2)]
        out[pos:pos + RECORD] = np.frombuffer(CHUNK_RECORD.pack(codec, len(c), sum(len(b) for b in body)), np.uint8)
        pos += RECORD
        for b in body:
            out[pos:pos + len(b)] = b
            pos += len(b)
    return pos


def _decoder(lengths: np.ndarray) -> huffman.Decoder | None:
    """The decoder of these code lengths, or None when they are not a prefix code (Kraft sum above 1)."""
    present = lengths[lengths > 0].astype(np.int64)
    if len(present) == 0 or np.sum(np.ldexp(1.0, -present)) > 1:
        return None
    return huffman.Decoder(lengths)


def _chunk(buf, pos, end, cnt, shared_mode, shared, block, into):
    """Decode the chunk record at ``buf[pos:end]`` (``cnt`` symbols) into ``into``; returns (status, next record).

    ``shared_mode``: the plane has one table, ``shared`` (None when its lengths are not a code)."""
    if pos + RECORD > end:
        return ENDS_EARLY, pos
    codec, count, size = CHUNK_RECORD.unpack_from(buf, pos)
    body, pos = pos + RECORD, pos + RECORD + size
    if count != cnt or pos > end:
        return DOES_NOT_FIT, pos
    if codec in (RAW, CONSTANT):
        if size != (cnt if codec == RAW else 1):
            return DOES_NOT_FIT, pos
        into[:] = buf[body:pos] if codec == RAW else buf[body]
        return 0, pos
    if codec == HUFFMAN and shared_mode:
        decoder, per = shared, 1
    elif codec == HUFFMAN:
        decoder, per = (_decoder(_unnibble(buf[body:body + TABLE_BYTES])) if size >= TABLE_BYTES else None), 1
        body += TABLE_BYTES
    elif codec == PAIRS:  # own table only
        alpha = np.flatnonzero(np.unpackbits(buf[body:body + PRESENCE_BYTES], bitorder="little"))
        u, tb = len(alpha), (len(alpha) ** 2 + 1) // 2
        body += PRESENCE_BYTES + tb
        ok = not shared_mode and size >= PRESENCE_BYTES + tb and 2 <= u <= PAIR_MAX_USED
        decoder, per = (_decoder(_unnibble(buf[body - tb:body])[:u * u]) if ok else None), 2
    else:
        return UNKNOWN_CODEC, pos
    if decoder is None:
        return BAD_TABLE, pos
    if block % per:  # a pair would straddle two blocks: not a layout the encoder writes
        return DOES_NOT_FIT, pos
    nblocks = (cnt + block - 1) // block
    if body + 4 * nblocks > pos:
        return SHORT_OFFSETS, pos
    offsets = np.frombuffer(buf, "<u4", nblocks, body).astype(np.uint64)
    stream = huffman.EncodedStream(buf[body + 4 * nblocks:pos].tobytes(), offsets, (cnt + per - 1) // per, block // per)
    try:
        symbols = decoder.decode(stream)
    except ValueError:  # block offsets past the stream's end or out of order
        return DOES_NOT_FIT, pos
    if per == 1:
        into[:] = symbols
    else:
        _unpair(symbols, alpha, into)
    return 0, pos


def _merge(planes: np.ndarray, rotate: bool, out: np.ndarray) -> None:
    """Byte planes (m, n) -> the bytes of n m-byte values, rotated right by one bit when ``rotate``."""
    m = len(planes)
    word = np.dtype(f"<u{m}")
    values = planes[0].astype(word)
    for q in range(1, m):
        values |= planes[q].astype(word) << (8 * q)
    if rotate:
        values = (values >> 1) | (values << (8 * m - 1))
    out.view(word)[:] = values


def decode_tensor(buf, n, rotate, chunk, block, modes, starts, ends, shared, scratch, out):
    """Decode a tensor's m planes chunk by chunk and interleave them into ``out`` (n * m bytes).

    ``modes[j]``: 0 raw (the plane's n bytes at ``buf[starts[j]:]``), 1 chunked (each Huffman chunk
    carries its table), 2 shared (``shared[j]`` holds the lengths). Every chunk record must hold
    ``chunk`` symbols (the last the rest). ``scratch``: (m, chunk) uint8 for the decoded chunk's
    planes. Returns (status, plane) with status 0 when all went well.
    """
    m = len(modes)
    decoders = [_decoder(shared[j]) if modes[j] == 2 else None for j in range(m)]
    for j in range(m):
        if modes[j] == 0 and ends[j] - starts[j] != n:
            return DOES_NOT_FIT, j
    pos = [int(s) for s in starts]
    for s in range(0, n, chunk):
        cnt = min(chunk, n - s)
        for j in range(m):
            if modes[j] == 0:
                scratch[j, :cnt] = buf[starts[j] + s:starts[j] + s + cnt]
            else:
                status, pos[j] = _chunk(buf, pos[j], ends[j], cnt, modes[j] == 2, decoders[j], block, scratch[j, :cnt])
                if status:
                    return status, j
        _merge(scratch[:, :cnt], rotate, out[s * m:(s + cnt) * m])
    for j in range(m):
        if modes[j] != 0 and pos[j] != ends[j]:
            return DOES_NOT_FIT, j
    return 0, 0

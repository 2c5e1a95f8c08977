"""The checkpoint codec's kernels hand-unrolled: ``planes.py``'s interface and bytes, faster.

The same files as the plain kernels in ``checkpoint/planes.py`` (tests/test_checkpoint.py checks it),
written for speed: constant shifts for the planes stored raw, four counters per histogram, pair
counts from two-byte loads into one 64 Ki table, a bit writer that stores eight bytes per four codes,
and a decoder whose 12-bit windows yield up to four symbols (or two pairs) per table look-up, merging
the planes while a chunk is still in cache. ``codec.FAST`` chooses them (the gain is stated there).

    sample_hists(v, a, ma, c, chunk, run, step) -> int64[k, 256] of a sample of the plane
    chunk_hists(plane, chunk) -> int64[k, 256]     pair_stats(plane, ...) -> the same, and pair codes
    lengths_batch(hists, max_len) -> (uint8[k, 256] code lengths, int64[k] coded bits)
    plan(...)     encode_plane(plane, ...) -> end offset     copy_plane(v, a, ma, c, out, pos)
    decode_tensor(...)     merge2 / merge4: planes -> the bytes of rotated 16/32-bit values

All kernels release the GIL (``nogil``), so the hashing threads (sha256, CRC32) run beside them.
"""

from __future__ import annotations

import threading

import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.extending import intrinsic

from models.compression.checkpoint.planes import (
    BAD_TABLE,
    CHUNK_WORTH,
    CONSTANT,
    DOES_NOT_FIT,
    ENDS_EARLY,
    HUFFMAN,
    PAIR_MAX_USED,
    PAIRS,
    PRESENCE_BYTES,
    RAW,
    RECORD,
    SHORT_OFFSETS,
    TABLE_BYTES,
    UNKNOWN_CODEC,
)
from models.compression.huffman import _mk_lengths

# Unaligned loads and stores of several bytes at once: numba would otherwise move bytes one by one
# (its arrays carry no alignment or aliasing facts that would let LLVM merge them). The callers
# bound every index (see _load64 and the spare bytes past each output).


def _at(context, builder, arrty, arr, idx, width):
    ary = context.make_array(arrty)(context, builder, arr)
    return builder.bitcast(builder.gep(ary.data, [idx]), ir.IntType(width).as_pointer())


@intrinsic
def _load_be64(typingctx, arr, idx):
    def codegen(context, builder, sig, args):
        value = builder.load(_at(context, builder, sig.args[0], args[0], args[1], 64), align=1)
        return builder.call(builder.module.declare_intrinsic("llvm.bswap", [ir.IntType(64)]), [value])
    return types.uint64(arr, idx), codegen


@intrinsic
def _load_le16(typingctx, arr, idx):
    def codegen(context, builder, sig, args):
        return builder.load(_at(context, builder, sig.args[0], args[0], args[1], 16), align=1)
    return types.uint16(arr, idx), codegen


@intrinsic
def _store_be64(typingctx, arr, idx, value):
    def codegen(context, builder, sig, args):
        swapped = builder.call(builder.module.declare_intrinsic("llvm.bswap", [ir.IntType(64)]), [args[2]])
        builder.store(swapped, _at(context, builder, sig.args[0], args[0], args[1], 64), align=1)
        return context.get_dummy_value()
    return types.none(arr, idx, value), codegen


@intrinsic
def _store_le32(typingctx, arr, idx, value):
    def codegen(context, builder, sig, args):
        builder.store(builder.trunc(args[2], ir.IntType(32)), _at(context, builder, sig.args[0], args[0], args[1], 32),
                      align=1)
        return context.get_dummy_value()
    return types.none(arr, idx, value), codegen


@intrinsic
def _address(typingctx, arr, idx):
    """A pointer to ``arr[idx]``: ``carray`` over it views a read-only buffer's bytes as an array of
    the type the scratch rows have, so raw planes merge straight from the compressed file."""
    def codegen(context, builder, sig, args):
        return _at(context, builder, sig.args[0], args[0], args[1], 8)
    return types.CPointer(types.uint8)(arr, idx), codegen


@njit(cache=True, inline="always")
def _byte(x, a, ma, c):
    return (((x << a) & ma) | (x >> c)) & np.uint32(0xFF)


@njit(cache=True, nogil=True)
def sample_hists(v, a, ma, c, chunk, run, step):
    """Per chunk, the byte histogram of a sample: the first ``run`` values of every ``run * step``.

    Contiguous runs read a step-th of the memory; a stride (``v[::step]``) reads every cache line
    (MiniLM bf16's mantissa plane, in a whole compress: every 8th value 8 ms, runs of 256 in 2048
    7 ms, in 8192 3 ms, with the same decisions on all six benchmark files).
    """
    n = v.shape[0]
    k = (n + chunk - 1) // chunk
    out = np.zeros((k, 256), dtype=np.int64)
    sub = np.zeros(1024, dtype=np.int32)  # four counters break the store-to-load chain of runs
    for ci in range(k):
        sub[:] = 0
        vc = v[ci * chunk:min(n, (ci + 1) * chunk)]
        for s in range(0, vc.shape[0], run * step):
            vr = vc[s:min(vc.shape[0], s + run)]
            end = vr.shape[0]
            i = 0
            while i + 4 <= end:
                sub[np.intp(_byte(vr[i], a, ma, c))] += 1
                sub[256 + np.intp(_byte(vr[i + 1], a, ma, c))] += 1
                sub[512 + np.intp(_byte(vr[i + 2], a, ma, c))] += 1
                sub[768 + np.intp(_byte(vr[i + 3], a, ma, c))] += 1
                i += 4
            while i < end:
                sub[np.intp(_byte(vr[i], a, ma, c))] += 1
                i += 1
        for b in range(256):
            out[ci, b] = sub[b] + sub[256 + b] + sub[512 + b] + sub[768 + b]
    return out


@njit(cache=True, nogil=True)
def chunk_hists(p, chunk):
    """Per chunk of a byte plane, its histogram: the sample that takes every value."""
    return sample_hists(p, np.uint32(0), np.uint32(0), np.uint32(0), chunk, max(1, chunk), 1)


@njit(cache=True)
def _limit(bl_count, max_len):
    """Move leaves deeper than ``max_len`` up, keeping the Kraft sum at 1 (JPEG Annex K.3)."""
    bits = bl_count.copy()
    for i in range(len(bits) - 1, max_len, -1):
        while bits[i] > 0:
            j = i - 2
            while bits[j] == 0:
                j -= 1
            bits[i] -= 2
            bits[i - 1] += 1
            bits[j + 1] += 2
            bits[j] -= 1
    return bits


@njit(cache=True)
def lengths_into(counts, max_len, out):
    """huffman.code_lengths in one compiled call: the same tree, limit and tie-breaking."""
    present = np.flatnonzero(counts)
    p = present.shape[0]
    if p == 0:
        return
    needed = 0
    while (1 << needed) < p:
        needed += 1
    if needed > max_len:
        max_len = min(24, needed + 4)
    order = present[np.argsort(counts[present], kind="mergesort")]  # ascending weight, stable
    work = counts[order].astype(np.int64)
    _mk_lengths(work)
    deepest = work.max()
    if deepest <= max_len:
        for t in range(p):
            out[order[t]] = work[t]
        return
    bl = np.zeros(deepest + 1, dtype=np.int64)
    for t in range(p):
        bl[work[t]] += 1
    bits = _limit(bl, max_len)
    t = 0
    for length in range(1, max_len + 1):  # the most frequent symbols get the shortest codes
        for _ in range(bits[length]):
            out[order[p - 1 - t]] = length
            t += 1


@njit(cache=True, nogil=True)
def lengths_batch(hists, max_len):
    k = hists.shape[0]
    lens = np.zeros((k, hists.shape[1]), dtype=np.uint8)
    bits = np.zeros(k, dtype=np.int64)
    for ci in range(k):
        lengths_into(hists[ci], max_len, lens[ci])
        for s in range(hists.shape[1]):
            bits[ci] += hists[ci, s] * lens[ci, s]
    return lens, bits


_per_thread = threading.local()


def pair_stats(p, chunk, max_len, active):
    """``_pair_stats`` with this thread's zeroed pair-count table (which it leaves zeroed)."""
    full = getattr(_per_thread, "pair_counts", None)
    if full is None:
        full = _per_thread.pair_counts = np.zeros(1 << 16, np.int32)
    return _pair_stats(p, chunk, max_len, active, full)


@njit(cache=True, nogil=True)
def _pair_stats(p, chunk, max_len, active, full):
    """Per chunk of a byte plane ``p``, in one pass: its byte histogram and, for the PAIRS codec, its
    alphabet size u (0 where pairs are not tried), the code lengths of the u*u pairs (index
    rank(first) * u + rank(second), ranks in byte order), their coded bits and their order-0 entropy
    in bits. An odd chunk's last byte is paired with itself. Chunks with ``active[k] == 0`` are
    skipped (left empty).

    ``full``: int32[65536] of zeros, the pair counts indexed by the two bytes as one little-endian
    16-bit load, left zero again. The caller keeps one per thread (zeroing 256 KiB per call cost
    40 us: 3 ms for MiniLM's 65 small tensors). The byte histogram is folded from the pair counts
    over the chunk's byte range, or counted directly where that range is too wide for the chunk.
    """
    n = p.shape[0]
    k = (n + chunk - 1) // chunk
    hists = np.zeros((k, 256), dtype=np.int64)
    used = np.zeros(k, dtype=np.int64)
    lens = np.zeros((k, PAIR_MAX_USED * PAIR_MAX_USED), dtype=np.uint8)
    bits = np.zeros(k, dtype=np.int64)
    ent = np.zeros(k, dtype=np.float64)
    alpha = np.zeros(256, dtype=np.int64)
    counts = np.zeros(PAIR_MAX_USED * PAIR_MAX_USED, dtype=np.int64)
    for ci in range(k):
        if not active[ci]:
            continue
        pc = p[ci * chunk:min(n, (ci + 1) * chunk)]  # indices from 0: no negative-index checks
        cnt = pc.shape[0]
        lo = np.uint8(255)
        hi = np.uint8(0)
        for i in range(cnt):  # vectorised: cheaper than marking each byte seen
            lo = min(lo, pc[i])
            hi = max(hi, pc[i])
        even = cnt - (cnt & 1)
        for i in range(0, even, 2):
            full[np.intp(_load_le16(pc, i))] += 1
        last = -1
        if cnt & 1:
            last = np.intp(pc[cnt - 1])
            full[(last << 8) | last] += 1
        lo_, hi_ = np.intp(lo), np.intp(hi)
        folded = (hi_ - lo_ + 1) ** 2 <= 2 * cnt
        h = hists[ci]
        if folded:  # second bytes by row, first bytes by column
            for y in range(lo_, hi_ + 1):
                for x in range(lo_, hi_ + 1):
                    f = np.int64(full[(y << 8) | x])
                    h[x] += f
                    h[y] += f
            if last >= 0:
                h[last] -= 1  # counted twice as a pair with itself
        else:  # a wide range in a short chunk (small tensors): count the bytes themselves
            for i in range(cnt):
                h[np.intp(pc[i])] += 1
        u = 0
        for sym in range(256):
            if h[sym]:
                alpha[u] = sym
                u += 1
        if 2 <= u <= PAIR_MAX_USED:
            for x in range(u):
                for y in range(u):
                    counts[x * u + y] = full[(alpha[y] << 8) | alpha[x]]
        if folded:
            for y in range(lo_, hi_ + 1):
                full[(y << 8) + lo_:(y << 8) + hi_ + 1] = 0
        else:
            for i in range(0, even, 2):
                full[np.intp(_load_le16(pc, i))] = 0
            if last >= 0:
                full[(last << 8) | last] = 0
        if u < 2 or u > PAIR_MAX_USED:
            continue
        uu = u * u
        row = lens[ci, :uu]
        lengths_into(counts[:uu], max_len, row)
        npairs = (cnt + 1) // 2
        b = 0
        e = 0.0
        for t in range(uu):
            if counts[t]:
                b += counts[t] * np.int64(row[t])
                e -= counts[t] * np.log2(counts[t] / npairs)
        used[ci] = u
        bits[ci] = b
        ent[ci] = e
    return hists, used, lens, bits, ent


@njit(cache=True, nogil=True)
def plan(hists, n, chunk, block, max_len, worth, pair_used, pair_bits, pair_ent, active):
    """Choose how a plane is coded from its per-chunk histograms (and pair statistics), with every
    size exact.

    Modes: 0 raw, 1 chunked (per-chunk tables: a chunk takes the smaller of its byte code and its
    pair code), 2 shared (one byte table); the cheapest wins unless it saves less than 1 - worth of
    the plane. Returns (mode, use, lens, bits, size, shared lengths, Huffman-coded symbols, their
    bits, the chunk-local order-0 entropy of the symbols coded (bytes or pairs) and of their bytes).
    """
    k = hists.shape[0]
    sizes = np.empty(k, dtype=np.int64)
    offs = np.empty(k, dtype=np.int64)
    for ci in range(k):
        sizes[ci] = min(chunk, n - ci * chunk)
        offs[ci] = 4 * ((sizes[ci] + block - 1) // block)
    lens, bits = lengths_batch(hists, max_len)
    total = np.zeros(256, dtype=np.int64)
    for ci in range(k):
        total += hists[ci]
    if k == 1:  # one chunk: the shared code is its own code (one Huffman build fewer per small tensor)
        shared = lens[0].copy()
    else:
        shared = np.zeros(256, dtype=np.uint8)
        lengths_into(total, max_len, shared)
    sh_bits = np.zeros(k, dtype=np.int64)
    own_coded = np.empty(k, dtype=np.int64)
    sh_coded = np.empty(k, dtype=np.int64)
    paired = np.zeros(k, dtype=np.bool_)
    byte_ent = np.zeros(k, dtype=np.float64)
    c_own = RECORD * k
    c_sh = RECORD * k + TABLE_BYTES // 2  # the shared table lives in the (deflated) header
    for ci in range(k):
        for s in range(256):
            sh_bits[ci] += hists[ci, s] * shared[s]
            if hists[ci, s]:
                byte_ent[ci] -= hists[ci, s] * np.log2(hists[ci, s] / sizes[ci])
        own_coded[ci] = (bits[ci] + 7) // 8 + TABLE_BYTES + offs[ci]
        sh_coded[ci] = (sh_bits[ci] + 7) // 8 + offs[ci]
        if not active[ci]:  # not counted (its sample showed it would not pay): stays raw
            own_coded[ci] = sh_coded[ci] = sizes[ci] + 1
            c_own += sizes[ci]
            c_sh += sizes[ci]
            continue
        u = pair_used[ci]
        if u:
            pair_coded = PRESENCE_BYTES + (u * u + 1) // 2 + offs[ci] + (pair_bits[ci] + 7) // 8
            if pair_coded < own_coded[ci]:
                own_coded[ci] = pair_coded
                paired[ci] = True
        present = 0
        for s in range(256):
            present += hists[ci, s] > 0
        if present == 1:  # one value repeated (the zero low bytes of upcast weights): stored once
            own_coded[ci] = sh_coded[ci] = 1
            paired[ci] = False
        c_own += own_coded[ci] if own_coded[ci] < CHUNK_WORTH * sizes[ci] else sizes[ci]
        c_sh += sh_coded[ci] if sh_coded[ci] < CHUNK_WORTH * sizes[ci] else sizes[ci]
    mode = 1 if c_own <= c_sh else 2
    use = np.zeros(k, dtype=np.int64)  # per chunk: RAW, HUFFMAN, CONSTANT or PAIRS
    if min(c_own, c_sh) > worth * n:  # near-uniform planes (bf16/fp16 mantissas): coding buys nothing
        return 0, use, lens, bits, n, shared, 0, 0, 0.0, 0.0
    coded = own_coded
    if mode == 2:
        coded = sh_coded
        bits = sh_bits
        for ci in range(k):
            lens[ci] = shared
            paired[ci] = False
    size = RECORD * k
    hs = 0
    hb = 0
    he = 0.0
    hbe = 0.0
    for ci in range(k):
        if coded[ci] == 1 and sizes[ci] > 1:
            use[ci] = CONSTANT
            size += 1
        elif coded[ci] < CHUNK_WORTH * sizes[ci]:  # chunks that barely compress stay as they are
            size += coded[ci]
            hs += sizes[ci]
            hbe += byte_ent[ci]
            if paired[ci]:
                use[ci] = PAIRS
                bits[ci] = pair_bits[ci]
                he += pair_ent[ci]
            else:
                use[ci] = HUFFMAN
                he += byte_ent[ci]
            hb += bits[ci]
        else:
            size += sizes[ci]
    return mode, use, lens, bits, size, shared, hs, hb, he, hbe


@njit(cache=True, inline="always")
def _canonical(lens, codes):
    bl = np.zeros(32, dtype=np.int64)
    for s in range(lens.shape[0]):
        bl[lens[s]] += 1
    bl[0] = 0
    nxt = np.zeros(32, dtype=np.int64)
    code = 0
    for length in range(1, 32):
        code = (code + bl[length - 1]) << 1
        nxt[length] = code
    for s in range(lens.shape[0]):
        length = lens[s]
        if length:
            codes[s] = nxt[length]
            nxt[length] += 1


@njit(cache=True, inline="always")
def _put32(out, pos, x):
    out[pos] = x & 0xFF
    out[pos + 1] = (x >> 8) & 0xFF
    out[pos + 2] = (x >> 16) & 0xFF
    out[pos + 3] = (x >> 24) & 0xFF


@njit(cache=True, inline="always")
def _get32(buf, pos):
    return np.int64(buf[pos]) | (np.int64(buf[pos + 1]) << 8) | (np.int64(buf[pos + 2]) << 16) | \
        (np.int64(buf[pos + 3]) << 24)


@njit(cache=True, inline="always")
def _put64be(out, p, acc):
    _store_be64(out, np.int64(p), np.uint64(acc))


@njit(cache=True, nogil=True)
def copy_plane(v, a, ma, c, out, pos):
    # the planes stored raw get code where the shifts are constants (MiniLM bf16: 9.5 -> 5.5 ms):
    # the low plane of rotated 16- and 32-bit floats, and the middle planes of 32-bit floats
    if a == 1 and ma == 0xFF and c == 15:
        _copy_plane(v, np.uint32(1), np.uint32(0xFF), np.uint32(15), out, pos)
    elif a == 1 and ma == 0xFF and c == 31:
        _copy_plane(v, np.uint32(1), np.uint32(0xFF), np.uint32(31), out, pos)
    elif a == 0 and ma == 0 and c == 7:
        _copy_plane(v, np.uint32(0), np.uint32(0), np.uint32(7), out, pos)
    elif a == 0 and ma == 0 and c == 15:
        _copy_plane(v, np.uint32(0), np.uint32(0), np.uint32(15), out, pos)
    elif a == 0 and ma == 0 and c == 23:
        _copy_plane(v, np.uint32(0), np.uint32(0), np.uint32(23), out, pos)
    else:
        _copy_plane(v, a, ma, c, out, pos)


@njit(cache=True, inline="always")
def _copy_plane(v, a, ma, c, out, pos):
    o = out[pos:pos + v.shape[0]]
    for i in range(v.shape[0]):
        o[i] = np.uint8(_byte(v[i], a, ma, c))


@njit(cache=True, nogil=True)
def encode_plane(src, chunk, block, use, lens, bits, with_table, out, pos, hists, pair_used, pair_lens):
    """Write the byte plane ``src`` as chunk records at ``out[pos:]``; returns the end offset.

    ``use[k]``: chunk k's codec; a Huffman chunk has the code lengths ``lens[k]`` (at most MAX_LEN
    bits), a PAIRS chunk ``pair_lens[k]`` over its ``pair_used[k]`` bytes (those with ``hists[k] > 0``),
    and either's coded size ``bits[k]`` is known, so every size is written up front. The bit writer
    stores 8 bytes per 4 codes while at least 8 bytes of the chunk remain, then whole bytes, so
    nothing is written past a chunk's end (other threads write the next tensor there).
    """
    n = src.shape[0]
    k = (n + chunk - 1) // chunk
    codes = np.zeros(256, dtype=np.int64)
    cd = np.zeros(256, dtype=np.uint64)  # codes moved to the top of the word: acc |= cd >> nacc
    ln = np.zeros(256, dtype=np.uint64)
    paired = pair_used.any()  # for PAIRS chunks, set before use: left-aligned codes and lengths by pair
    pcd = np.empty(1 << 16 if paired else 1, dtype=np.uint64)
    pln = np.empty(1 << 16 if paired else 1, dtype=np.uint8)
    s64 = np.uint64(64)
    for ci in range(k):
        s = ci * chunk
        e = min(n, s + chunk)
        cnt = e - s
        if use[ci] == RAW:
            out[pos] = RAW
            _put32(out, pos + 1, cnt)
            _put32(out, pos + 5, cnt)
            pos += RECORD
            out[pos:pos + cnt] = src[s:e]
            pos += cnt
            continue
        if use[ci] == CONSTANT:
            out[pos] = CONSTANT
            _put32(out, pos + 1, cnt)
            _put32(out, pos + 5, 1)
            out[pos + RECORD] = src[s]
            pos += RECORD + 1
            continue
        if use[ci] == PAIRS:
            pos = _encode_pairs(src[s:e], block, hists[ci], pair_used[ci], pair_lens[ci], bits[ci], pcd, pln,
                                out, pos)
            continue
        lc = lens[ci]
        nblocks = (cnt + block - 1) // block
        body = (TABLE_BYTES if with_table else 0) + 4 * nblocks + (bits[ci] + 7) // 8
        out[pos] = 1
        _put32(out, pos + 1, cnt)
        _put32(out, pos + 5, body)
        pos += RECORD
        if with_table:
            for t in range(TABLE_BYTES):
                out[pos + t] = (lc[2 * t] << 4) | lc[2 * t + 1]
            pos += TABLE_BYTES
        codes[:] = 0
        _canonical(lc, codes)
        for t in range(256):
            ln[t] = np.uint64(lc[t])
            cd[t] = np.uint64(codes[t]) << (s64 - ln[t]) if lc[t] else np.uint64(0)
        offs = pos
        stream = pos + 4 * nblocks
        limit = stream + (bits[ci] + 7) // 8  # the chunk's end: nothing is written past it
        p = stream
        acc = np.uint64(0)
        nacc = np.uint64(0)
        for b in range(nblocks):
            bb = s + b * block
            be = min(e, bb + block)
            _put32(out, offs + 4 * b, (p - stream) * 8 + np.int64(nacc))
            vb = src[bb:be]  # indices from 0: no negative-index checks in the loop
            i = 0
            while i + 4 <= be - bb and p + 8 <= limit:
                for q in range(4):
                    sym = vb[i + q]
                    acc |= cd[sym] >> nacc
                    nacc += ln[sym]
                p, acc, nacc = _store8(out, p, acc, nacc)
                i += 4
            while i < be - bb:  # the last symbols: whole bytes only, so nothing lands past the end
                sym = vb[i]
                acc |= cd[sym] >> nacc
                nacc += ln[sym]
                p, acc, nacc = _flush_bytes(out, p, acc, nacc)
                i += 1
        if nacc:
            out[p] = np.uint8(acc >> np.uint64(56))
            p += 1
        pos = p
    return pos


@njit(cache=True, inline="always")
def _store8(out, p, acc, nacc):
    """Store the bit accumulator's 8 bytes at ``out[p:]`` and keep the bits past its whole bytes."""
    _put64be(out, p, acc)
    nb = nacc >> np.uint64(3)
    return p + np.int64(nb), acc << (nb << np.uint64(3)), nacc & np.uint64(7)


@njit(cache=True, inline="always")
def _flush_bytes(out, p, acc, nacc):
    """Store the whole bytes of the bit accumulator one by one (the careful end of a chunk)."""
    while nacc >= np.uint64(8):
        out[p] = np.uint8(acc >> np.uint64(56))
        acc <<= np.uint64(8)
        nacc -= np.uint64(8)
        p += 1
    return p, acc, nacc


@njit(cache=True, inline="always")
def _encode_pairs(vc, block, hist, u, plens, nbits, pcd, pln, out, pos):
    """One PAIRS chunk record: the presence map, the u*u pair code lengths as nibbles, the block
    offsets, then the codes of (v[2i], v[2i+1]), four pairs per 8-byte store (4 * 14 + 7 bits).
    ``pcd``, ``pln``: 2**16 scratch entries each, the code moved to the top of the word and its length,
    by the pair as a little-endian 16-bit load (one shift and one or per pair)."""
    cnt = vc.shape[0]
    uu = u * u
    alpha = np.zeros(256, dtype=np.int64)
    r = 0
    out[pos + RECORD:pos + RECORD + PRESENCE_BYTES] = 0
    for sym in range(256):
        if hist[sym]:
            alpha[r] = sym
            r += 1
            out[pos + RECORD + (sym >> 3)] |= np.uint8(1 << (sym & 7))
    nblocks = (cnt + block - 1) // block
    tb = (uu + 1) // 2
    out[pos] = PAIRS
    _put32(out, pos + 1, cnt)
    _put32(out, pos + 5, PRESENCE_BYTES + tb + 4 * nblocks + (nbits + 7) // 8)
    pos += RECORD + PRESENCE_BYTES
    for t in range(tb):
        lo = plens[2 * t + 1] if 2 * t + 1 < uu else 0
        out[pos + t] = (plens[2 * t] << 4) | lo
    pos += tb
    codes = np.zeros(uu, dtype=np.int64)
    _canonical(plens[:uu], codes)
    s64 = np.uint64(64)
    for t in range(uu):
        idx = (alpha[t % u] << 8) | alpha[t // u]
        pln[idx] = plens[t]
        pcd[idx] = np.uint64(codes[t]) << (s64 - np.uint64(plens[t])) if plens[t] else np.uint64(0)
    offs = pos
    stream = pos + 4 * nblocks
    limit = stream + (nbits + 7) // 8  # the chunk's end: nothing is written past it
    p = stream
    acc = np.uint64(0)
    nacc = np.uint64(0)
    for b in range(nblocks):
        vb = vc[b * block:min(cnt, (b + 1) * block)]
        m = vb.shape[0]
        _put32(out, offs + 4 * b, (p - stream) * 8 + np.int64(nacc))
        i = 0
        while i + 8 <= m and p + 8 <= limit:
            for q in range(4):
                idx = np.intp(_load_le16(vb, i + 2 * q))
                acc |= pcd[idx] >> nacc
                nacc += np.uint64(pln[idx])
            p, acc, nacc = _store8(out, p, acc, nacc)
            i += 8
        while i < m:
            x0 = np.intp(vb[i])
            x1 = np.intp(vb[i + 1]) if i + 1 < m else x0
            idx = (x1 << 8) | x0
            acc |= pcd[idx] >> nacc
            nacc += np.uint64(pln[idx])
            p, acc, nacc = _flush_bytes(out, p, acc, nacc)
            i += 2
    if nacc:
        out[p] = np.uint8(acc >> np.uint64(56))
        p += 1
    return p


@njit(cache=True, inline="always")
def _load64(buf, byte):
    """8 bytes big-endian from ``buf[byte:]``, zeros past its end (a corrupt offset reads nothing)."""
    if byte + 8 <= buf.shape[0]:
        return _load_be64(buf, np.int64(byte))
    w = np.uint64(0)
    for t in range(8):
        w <<= np.uint64(8)
        if byte + t < buf.shape[0]:
            w |= np.uint64(buf[byte + t])
    return w


LONG = 63  # the width recorded for a window that starts with a code longer than FAST_BITS
FAST_BITS = 12  # window of the multi-symbol table: 2**11 entries of 8 bytes stay in the L1 cache


@njit(cache=True)
def _build_table(lens, tab, sym1, len1):
    """Decode tables for one code; returns the longest code length, or -1 if the lengths are not a code.

    ``sym1``/``len1``: symbol and length for every window of the longest code's width. ``tab``: over
    FAST_BITS-bit windows, up to 4 whole codes packed as 4 symbol bytes, the bits they use (byte 4)
    and their count (byte 5); count 0 marks a window that starts with a longer code (rare by
    construction: those symbols have probability < 2**-FAST_BITS), which is then looked up in sym1.
    """
    deepest = 0
    for s in range(256):
        deepest = max(deepest, np.int64(lens[s]))
    if deepest == 0:
        return -1
    kraft = 0
    for s in range(256):
        if lens[s]:
            kraft += 1 << (deepest - lens[s])
    if kraft > (1 << deepest):
        return -1
    size = 1 << deepest
    codes = np.zeros(256, dtype=np.int64)
    _canonical(lens, codes)
    len1[:size] = deepest  # windows no code covers (Kraft sum < 1) still advance
    sym1[:size] = 0
    for s in range(256):
        length = np.int64(lens[s])
        if length:
            lo = codes[s] << (deepest - length)
            sym1[lo:lo + (1 << (deepest - length))] = s
            len1[lo:lo + (1 << (deepest - length))] = length
    # the window is FAST_BITS wide even when every code is shorter: short codes then share a look-up
    fast = FAST_BITS
    down = max(deepest - fast, 0)
    up = max(fast - deepest, 0)
    mask = (1 << fast) - 1
    for w in range(1 << fast):  # up to four steps, while the next code fits the window
        entry = np.uint64(0)
        used = 0
        count = 0
        while count < 4:
            idx = (((w << used) & mask) << down) >> up
            length = np.int64(len1[idx])
            if used + length > fast:
                break
            entry |= np.uint64(sym1[idx]) << np.uint64(8 * count)
            used += length
            count += 1
        if count == 0:  # a longer code: a sentinel width no four short entries add up to
            used = LONG
        tab[w] = entry | (np.uint64(used) << np.uint64(32)) | (np.uint64(count) << np.uint64(40))
    return deepest


@njit(cache=True)
def _build_pair_table(alpha, u, lens, tab, sym1, len1):
    """Decode tables for a PAIRS code (``lens``: u*u lengths, pair t = (alpha[t // u], alpha[t % u]));
    as _build_table, but a symbol is two bytes and a fast entry holds up to two codes (four bytes)."""
    uu = u * u
    deepest = 0
    for t in range(uu):
        deepest = max(deepest, np.int64(lens[t]))
    if deepest == 0:
        return -1
    kraft = 0
    for t in range(uu):
        if lens[t]:
            kraft += 1 << (deepest - lens[t])
    if kraft > (1 << deepest):
        return -1
    codes = np.zeros(uu, dtype=np.int64)
    _canonical(lens[:uu], codes)
    len1[:1 << deepest] = deepest
    sym1[:1 << deepest] = 0
    for t in range(uu):
        length = np.int64(lens[t])
        if length:
            lo = codes[t] << (deepest - length)
            sym1[lo:lo + (1 << (deepest - length))] = np.uint16(alpha[t // u]) | (np.uint16(alpha[t % u]) << np.uint16(8))
            len1[lo:lo + (1 << (deepest - length))] = length
    # the window is FAST_BITS wide even when every code is shorter: short codes then share a look-up
    fast = FAST_BITS
    down = max(deepest - fast, 0)
    up = max(fast - deepest, 0)
    mask = (1 << fast) - 1
    for w in range(1 << fast):
        entry = np.uint64(0)
        used = 0
        count = 0
        ok = 1
        for _ in range(2):
            idx = (((w << used) & mask) << down) >> up
            length = np.int64(len1[idx])
            ok &= np.int64(used + length <= fast)
            entry |= np.uint64(sym1[idx] * ok) << np.uint64(8 * count)
            used += length * ok
            count += 2 * ok
        if count == 0:
            used = LONG
        tab[w] = entry | (np.uint64(used) << np.uint64(32)) | (np.uint64(count) << np.uint64(40))
    return deepest


@njit(cache=True, inline="always")
def _look(tab, sym1, len1, w, fast_shift, deep_shift, per):
    x = tab[w >> fast_shift]
    if (x >> np.uint64(40)) == 0:  # a code longer than the fast window (``per`` bytes: 1, or 2 for pairs)
        idx = w >> deep_shift
        x = np.uint64(sym1[idx]) | (np.uint64(len1[idx]) << np.uint64(32)) | (np.uint64(per) << np.uint64(40))
    return x


@njit(cache=True, inline="always")
def _emit(out, i, x):
    _store_le32(out, np.int64(i), np.uint64(x))


@njit(cache=True)
def _slow_group(buf, bitpos, i, tab, sym1, len1, fs, ds, per, out):
    """Four look-ups, each checked for a code longer than the fast window (kept out of the hot loop,
    where a per-look-up check would turn into an always-taken second table load)."""
    m8 = np.uint64(0xFF)
    for _ in range(4):
        w = _load64(buf, bitpos >> 3) << np.uint64(bitpos & 7)
        x = _look(tab, sym1, len1, w, fs, ds, per)
        _emit(out, i, x)
        i += np.int64(x >> np.uint64(40))
        bitpos += np.int64((x >> np.uint64(32)) & m8)
    return i, bitpos


@njit(cache=True, inline="always")
def _tail(buf, bitpos, i, e, tab, sym1, len1, fs, ds, per, out):
    """Decode a block: four look-ups (<= 16 symbols, <= 56 bits) per 8-byte load, then the last
    symbols one look-up at a time, writing nothing past e."""
    m8 = np.uint64(0xFF)
    while i + 16 <= e:
        w = _load64(buf, bitpos >> 3) << np.uint64(bitpos & 7)
        j = i
        used = np.uint64(0)
        for _ in range(4):  # a long code's sentinel width (LONG) shifts w to nothing: the group is redone
            x = tab[w >> fs]
            _emit(out, j, x)
            u = (x >> np.uint64(32)) & m8
            j += np.int64(x >> np.uint64(40))
            w <<= u
            used += u
        if used >= LONG:  # a long code among them: redo these four carefully
            i, bitpos = _slow_group(buf, bitpos, i, tab, sym1, len1, fs, ds, per, out)
        else:
            i = j
            bitpos += np.int64(used)
    while i < e:
        w = _load64(buf, bitpos >> 3) << np.uint64(bitpos & 7)
        x = _look(tab, sym1, len1, w, fs, ds, per)
        c = min(np.int64(x >> np.uint64(40)), e - i)
        for t in range(c):
            out[i + t] = (x >> np.uint64(8 * t)) & m8
        i += c
        bitpos += np.int64((x >> np.uint64(32)) & m8)


@njit(cache=True)
def _chunk(buf, pos, end, cnt, shared, lens, tab, sym1, len1, deepest, block, out):
    """Decode the chunk record at ``buf[pos:]`` (``cnt`` symbols) into ``out[:cnt]``.

    Returns (next position, longest code of the current table, status).
    """
    if pos + RECORD > end:
        return pos, deepest, ENDS_EARLY
    codec = buf[pos]
    if _get32(buf, pos + 1) != cnt:
        return pos, deepest, DOES_NOT_FIT
    size = _get32(buf, pos + 5)
    pos += RECORD
    if pos + size > end:
        return pos, deepest, DOES_NOT_FIT
    body = pos
    pos += size
    if codec == RAW:
        if size != cnt:
            return pos, deepest, DOES_NOT_FIT
        out[:cnt] = buf[body:body + cnt]
        return pos, deepest, 0
    if codec == CONSTANT:
        if size != 1:
            return pos, deepest, DOES_NOT_FIT
        out[:cnt] = buf[body]
        return pos, deepest, 0
    per = 1
    if codec == PAIRS:  # own table only: it would overwrite a shared plane's table
        if shared or size < PRESENCE_BYTES:
            return pos, deepest, BAD_TABLE
        alpha = np.empty(256, dtype=np.uint8)
        u = 0
        for sym in range(256):
            if (buf[body + (sym >> 3)] >> (sym & 7)) & 1:
                alpha[u] = sym
                u += 1
        tb = (u * u + 1) // 2
        if u < 2 or u > PAIR_MAX_USED or size < PRESENCE_BYTES + tb:
            return pos, deepest, BAD_TABLE
        body += PRESENCE_BYTES
        for t in range(tb):
            lens[2 * t] = buf[body + t] >> 4
            lens[2 * t + 1] = buf[body + t] & 0x0F
        deepest = _build_pair_table(alpha, u, lens, tab, sym1, len1)
        if deepest < 0:
            return pos, deepest, BAD_TABLE
        body += tb
        size -= PRESENCE_BYTES + tb
        per = 2
    elif codec != HUFFMAN:
        return pos, deepest, UNKNOWN_CODEC
    elif not shared:
        if size < TABLE_BYTES:
            return pos, deepest, BAD_TABLE
        for t in range(TABLE_BYTES):
            lens[2 * t] = buf[body + t] >> 4
            lens[2 * t + 1] = buf[body + t] & 0x0F
        deepest = _build_table(lens[:256], tab, sym1, len1)
        if deepest < 0:
            return pos, deepest, BAD_TABLE
        body += TABLE_BYTES
        size -= TABLE_BYTES
    elif deepest < 0:
        return pos, deepest, BAD_TABLE
    nblocks = (cnt + block - 1) // block
    if 4 * nblocks > size:
        return pos, deepest, SHORT_OFFSETS
    stream = body + 4 * nblocks
    fs = np.uint64(64 - FAST_BITS)
    ds = np.uint64(64 - deepest)
    for b in range(nblocks):
        i = b * block
        _tail(buf, stream * 8 + _get32(buf, body + 4 * b), i, min(cnt, i + block), tab, sym1, len1, fs, ds, per, out)
    return pos, deepest, 0


@njit(cache=True, nogil=True)
def decode_tensor(buf, n, rotate, chunk, block, modes, starts, ends, shared, scratch, out):
    """Decode a tensor's m planes chunk by chunk and interleave them into ``out`` (n * m bytes).

    ``modes[j]``: 0 raw (the plane's n bytes at ``buf[starts[j]:]``), 1 chunked (each Huffman chunk
    carries its table), 2 shared (``shared[j]`` holds the lengths). Every chunk record must hold
    ``chunk`` symbols (the last the rest). ``scratch``: (m, chunk) uint8, so a chunk's planes stay in
    cache between decoding and merging. Returns (status, plane) with status 0 when all went well.
    Memory-safe on hostile input: writes are bounded by n and chunk, reads by the buffer's end.
    """
    m = modes.shape[0]
    # each table is filled by _build_table before it is read (untouched memory costs nothing)
    tabs = np.empty((m, 1 << FAST_BITS), dtype=np.uint64)
    sym1 = np.empty((m, 1 << 15), dtype=np.uint16)  # a byte, or a pair of bytes
    len1 = np.empty((m, 1 << 15), dtype=np.uint8)
    lens = np.zeros(PAIR_MAX_USED * PAIR_MAX_USED + 1, dtype=np.uint8)
    deep = np.full(m, -1, dtype=np.int64)
    pos = starts.copy()
    for j in range(m):
        if modes[j] == 0 and ends[j] - starts[j] != n:
            return DOES_NOT_FIT, j
        if modes[j] == 2:
            deep[j] = _build_table(shared[j], tabs[j], sym1[j], len1[j])
    k = (n + chunk - 1) // chunk
    for ci in range(k):
        s = ci * chunk
        cnt = min(chunk, n - s)
        for j in range(m):
            if modes[j] == 0:  # raw planes are read in place by the merge below
                continue
            pos[j], deep[j], status = _chunk(buf, pos[j], ends[j], cnt, modes[j] == 2, lens, tabs[j], sym1[j],
                                             len1[j], deep[j], block, scratch[j])
            if status:
                return status, j
        o = out[s * m:(s + cnt) * m]
        if m == 2 and rotate:
            merge2(_plane(buf, scratch, 0, modes[0] == 0, starts[0] + s, cnt),
                   _plane(buf, scratch, 1, modes[1] == 0, starts[1] + s, cnt), o, cnt)
        elif m == 4 and rotate:
            merge4(_plane(buf, scratch, 0, modes[0] == 0, starts[0] + s, cnt),
                   _plane(buf, scratch, 1, modes[1] == 0, starts[1] + s, cnt),
                   _plane(buf, scratch, 2, modes[2] == 0, starts[2] + s, cnt),
                   _plane(buf, scratch, 3, modes[3] == 0, starts[3] + s, cnt), o, cnt)
        elif m == 1 and modes[0] == 0:
            o[:] = buf[starts[0] + s:starts[0] + s + cnt]
        else:
            for j in range(m):  # other widths (float64, integers): gather raw planes first
                if modes[j] == 0:
                    scratch[j, :cnt] = buf[starts[j] + s:starts[j] + s + cnt]
            if rotate:
                for i in range(cnt):
                    for q in range(m):
                        o[i * m + q] = (scratch[q, i] >> 1) | ((scratch[(q + 1) % m, i] & 1) << 7)
            else:
                for i in range(cnt):
                    for q in range(m):
                        o[i * m + q] = scratch[q, i]
    for j in range(m):
        if modes[j] != 0 and pos[j] != ends[j]:
            return DOES_NOT_FIT, j
    return 0, 0


@njit(cache=True, inline="always")
def _plane(buf, scratch, j, raw, start, cnt):
    """Plane j of the current chunk: its decoded scratch row, or a raw plane's bytes in ``buf``."""
    if raw:
        return carray(_address(buf, np.int64(start)), cnt)
    return scratch[j, :cnt]


@njit(cache=True, inline="always")
def merge2(p0, p1, out, n):
    """Bytes of 16-bit values from the planes of their left rotation by one bit."""
    for i in range(n):
        r = (np.uint32(p1[i]) << np.uint32(8)) | np.uint32(p0[i])
        v = (r >> np.uint32(1)) | ((r & np.uint32(1)) << np.uint32(15))
        out[2 * i] = np.uint8(v & np.uint32(0xFF))
        out[2 * i + 1] = np.uint8(v >> np.uint32(8))


@njit(cache=True, inline="always")
def merge4(p0, p1, p2, p3, out, n):
    """Bytes of 32-bit values from the planes of their left rotation by one bit."""
    for i in range(n):
        r = (np.uint32(p3[i]) << np.uint32(24)) | (np.uint32(p2[i]) << np.uint32(16)) | \
            (np.uint32(p1[i]) << np.uint32(8)) | np.uint32(p0[i])
        v = (r >> np.uint32(1)) | ((r & np.uint32(1)) << np.uint32(31))
        out[4 * i] = np.uint8(v & np.uint32(0xFF))
        out[4 * i + 1] = np.uint8((v >> np.uint32(8)) & np.uint32(0xFF))
        out[4 * i + 2] = np.uint8((v >> np.uint32(16)) & np.uint32(0xFF))
        out[4 * i + 3] = np.uint8(v >> np.uint32(24))

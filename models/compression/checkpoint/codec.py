"""Lossless checkpoint codec: floats split into byte planes, each plane Huffman-coded in chunks.

Why it works: a float's exponent byte takes few values (weights cluster around 1e-2), about 2.6 bits
of entropy in 8, while mantissa bytes are close to uniform. Rotating the bits left by one puts the
whole exponent into the top byte (sign moves to the bottom), so the top plane is the exponent plane.
Each plane is cut into chunks of ``CHUNK`` symbols; a chunk is Huffman-coded with its own table, a
table shared by the plane, or kept raw, whichever is smallest (local statistics matter: weights of
one row look alike). Other dtypes take the same byte-plane path or zstd, whichever is smaller.

The kernels that touch every value (planes.py: extract, count, code, decode, merge) are plain numpy
and short numba loops; fast/ holds the same kernels hand-unrolled, an opt-in (``FAST``) writing the
same bytes. Either way every size is planned before a byte is written, the payload is written in
place into one output buffer by two runs of tensors while a pool thread computes the sha256s, and
decoding goes chunk by chunk in two runs of tensors side by side.

    compress(data) -> (container bytes, Report)        decompress(container) -> safetensors bytes
    decompress_tensors(container) -> {name: ndarray}   inspect(container) -> summary dict

Every saving reported by ``roundtrip`` comes from decoding the container and comparing sha256.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import zstandard

from models.compression import huffman
from models.compression.checkpoint import container, planes, scratch
from models.compression.checkpoint import safetensors_io as sio
from models.compression.checkpoint.fast import plane_kernels as unrolled
from models.core import policy
from models.core.errors import CorruptFile, InputError

CHUNK = 1 << 17  # symbols per table: 128 Ki, the size that minimised MiniLM's coded size
BLOCK = 1 << 14  # symbols per independently decodable block (the lanes of a parallel decoder)
MAX_LEN = planes.MAX_LEN  # longest code, 14
HEADER_ROOM = 1 << 16  # output bytes reserved for the header beyond the payload's worst case
WORTH = 0.997  # a plane is Huffman-coded only if that saves at least 0.3 % of it
Progress = Callable[[float, str], None]


def _quiet(fraction: float, message: str) -> None:
    pass


# The plain kernels (planes.py) are the default; FAST = True (or LMLAB_FAST_CODEC=1) picks fast/'s unrolled ones.
# Gain, same bytes: compression 1.5-2.6x, decompression 1.7-2.8x faster on a 2-core CPU (docs/BENCHMARKS.md).
FAST: bool | None = None  # None: the environment decides


def _kernels():
    fast = FAST if FAST is not None else os.environ.get("LMLAB_FAST_CODEC") == "1"
    return unrolled if fast else planes


# --- planes ------------------------------------------------------------------------------------
# A tensor's values are read in place (``_values``); plane j is a byte of each value
# (planes.plane_params). Near-uniform planes go from the values straight to the output;
# planes worth counting are extracted once (``_bytes_of``).

ROTATED = ("BF16", "F16", "F32", "F64")
SAMPLE_MIN = 1 << 16  # planes this long are first judged from a sample: a run of SAMPLE_RUN values
SAMPLE_RUN = 256  # out of every SAMPLE_RUN * SAMPLE_STEP (a 128 Ki chunk: 4 Ki values, ~0.05 bits low)
SAMPLE_STEP = 32
NEAR_UNIFORM = 7.95  # bits: a plane whose sample has more entropy is stored raw without a full pass
# bits: a chunk whose sample has more entropy is left raw without counting it (coding would save
# under 4 %, see planes.CHUNK_WORTH; a sample's entropy estimate errs low, never high)
CHUNK_NEAR_UNIFORM = 7.75


def _entropies(hists: np.ndarray) -> np.ndarray:
    """Order-0 entropy in bits per symbol of each row of a histogram."""
    totals = np.maximum(hists.sum(axis=1, keepdims=True), 1)
    p = hists / totals
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=1)
MAX_CHUNK = 1 << 24


def _values(raw: memoryview | bytes, dtype: str) -> np.ndarray:
    item = sio.DTYPES[dtype][1]
    return np.frombuffer(raw, dtype=np.uint8 if item == 1 else f"<u{item}")


def _pack_table(lengths: np.ndarray) -> bytes:
    ls = lengths.astype(np.uint8)
    return ((ls[0::2] << 4) | ls[1::2]).tobytes()


def _unpack_table(buf: bytes | memoryview) -> np.ndarray:
    b = np.frombuffer(buf, dtype=np.uint8)
    out = np.empty(256, np.uint8)
    out[0::2], out[1::2] = b >> 4, b & 0x0F
    return out


@dataclass
class PlanePlan:
    """How one plane will be coded, with every size known before a byte is written."""
    entry: dict
    params: tuple
    size: int  # bytes of the plane's segment
    hist: np.ndarray  # histogram of the whole plane (zeros when a sample showed it near-uniform)
    use: np.ndarray | None = None  # per chunk: its codec (planes.RAW, planes.HUFFMAN, planes.CONSTANT or planes.PAIRS)
    lens: np.ndarray | None = None  # per chunk: code lengths
    bits: np.ndarray | None = None  # per chunk: coded bits
    huff_symbols: int = 0  # symbols that go through the Huffman coder
    huff_bits: int = 0  # the bits it uses for them (tables and block offsets not included)
    huff_entropy_bits: float = 0.0  # sum over those chunks of the order-0 entropy of the symbols coded
    huff_byte_entropy_bits: float = 0.0  # the same for their bytes (pairs code below it when neighbours agree)
    chunk_hists: np.ndarray | None = None  # per chunk: byte histogram (a PAIRS chunk's alphabet)
    pair_used: np.ndarray | None = None  # per chunk: alphabet size of its pair code (0: none)
    pair_lens: np.ndarray | None = None  # per chunk: pair code lengths
    plane: np.ndarray | None = None  # the plane's bytes, once counted (None: read from the values when written)


def _fresh(n: int) -> np.ndarray:
    return np.empty(n, np.uint8)


def _bytes_of(v: np.ndarray, params: tuple, take: Callable[[int], np.ndarray] = _fresh) -> np.ndarray:
    """Plane ``params`` of ``v`` as its own array of bytes (``v`` itself when it is one).

    Counted and coded planes are extracted once (vectorised, ~0.1 ns a byte): the pair counter and
    the encoder then load two bytes at a time (MiniLM bf16 exponents: counts 16 -> 9 ms, codes 21 -> 14 ms).
    """
    if v.dtype == np.uint8 and tuple(int(x) for x in params) == (0, 0, 0):
        return v
    plane = take(len(v))
    _kernels().copy_plane(v, *params, plane, 0)
    return plane


def plan_plane(v: np.ndarray, params: tuple, role: str, chunk: int = CHUNK, block: int = BLOCK,
               max_len: int = MAX_LEN, take: Callable[[int], np.ndarray] = _fresh) -> PlanePlan:
    """The smallest of: raw, per-chunk tables, one shared table (each chunk may still stay raw).

    ``take(n)``: where the plane's bytes go if they are extracted (scratch.arena in ``compress``)."""
    n = len(v)
    plan = PlanePlan({"role": role, "mode": "raw", "symbols": n}, params, n, np.zeros(256, np.int64))
    if n == 0:
        return plan
    k = (n + chunk - 1) // chunk
    active = np.ones(k, np.uint8)
    if role != "exponent" and n >= SAMPLE_MIN:  # mantissa bytes: a sample tells near-uniform ones cheaply
        sample = _kernels().sample_hists(v, *params, chunk, SAMPLE_RUN, SAMPLE_STEP)  # ... and which chunks to count
        active = (_entropies(sample) <= CHUNK_NEAR_UNIFORM).astype(np.uint8)
        if huffman.entropy_bits(sample.sum(axis=0)) > NEAR_UNIFORM or not active.any():
            return plan
    plane = plan.plane = _bytes_of(v, params, take)
    if chunk % 2 == 0 and block % 2 == 0:  # pairs must not straddle blocks
        hists, pu, pl, pb, pe = _kernels().pair_stats(plane, chunk, max_len, active)
    else:
        hists = _kernels().chunk_hists(plane, chunk)
        pu, pl, pb, pe = np.zeros(k, np.int64), np.zeros((k, 1), np.uint8), np.zeros(k, np.int64), np.zeros(k)
    plan.hist = hists.sum(axis=0)
    mode, plan.use, plan.lens, plan.bits, size, shared, hs, hb, he, hbe = _kernels().plan(hists, n, chunk, block, max_len,
                                                                               WORTH, pu, pb, pe, active)
    if mode == 0:
        return plan
    plan.chunk_hists, plan.pair_used, plan.pair_lens = hists, pu, pl
    plan.huff_byte_entropy_bits = float(hbe)
    plan.entry["mode"] = "chunked" if mode == 1 else "shared"
    if mode == 2:  # in the header, which is deflated as a whole: similar tables cost little there
        plan.entry["table"] = _pack_table(shared).hex()
    plan.size, plan.huff_symbols, plan.huff_bits, plan.huff_entropy_bits = int(size), int(hs), int(hb), float(he)
    return plan


def write_plane(v: np.ndarray, plan: PlanePlan, out: np.ndarray, pos: int, chunk: int = CHUNK,
                block: int = BLOCK) -> int:
    """Write the plane's segment at ``out[pos:]``, touching no byte past it; returns its end."""
    if plan.entry["mode"] == "raw":
        if plan.plane is None:
            _kernels().copy_plane(v, *plan.params, out, pos)
        else:
            out[pos:pos + len(v)] = plan.plane
        return pos + len(v)
    end = _kernels().encode_plane(plan.plane, chunk, block, plan.use, plan.lens, plan.bits,
                          plan.entry["mode"] == "chunked", out, pos, plan.chunk_hists, plan.pair_used, plan.pair_lens)
    if end != pos + plan.size:  # the sizes were computed up front; a mismatch is a bug, never data
        raise RuntimeError(f"plane coded to {end - pos} bytes instead of the planned {plan.size}")
    return end


def _plane_error(status: int) -> str:
    return {planes.ENDS_EARLY: "the chunk list ends early", planes.DOES_NOT_FIT: "a chunk does not fit the plane",
            planes.BAD_TABLE: "a Huffman table is missing or is not a prefix code",
            planes.UNKNOWN_CODEC: "a chunk has an unknown codec",
            planes.SHORT_OFFSETS: "a chunk's block table is cut short"}.get(status, f"decoding failed ({status})")


@dataclass
class PlaneResult:  # one coded plane on its own (the analysis codes whole files as one plane of bytes)
    entry: dict
    segment: bytes


def encode_plane(plane: np.ndarray, role: str, chunk: int = CHUNK, block: int = BLOCK) -> PlaneResult:
    """A uint8 plane coded on its own: (entry, segment)."""
    plane = np.ascontiguousarray(plane, dtype=np.uint8)
    params = planes.plane_params(1, False, 0)
    plan = plan_plane(plane, params, role, chunk, block)
    out = np.empty(plan.size, np.uint8)
    write_plane(plane, plan, out, 0, chunk, block)
    return PlaneResult(plan.entry, out.tobytes())


def decode_plane(seg: memoryview | bytes, entry: dict, block: int, what: str, chunk: int = CHUNK) -> np.ndarray:
    """The uint8 plane of ``encode_plane`` back."""
    n = int(entry["symbols"])
    buf = np.frombuffer(seg, dtype=np.uint8)
    out = np.empty(n, np.uint8)
    mode = {"raw": 0, "chunked": 1, "shared": 2}[entry["mode"]]
    shared = np.zeros((1, 256), np.uint8)
    if mode == 2:
        shared[0] = _unpack_table(bytes.fromhex(entry["table"]))
    status, _ = _kernels().decode_tensor(buf, n, False, chunk, block, np.array([mode]), np.array([0]), np.array([len(buf)]),
                                 shared, np.empty((1, min(chunk, max(n, 1))), np.uint8), out)
    if status:
        raise CorruptFile(f"{what}: {_plane_error(status)}")
    return out


# --- whole checkpoint -------------------------------------------------------------------------


@dataclass
class TensorRow:
    name: str
    dtype: str
    shape: tuple[int, ...]
    raw_bytes: int
    coded_bytes: int
    exponent_entropy: float | None  # bits per value of the exponent plane, order 0, whole tensor
    modes: str = ""

    @property
    def ratio(self) -> float:
        return self.coded_bytes / self.raw_bytes if self.raw_bytes else 1.0


@dataclass
class Report:
    name: str
    raw_bytes: int  # the original file
    coded_bytes: int  # the container
    sha256: str  # of the original file
    seconds: float
    rows: list[TensorRow] = field(default_factory=list)
    exponent_hist: dict[str, np.ndarray] = field(default_factory=dict)  # float dtype -> 256-bin histogram
    huff_symbols: int = 0
    huff_bits: int = 0
    huff_entropy_bits: float = 0.0  # chunk-local order-0 entropy of the symbols coded (bytes or byte pairs)
    huff_byte_entropy_bits: float = 0.0  # chunk-local order-0 entropy of the bytes those symbols hold

    @property
    def ratio(self) -> float:
        return self.coded_bytes / self.raw_bytes if self.raw_bytes else 1.0

    @property
    def huffman_overhead(self) -> float:
        """How far the Huffman coder is above the order-0 entropy of the symbols it coded (0.004 = 0.4 %)."""
        return self.huff_bits / self.huff_entropy_bits - 1 if self.huff_entropy_bits else 0.0

    @property
    def huffman_overhead_bytes(self) -> float:
        """The same against the order-0 entropy of single bytes (lower bound for byte-wise coders)."""
        return self.huff_bits / self.huff_byte_entropy_bits - 1 if self.huff_byte_entropy_bits else 0.0


def _generic_zstd(raw: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(raw)


HASH_PIECE = 1 << 18  # 256 KiB: a piece stays in the cache between the copy and the hash


def _sha256(buf) -> str:
    """sha256 of ``buf``, fed to hashlib in 256 KiB pieces copied into a buffer that stays in cache.

    Measured on MiniLM's 45 MB: 1.6 GB/s this way against 1.2 GB/s when hashlib reads a large
    bytes object directly (its SHA-NI loop stalls on the stream; the copy runs at memory speed).
    """
    src = np.frombuffer(buf, np.uint8)
    if len(src) <= HASH_PIECE:
        return hashlib.sha256(src).hexdigest()
    piece = np.empty(HASH_PIECE, np.uint8)
    h = hashlib.sha256()
    for start in range(0, len(src), HASH_PIECE):
        size = min(HASH_PIECE, len(src) - start)
        piece[:size] = src[start:start + size]
        h.update(piece[:size])
    return h.hexdigest()


def _hash_all(data, st: sio.Safetensors) -> tuple[str, list[str]]:
    """(sha256 of the file, [sha256 of each tensor]), both recorded by the format."""
    return _sha256(data), [_sha256(st.raw(t)) for t in st.tensors]


class _Output:
    """The container being written: a buffer sized for the worst case, segments appended in place,
    the CRC32 of each computed on a pool thread, the header added at the end."""

    def __init__(self, size: int, pool: ThreadPoolExecutor) -> None:
        # Not zero-filled (every byte kept is written: segments follow each other, then the header), and in
        # 2 MiB pages on Linux: 46 against 139 ms for 45 MB with bytearray(n) (best of 30, a loaded machine).
        self.arr = np.empty(size, np.uint8)
        self.view = memoryview(self.arr)
        self.pos = container.FIXED_SIZE
        self.pool = pool
        self.crcs: list[tuple[dict, Future]] = []

    def segment(self, entry: dict, start: int, end: int) -> dict:
        entry.update(offset=start - container.FIXED_SIZE, size=end - start)
        self.crcs.append((entry, self.pool.submit(container.crc32, self.view[start:end])))
        return entry

    def put(self, blob: bytes | memoryview, entry: dict | None = None) -> dict:
        size = memoryview(blob).nbytes
        self.arr[self.pos:self.pos + size] = np.frombuffer(blob, np.uint8)
        self.pos += size
        return self.segment({} if entry is None else entry, self.pos - size, self.pos)

    def finish(self, head: bytes) -> memoryview:
        """The whole file: payload, header after it, and the fixed part that points to the header.

        The buffer is never resized: views of it (the pool threads' arguments, and whatever a JIT
        compile or a traceback still holds until the garbage collector runs) may outlive the writing.
        A read-only view of the
        bytes written is returned instead (the unused tail is at most ``HEADER_ROOM`` plus 200 bytes
        per tensor).
        """
        self.arr[:container.FIXED_SIZE] = np.frombuffer(container.fixed(head), np.uint8)
        end = self.pos + len(head)
        if end <= len(self.arr):
            self.arr[self.pos:end] = np.frombuffer(head, np.uint8)
            out = self.view[:end]
        else:  # a header larger than the room left for it (only when almost nothing compressed): copy once
            out = memoryview(bytearray(self.view[:self.pos]) + head)
        self.arr = self.view = self.crcs = None
        return out.toreadonly()


WRITERS = 2  # pool threads that write the payload, each a contiguous run of tensors


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# Compression pool: one thread more than the writers where a core is free for the file's sha256;
# on two cores a third thread only time-slices (MiniLM bf16: ~8 ms more CPU per call, slower).
COMPRESS_THREADS = 3 if _cores() >= 3 else 2


def _plan_tensor(st: sio.Safetensors, t, chunk: int, block: int, take: Callable[[int], np.ndarray] = _fresh):
    """(values, plane plans, zstd frame or None) of one tensor: runs on a pool thread."""
    raw = st.raw(t)
    item = sio.DTYPES[t.dtype][1]
    v = _values(raw, t.dtype)
    plans = [plan_plane(v, planes.plane_params(item, t.dtype in ROTATED, j), _role(t.dtype, j, item), chunk, block,
                        take=take) for j in range(item)]
    z = _generic_zstd(bytes(raw)) if t.dtype not in sio.FLOATS and t.nbytes else None
    if z is not None and len(z) >= sum(p.size for p in plans):
        z = None  # integer ids and masks: zstd only where it sees repeats the planes miss
    return v, plans, z


JOB_BYTES = 1 << 20  # tensors smaller than this share a pool job (MiniLM: 104 tensors, 65 under 4 kB)


def _batches(sizes: list[int], least: int) -> list[range]:
    """Consecutive tensors grouped into jobs of at least ``least`` bytes (the last may be smaller):
    a future per tiny tensor cost the submitting thread more than the job itself."""
    out, start, acc = [], 0, 0
    for i, size in enumerate(sizes):
        acc += size
        if acc >= least:
            out.append(range(start, i + 1))
            start, acc = i + 1, 0
    if start < len(sizes):
        out.append(range(start, len(sizes)))
    return out


def _plan_batch(st: sio.Safetensors, batch: range, chunk: int, block: int, take: Callable[[int], np.ndarray]) -> list:
    return [_plan_tensor(st, st.tensors[i], chunk, block, take) for i in batch]


def _write_run(run: list, out: np.ndarray, view: memoryview, chunk: int, block: int) -> list[list[int]]:
    """Write tensors at their planned offsets; returns the CRC32 of each segment.

    ``run``: (values, plans, zstd frame, offset) per tensor. The encoder writes nothing past a
    chunk's end, so other threads may write the tensors on either side at the same time.
    """
    crcs = []
    for v, plans, z, pos in run:
        if z is not None:
            out[pos:pos + len(z)] = np.frombuffer(z, np.uint8)
            crcs.append([container.crc32(z)])
            continue
        tensor_crcs = []
        for plan in plans:
            end = write_plane(v, plan, out, pos, chunk, block)
            tensor_crcs.append(container.crc32(view[pos:end]))
            pos = end
        crcs.append(tensor_crcs)
    return crcs


def _runs(weights: list[int], parts: int) -> list[range]:
    """Split tensors into ``parts`` contiguous runs of about equal work (raw bytes)."""
    total, bounds, acc = max(1, sum(weights)), [0], 0
    for i, wt in enumerate(weights):
        acc += wt
        if len(bounds) < parts and acc >= total * len(bounds) / parts:
            bounds.append(i + 1)
    bounds.append(len(weights))
    return [range(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def compress(data: bytes | memoryview, name: str = "checkpoint.safetensors", progress: Progress = _quiet,
             chunk: int = CHUNK, block: int = BLOCK) -> tuple[memoryview, Report]:
    """Compress a whole safetensors file held in memory: (container bytes as a read-only memoryview, report).

    Pool threads (three, or two on two cores) share the work: the sha256 of the file and of each
    tensor, each tensor's plan (histograms, code lengths, every size), then the payload written in
    place by two contiguous runs of tensors (the encoder never writes past a chunk, so the runs
    cannot clash), with the CRC32 of each segment (hashlib, zlib and the compiled kernels release
    the GIL). Every size is planned before writing, so the payload goes straight into the output buffer.
    """
    started = time.perf_counter()
    if not 1 <= chunk <= MAX_CHUNK or block < 1:
        raise ValueError(f"chunk must be in 1..{MAX_CHUNK} and block positive")
    st = sio.parse(data, name)
    report = Report(name, st.size, 0, "", 0.0)
    total = max(1, sum(t.nbytes for t in st.tensors))
    exponents = sum(t.numel for t in st.tensors if t.dtype in ROTATED)  # the planes that will be extracted
    with scratch.arena(exponents) as take, ThreadPoolExecutor(COMPRESS_THREADS) as pool:  # the pool ends first
        hashed = pool.submit(_hash_all, data, st)
        batches = _batches([t.nbytes for t in st.tensors], JOB_BYTES)
        planned = [pool.submit(_plan_batch, st, b, chunk, block, take) for b in batches]
        work, done = [], 0
        for b, fut in zip(batches, planned, strict=True):
            work += fut.result()
            done += sum(st.tensors[i].nbytes for i in b)
            progress(0.5 * done / total, f"analysed {st.tensors[b[-1]].name}")
        sizes = [len(z) if z is not None else sum(p.size for p in plans) for _, plans, z in work]
        payload = len(st.prefix) + sum(e - s for s, e in st.gaps()) + sum(sizes)
        w = _Output(container.FIXED_SIZE + payload + HEADER_ROOM + 200 * len(st.tensors), pool)
        header = {"format": "lmlab-checkpoint", "chunk": chunk, "block": block,
                  "source": {"name": name, "size": st.size, "sha256": "", "prefix": w.put(st.prefix)},
                  "gaps": [], "tensors": []}
        for start, end in st.gaps():
            header["gaps"].append(w.put(st.data[start:end], {"start": start, "end": end}))
        offsets = []
        for size in sizes:
            offsets.append(w.pos)
            w.pos += size
        progress(0.5, "writing")
        runs = _runs([t.nbytes for t in st.tensors], WRITERS)
        written = [pool.submit(_write_run, [(*work[i], offsets[i]) for i in r], w.arr, w.view, chunk, block)
                   for r in runs]
        # the header and the report while the runs write (their CRC32s and the sha256s come after)
        for t, (_, plans, z), pos in zip(st.tensors, work, offsets, strict=True):
            entry = {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "start": t.start, "end": t.end,
                     "sha256": "", "transform": "rotl1" if z is None and t.dtype in ROTATED else "none"}
            if z is not None:
                segs = [({"role": "bytes", "mode": "zstd", "symbols": t.nbytes}, len(z))]
                plans = []
            else:
                segs = [(dict(p.entry), p.size) for p in plans]
            entry["planes"] = []
            for e, size in segs:
                e.update(offset=pos - container.FIXED_SIZE, size=size, crc32=0)
                entry["planes"].append(e)
                pos += size
            header["tensors"].append(entry)
            _add_to_report(report, t, plans, z is None and t.dtype in ROTATED, sum(sizes_ for _, sizes_ in segs))
        crcs = [c for fut in written for c in fut.result()]
        del work  # the extracted planes: their arena goes back when the pool is done
        file_hash, hashes = hashed.result()
        for entry, tensor_crcs, h in zip(header["tensors"], crcs, hashes, strict=True):
            entry["sha256"] = h
            for e, crc in zip(entry["planes"], tensor_crcs, strict=True):
                e["crc32"] = crc
        for entry, crc in w.crcs:
            entry["crc32"] = crc.result()
        header["source"]["sha256"] = report.sha256 = file_hash
    buf = w.finish(container.encode_header(header))
    report.coded_bytes = len(buf)
    report.seconds = time.perf_counter() - started
    progress(1.0, "compressed")
    return buf, report


def _add_to_report(report: Report, t, plans: list, rotated: bool, coded: int) -> None:
    exp_h = plans[-1].hist if rotated and plans else None
    if exp_h is not None and t.numel:
        acc = report.exponent_hist.setdefault(t.dtype, np.zeros(256, np.int64))
        acc += exp_h
    for p in plans:
        report.huff_symbols += p.huff_symbols
        report.huff_bits += p.huff_bits
        report.huff_entropy_bits += p.huff_entropy_bits
        report.huff_byte_entropy_bits += p.huff_byte_entropy_bits
    report.rows.append(TensorRow(t.name, t.dtype, t.shape, t.nbytes, coded,
                                 huffman.entropy_bits(exp_h) if exp_h is not None else None,
                                 "/".join(("zstd",) if not plans else (p.entry["mode"] for p in plans))))


def _role(dtype: str, j: int, nplanes: int) -> str:
    if dtype not in sio.FLOATS:
        return "bytes"
    return "exponent" if j == nplanes - 1 else "mantissa"


_MODES = {"raw": 0, "chunked": 1, "shared": 2}


class _Checks:
    """CRC32 and sha256 checks running on other threads while this one decodes; ``finish`` raises
    the first failure (a CRC failure first: it names the cause better than what it led to)."""

    def __init__(self, payload: memoryview, pool: ThreadPoolExecutor) -> None:
        self.payload, self.pool = payload, pool
        self.crcs: list[tuple[str, int, Future]] = []
        self.shas: list[tuple[str, str, Future]] = []

    def segment(self, entry: dict, what: str) -> memoryview:
        seg = container.segment(self.payload, entry, what, check=False)
        self.crcs.append((what, int(entry["crc32"]), self.pool.submit(container.crc32, seg)))
        return seg

    def sha(self, what: str, expected: str, buf) -> None:
        self.shas.append((what, expected, self.pool.submit(_sha256, buf)))

    def finish(self, failure: CorruptFile | None = None) -> None:
        for what, expected, fut in self.crcs:
            if fut.result() != expected:
                raise container.crc_error(what)
        if failure is not None:
            raise failure
        for what, expected, fut in self.shas:
            if fut.result() != expected:
                raise CorruptFile(f"{what} fails its sha256 check: the compressed file is corrupt")


def _decode_tensor(entry: dict, checks: _Checks, blob_arr: np.ndarray, chunk: int, block: int,
                   target: np.ndarray | None) -> np.ndarray:
    what = f"tensor {entry['name']!r}"
    nbytes = int(entry["end"]) - int(entry["start"])
    planes = entry["planes"]
    segs = [checks.segment(p, f"{what}, plane {j}") for j, p in enumerate(planes)]
    out = target if target is not None else np.empty(nbytes, np.uint8)
    if planes and planes[0]["mode"] == "zstd":
        if len(planes) != 1:
            raise CorruptFile(f"{what}: a zstd plane must be its only plane")
        try:  # the frame's own size field must agree before zstd allocates it
            seg = bytes(segs[0])
            if zstandard.frame_content_size(seg) not in (-1, nbytes):
                raise CorruptFile(f"{what}: its zstd frame declares another size than its header")
            raw = zstandard.ZstdDecompressor().decompress(seg, max_output_size=max(1, nbytes))
        except zstandard.ZstdError as exc:
            raise CorruptFile(f"{what}: {exc}") from None
        if len(raw) != nbytes:
            raise CorruptFile(f"{what} decodes to {len(raw):,} bytes instead of {nbytes:,}")
        out[:] = np.frombuffer(raw, np.uint8)
        return out
    item = sio.DTYPES[entry["dtype"]][1]
    n = nbytes // item
    if len(planes) != item or any(int(p["symbols"]) != n or p["mode"] not in _MODES for p in planes):
        raise CorruptFile(f"{what}: its planes do not add up to {nbytes:,} bytes")
    if n == 0:
        return out
    shared = np.zeros((item, 256), np.uint8)
    for j, p in enumerate(planes):
        if p["mode"] == "shared":
            try:
                shared[j] = _unpack_table(bytes.fromhex(p["table"]))
            except (KeyError, ValueError, TypeError):
                raise CorruptFile(f"{what}: the shared Huffman table is missing or malformed") from None
    starts = np.array([container.FIXED_SIZE + int(p["offset"]) for p in planes], np.int64)
    ends = starts + np.array([int(p["size"]) for p in planes], np.int64)
    modes = np.array([_MODES[p["mode"]] for p in planes], np.int64)
    scratch = np.empty((item, min(chunk, n)), np.uint8)
    status, j = _kernels().decode_tensor(blob_arr, n, entry["transform"] == "rotl1", chunk, block, modes, starts, ends,
                                 shared, scratch, out)
    if status:
        raise CorruptFile(f"{what}, plane {j}: {_plane_error(status)}")
    return out


def _tensors(header: dict, blob_arr: np.ndarray, checks: _Checks, progress: Progress, check: bool = True,
             dest: np.ndarray | None = None):
    """Yield (entry, raw uint8 array) per tensor; ``checks.finish`` then checks the sha256 of each
    (when ``check``). With ``dest`` (the output file's data section) tensors decode straight into it.
    """
    block = int(header.get("block", BLOCK))
    chunk = int(header.get("chunk", CHUNK))
    entries = header.get("tensors", [])
    for k, entry in enumerate(entries):
        progress(k / max(1, len(entries)), f"decompressing {entry['name']}")
        start, end = int(entry["start"]), int(entry["end"])
        try:
            if dest is not None and not (0 <= start <= end <= len(dest)):
                raise CorruptFile(f"tensor {entry['name']!r} does not fit the recorded file layout")
            raw = _decode_tensor(entry, checks, blob_arr, chunk, block, dest[start:end] if dest is not None else None)
        except CorruptFile as exc:
            checks.finish(exc)  # a CRC failure, if any, explains it better
        if check:
            checks.sha(f"tensor {entry['name']!r}", entry["sha256"], raw)
        yield entry, raw


def _decode_run(entries: list[dict], header: dict, blob_arr: np.ndarray, checks: _Checks, check: bool,
                dest: np.ndarray, done: Callable[[dict], None] | None = None) -> None:
    """Decode a run of tensors into their places in ``dest`` (the file's data section)."""
    block = int(header.get("block", BLOCK))
    chunk = int(header.get("chunk", CHUNK))
    for entry in entries:
        start, end = int(entry["start"]), int(entry["end"])
        if not 0 <= start <= end <= len(dest):
            raise CorruptFile(f"tensor {entry['name']!r} does not fit the recorded file layout")
        raw = _decode_tensor(entry, checks, blob_arr, chunk, block, dest[start:end])
        if check:
            checks.sha(f"tensor {entry['name']!r}", entry["sha256"], raw)
        if done is not None:
            done(entry)


def _decode_runs(header: dict, blob_arr: np.ndarray, checks: _Checks, progress: Progress, check: bool,
                 dest: np.ndarray, pool: ThreadPoolExecutor) -> None:
    """Decode every tensor into ``dest``: the second of two runs of about equal size on a pool thread,
    the first on this one (which reports progress); the runs write disjoint ranges of ``dest``."""
    entries = header.get("tensors", [])
    sizes = [int(e["end"]) - int(e["start"]) for e in entries]  # _validate made them non-negative ints
    runs = _runs(sizes, WRITERS)
    total, finished = max(1, sum(sizes)), [0] * max(1, len(runs))  # bytes decoded by each run

    def counter(r: int) -> Callable[[dict], None]:
        def done(entry: dict) -> None:
            finished[r] += int(entry["end"]) - int(entry["start"])
            if r == 0:  # progress is reported from this thread only
                progress(min(1.0, sum(finished) / total), f"decompressed {entry['name']}")
        return done

    others = [pool.submit(_decode_run, [entries[i] for i in r], header, blob_arr, checks, check, dest, counter(k))
              for k, r in enumerate(runs[1:], 1)]
    failure = None
    try:
        _decode_run([entries[i] for i in runs[0]] if runs else [], header, blob_arr, checks, check, dest, counter(0))
    except CorruptFile as exc:
        failure = exc
    for fut in others:  # wait for every run, whatever happened to this one: they write into dest
        try:
            fut.result()
        except CorruptFile as exc:
            failure = failure or exc
    if failure is not None:
        checks.finish(failure)  # a CRC failure, if any, explains it better


def decompress(blob: bytes | memoryview, name: str = "file", progress: Progress = _quiet,
               check: bool = True) -> bytearray:
    """The original safetensors file, byte for byte. ``check``: compare every sha256 (tensors and file).

    Two runs of tensors decode side by side (this thread and a pool thread); the CRC32s (always)
    and the sha256s are checked on the pool as the segments come.
    """
    header, payload = _open(blob, name)
    src = header["source"]
    blob_arr = np.frombuffer(blob, dtype=np.uint8)
    with ThreadPoolExecutor(2) as pool:
        checks = _Checks(payload, pool)
        prefix = checks.segment(src["prefix"], "the safetensors header")
        size = int(src["size"])
        out = bytearray(size)  # a bytearray: callers compare it with bytes, fast only between bytes-likes
        data = np.frombuffer(out, dtype=np.uint8)
        data[:len(prefix)] = np.frombuffer(prefix, np.uint8)
        data = data[len(prefix):]
        for gap in header.get("gaps", []):
            seg = checks.segment(gap, "a gap between tensors")
            start, end = int(gap["start"]), int(gap["end"])
            if not (0 <= start <= end <= len(data)) or len(seg) != end - start:
                checks.finish(CorruptFile(f"{name}: a gap between tensors does not fit the recorded file layout"))
            data[start:end] = np.frombuffer(seg, np.uint8)
        _decode_runs(header, blob_arr, checks, progress, check, data, pool)
        whole = pool.submit(_sha256, out) if check else None
        checks.finish()
        if whole is not None and whole.result() != src["sha256"]:
            raise CorruptFile(f"{name}: the restored file fails its sha256 check")
    del data
    progress(1.0, "decompressed")
    return out


def _open(blob: bytes | memoryview, name: str) -> tuple[dict, memoryview]:
    header, payload = container.unpack(blob, name)
    if header.get("format") != "lmlab-checkpoint" or "source" not in header:
        raise CorruptFile(f"{name}: the header does not describe a compressed checkpoint")
    _validate(header, len(payload), name)
    return header, payload


def _nat(value, what: str) -> int:
    if type(value) is not int or value < 0:  # bool is not a size, nor is 1.5
        raise CorruptFile(f"{what} is not a non-negative integer: {value!r:.40}")
    return value


def _seg_size(entry, payload_len: int, what: str) -> int:
    if not isinstance(entry, dict):
        raise CorruptFile(f"{what} has a malformed header entry")
    offset, size = _nat(entry.get("offset"), f"{what} offset"), _nat(entry.get("size"), f"{what} size")
    _nat(entry.get("crc32"), f"{what} crc32")
    if offset + size > payload_len:
        raise CorruptFile(f"the compressed file is truncated: {what} lies past its end")
    return size


def _validate(header: dict, payload_len: int, name: str) -> None:
    """Check every field a decoder will trust, and that the declared sizes are plausible, before any allocation.

    A hostile header could declare a terabyte-sized output; every declared size is bounded by the bytes
    that encode it (raw: 1 byte per symbol, Huffman: at least 1 bit per symbol, zstd: the frame's own
    size field) and the total by the memory this machine has free.
    """
    try:
        src = header["source"]
        _nat(header.get("block"), "the block size")
        _nat(header.get("chunk"), "the chunk size")
        if header["block"] < 1 or not 1 <= header["chunk"] <= MAX_CHUNK or not isinstance(src, dict) or not isinstance(src.get("name"), str) \
                or not isinstance(src.get("sha256"), str):
            raise CorruptFile("the header's source or block fields are malformed")
        size = _nat(src.get("size"), "the original size")
        prefix = _seg_size(src.get("prefix"), payload_len, "the safetensors header")
        if size < prefix:
            raise CorruptFile("the recorded file size is smaller than its header")
        covered = prefix
        for gap in header.get("gaps", []):
            _seg_size(gap, payload_len, "a gap between tensors")
            covered += _nat(gap.get("end"), "a gap's end") - _nat(gap.get("start"), "a gap's start")
        tensors = header.get("tensors")
        if not isinstance(tensors, list) or not isinstance(header.get("gaps", []), list):
            raise CorruptFile("the tensor list is malformed")
        for t in tensors:
            what = f"tensor {t.get('name')!r:.80}" if isinstance(t, dict) else "a tensor"
            if not isinstance(t, dict) or not isinstance(t.get("name"), str) or t.get("dtype") not in sio.DTYPES \
                    or t.get("transform") not in ("rotl1", "none") or not isinstance(t.get("sha256"), str) \
                    or not isinstance(t.get("shape"), list) or not isinstance(t.get("planes"), list):
                raise CorruptFile(f"{what} has a malformed header entry")
            nbytes = _nat(t.get("end"), f"{what} end") - _nat(t.get("start"), f"{what} start")
            numel = math.prod(_nat(d, f"{what} shape") for d in t["shape"])
            if nbytes < 0 or numel * sio.DTYPES[t["dtype"]][1] != nbytes:
                raise CorruptFile(f"{what}: its shape and byte range disagree")
            bound = 0
            for p in t["planes"]:
                seg = _seg_size(p, payload_len, what)
                symbols = _nat(p.get("symbols"), f"{what} symbol count") if isinstance(p, dict) else 0
                mode = p.get("mode")
                if mode not in ("raw", "zstd", "chunked", "shared"):
                    raise CorruptFile(f"{what}: unknown plane mode {mode!r:.40}")
                if mode == "zstd":
                    bound += symbols
                    continue
                # raw bytes take a byte per symbol, a Huffman code at least a bit, and a constant chunk
                # (its record and one byte) at most ``chunk`` symbols
                if symbols > (seg if mode == "raw" else 8 * seg + seg // (planes.RECORD + 1) * header["chunk"]):
                    raise CorruptFile(f"{what}: a plane declares {symbols:,} symbols but holds only {seg:,} bytes")
                bound += symbols
            if bound < nbytes:
                raise CorruptFile(f"{what}: its planes cannot fill its {nbytes:,} bytes")
            covered += nbytes
        if covered != size:
            raise CorruptFile(f"the recorded file size {size:,} does not match its tensors and gaps ({covered:,} bytes)")
    except CorruptFile as exc:
        raise CorruptFile(f"{name}: {exc}") from None
    except (KeyError, TypeError, AttributeError, ValueError):
        raise CorruptFile(f"{name}: the header is malformed (a field is missing or has the wrong type)") from None
    _check_memory(size, name)


def _check_memory(size: int, name: str) -> None:
    """Refuse an output larger than the memory free now (a declared size is checked before allocating it)."""
    free = psutil.virtual_memory().available
    if size > free:
        raise InputError(f"{name}: restoring needs {size / 2**30:,.1f} GiB of memory but only {free / 2**30:,.1f} GiB "
                         "are free here; restore it with the command line on a larger machine")


def decompress_tensors(blob: bytes | memoryview, name: str = "file", progress: Progress = _quiet) -> dict[str, np.ndarray]:
    """The tensors as numpy arrays (bf16 as raw uint16 bits), each checked against its sha256."""
    header, payload = _open(blob, name)
    with ThreadPoolExecutor(2) as pool:
        checks = _Checks(payload, pool)
        out = {e["name"]: raw.view(sio.DTYPES[e["dtype"]][0]).reshape(e["shape"])
               for e, raw in _tensors(header, np.frombuffer(blob, dtype=np.uint8), checks, progress)}
        checks.finish()
    return out


def inspect(blob: bytes | memoryview, name: str = "file") -> dict:
    """What the container holds, without decoding: source, sizes and the per-tensor plane modes."""
    header, payload = _open(blob, name)
    rows = []
    for e in header["tensors"]:
        coded = sum(int(p["size"]) for p in e["planes"])
        raw = int(e["end"]) - int(e["start"])
        rows.append({"name": e["name"], "dtype": e["dtype"], "shape": e["shape"], "raw_bytes": raw,
                     "coded_bytes": coded, "ratio": coded / raw if raw else 1.0,
                     "modes": "/".join(p["mode"] for p in e["planes"])})
    return {"source": header["source"]["name"], "original_bytes": header["source"]["size"],
            "original_sha256": header["source"]["sha256"], "compressed_bytes": len(blob),
            "ratio": len(blob) / max(1, header["source"]["size"]), "chunk": header["chunk"],
            "block": header["block"], "tensors": rows}


def load_source(path, dtype_view: str = "as stored") -> tuple[bytes, str]:
    """A checkpoint file as safetensors bytes: .safetensors as is, .bin through weights_only, optional cast."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path.name}: no such file")
    policy.check_checkpoint_file(path)  # public mode: no pickles
    if path.suffix == ".bin":
        data = sio.from_torch_bin(path)
    else:
        data = path.read_bytes()
    if dtype_view in ("BF16", "F16"):
        data = sio.cast(sio.parse(data, path.name), dtype_view)
    elif dtype_view not in ("as stored", "", None):
        raise InputError(f"unknown dtype view {dtype_view!r}: choose as stored, BF16 or F16")
    return data, path.name

"""Lossless checkpoint codec: floats split into byte planes, each plane Huffman-coded in chunks.

Why it works: a float's exponent byte takes few values (weights cluster around 1e-2), about 2.6 bits
of entropy in 8, while mantissa bytes are close to uniform. Rotating the bits left by one puts the
whole exponent into the top byte (sign moves to the bottom), so the top plane is the exponent plane.
Each plane is cut into chunks of ``CHUNK`` symbols; a chunk is Huffman-coded with its own table, a
table shared by the plane, or kept raw, whichever is smallest (local statistics matter: weights of
one row look alike). Other dtypes take the same byte-plane path or zstd, whichever is smaller.

    compress(data) -> (container bytes, Report)        decompress(container) -> safetensors bytes
    decompress_tensors(container) -> {name: ndarray}   inspect(container) -> summary dict

Every saving reported by ``roundtrip`` comes from decoding the container and comparing sha256.
"""

from __future__ import annotations

import hashlib
import math
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import zstandard

from models import policy
from models.compression import container, huffman
from models.compression import safetensors_io as sio
from models.errors import CorruptFile, InputError

try:
    from numba import njit
except ImportError:  # pragma: no cover
    from models.compression.huffman import njit

CHUNK = 1 << 17  # symbols per table: 128 Ki, the size that minimised MiniLM's coded size
BLOCK = 1 << 14  # symbols per independently decodable block (the lanes of a parallel decoder)
MAX_LEN = 14  # longest code: 12 costs MiniLM's exponents 0.4 % more bits, 14 only 0.15 %
TABLE_BYTES = 128  # 256 code lengths as nibbles
WORTH = 0.997  # a plane is Huffman-coded only if that saves at least 0.3 % of it
Progress = Callable[[float, str], None]


def _quiet(fraction: float, message: str) -> None:
    pass


# --- plane split / merge (compiled: one pass instead of numpy's several) ---------------------


@njit(cache=True)
def _split16(v, lo, hi):
    for i in range(v.shape[0]):
        r = ((v[i] << 1) | (v[i] >> 15)) & 0xFFFF
        lo[i] = r & 0xFF
        hi[i] = r >> 8


@njit(cache=True)
def _merge16(lo, hi, v):
    for i in range(v.shape[0]):
        r = (np.uint16(hi[i]) << 8) | np.uint16(lo[i])
        v[i] = ((r >> 1) | (r << 15)) & 0xFFFF


@njit(cache=True)
def _split32(v, p0, p1, p2, p3):
    for i in range(v.shape[0]):
        r = ((v[i] << 1) | (v[i] >> 31)) & 0xFFFFFFFF
        p0[i] = r & 0xFF
        p1[i] = (r >> 8) & 0xFF
        p2[i] = (r >> 16) & 0xFF
        p3[i] = r >> 24


@njit(cache=True)
def _merge32(p0, p1, p2, p3, v):
    for i in range(v.shape[0]):
        r = (np.uint32(p3[i]) << 24) | (np.uint32(p2[i]) << 16) | (np.uint32(p1[i]) << 8) | np.uint32(p0[i])
        v[i] = ((r >> 1) | (r << 31)) & 0xFFFFFFFF


@njit(cache=True)
def _chunk_hist(plane, chunk):
    n = plane.shape[0]
    k = (n + chunk - 1) // chunk
    out = np.zeros((k, 256), dtype=np.int64)
    sub = np.zeros((4, 256), dtype=np.int32)  # four counters break the store-to-load chain of runs
    for c in range(k):
        sub[:] = 0
        start = c * chunk
        end = min(n, start + chunk)
        i = start
        while i + 4 <= end:
            sub[0, plane[i]] += 1
            sub[1, plane[i + 1]] += 1
            sub[2, plane[i + 2]] += 1
            sub[3, plane[i + 3]] += 1
            i += 4
        while i < end:
            sub[0, plane[i]] += 1
            i += 1
        for b in range(256):
            out[c, b] = sub[0, b] + sub[1, b] + sub[2, b] + sub[3, b]
    return out


def split_planes(raw: memoryview | bytes, dtype: str) -> tuple[str, list[np.ndarray]]:
    """(transform, byte planes least significant first) of a tensor's raw little-endian bytes."""
    item = sio.DTYPES[dtype][1]
    buf = np.frombuffer(raw, dtype=np.uint8)
    n = len(buf) // item
    if dtype in ("BF16", "F16"):
        planes = [np.empty(n, np.uint8), np.empty(n, np.uint8)]
        _split16(buf.view(np.uint16), *planes)
        return "rotl1", planes
    if dtype == "F32":
        planes = [np.empty(n, np.uint8) for _ in range(4)]
        _split32(buf.view(np.uint32), *planes)
        return "rotl1", planes
    if dtype == "F64":
        v = buf.view(np.uint64)
        r = (v << np.uint64(1)) | (v >> np.uint64(63))
        return "rotl1", [np.ascontiguousarray(r.view(np.uint8).reshape(n, 8)[:, j]) for j in range(8)]
    return "none", [np.ascontiguousarray(buf.reshape(n, item)[:, j]) for j in range(item)] if item > 1 else [buf]


def merge_planes(planes: list[np.ndarray], dtype: str, transform: str, out: np.ndarray | None = None) -> np.ndarray:
    """The tensor's raw bytes (uint8) from its planes, written into ``out`` when given."""
    item = sio.DTYPES[dtype][1]
    n = len(planes[0]) if planes else 0
    if out is None:
        out = np.empty(n * item, np.uint8)
    if transform == "rotl1" and item == 2:
        _merge16(planes[0], planes[1], out.view(np.uint16))
    elif transform == "rotl1" and item == 4:
        _merge32(*planes, out.view(np.uint32))
    else:
        grid = out.reshape(n, item)
        for j, p in enumerate(planes):
            grid[:, j] = p
        if transform == "rotl1":
            r = out.view(np.uint64)
            r[:] = (r >> np.uint64(1)) | (r << np.uint64(63))
    return out


# --- one plane --------------------------------------------------------------------------------


def _pack_table(lengths: np.ndarray) -> bytes:
    ls = lengths.astype(np.uint8)
    return ((ls[0::2] << 4) | ls[1::2]).tobytes()


def _unpack_table(buf: bytes | memoryview) -> np.ndarray:
    b = np.frombuffer(buf, dtype=np.uint8)
    out = np.empty(256, np.uint8)
    out[0::2], out[1::2] = b >> 4, b & 0x0F
    return out


@dataclass
class PlaneResult:
    entry: dict
    parts: list  # buffers whose concatenation is the plane's segment (no copy until the container is packed)
    hist: np.ndarray  # histogram of the whole plane
    huff_symbols: int = 0  # symbols that went through the Huffman coder
    huff_bits: int = 0  # the bits it used for them (tables and block offsets not included)
    huff_entropy_bits: float = 0.0  # sum over those chunks of n * H(chunk)

    @property
    def size(self) -> int:
        return sum(memoryview(p).nbytes for p in self.parts)

    @property
    def segment(self) -> bytes:
        return b"".join(self.parts)


def encode_plane(plane: np.ndarray, role: str, chunk: int = CHUNK, block: int = BLOCK,
                 max_len: int = MAX_LEN) -> PlaneResult:
    """The smallest of: raw, per-chunk tables, one shared table (each chunk may still stay raw)."""
    n = len(plane)
    hists = _chunk_hist(plane, chunk) if n else np.zeros((0, 256), np.int64)
    total = hists.sum(axis=0) if n else np.zeros(256, np.int64)
    sizes = np.minimum(chunk, n - chunk * np.arange(len(hists)))
    offsets_bytes = 4 * -(-sizes // block)
    overhead = container.CHUNK_RECORD.size

    own = [huffman.code_lengths(h, max_len) for h in hists]
    own_bits = np.array([huffman.coded_bits(h, ln) for h, ln in zip(hists, own, strict=True)], dtype=np.int64)
    own_cost = np.minimum(sizes, (own_bits + 7) // 8 + TABLE_BYTES + offsets_bytes)
    shared = huffman.code_lengths(total, max_len)
    sh_bits = hists.astype(np.int64) @ shared.astype(np.int64)
    sh_cost = np.minimum(sizes, (sh_bits + 7) // 8 + offsets_bytes)
    costs = {"raw": n, "chunked": int(own_cost.sum()) + overhead * len(hists),
             "shared": TABLE_BYTES // 2 + int(sh_cost.sum()) + overhead * len(hists)}
    mode = min(costs, key=costs.get)
    if costs[mode] > WORTH * n:  # near-uniform planes (bf16/fp16 mantissas): the coding time buys nothing
        mode = "raw"
    result = PlaneResult({"role": role, "mode": mode, "symbols": n}, [], total)
    if mode == "raw":
        result.parts = [memoryview(plane)]
        return result
    if mode == "shared":  # in the header, which is deflated as a whole: similar tables cost little there
        result.entry["table"] = _pack_table(shared).hex()
    parts = []
    for k, h in enumerate(hists):
        piece = plane[k * chunk:k * chunk + int(sizes[k])]
        lengths, bits, cost = (own[k], own_bits[k], own_cost[k]) if mode == "chunked" else (shared, sh_bits[k], sh_cost[k])
        if cost >= sizes[k]:  # incompressible chunk: keep it as it is
            parts += [container.CHUNK_RECORD.pack(container.RAW, len(piece), len(piece)), memoryview(piece)]
            continue
        stream = huffman.encode(piece, lengths, block)
        body = [stream.block_bits.astype("<u4").tobytes(), stream.data]
        if mode == "chunked":
            body.insert(0, _pack_table(lengths))
        parts += [container.CHUNK_RECORD.pack(container.HUFFMAN, len(piece), sum(map(len, body))), *body]
        result.huff_symbols += len(piece)
        result.huff_bits += int(bits)
        result.huff_entropy_bits += len(piece) * huffman.entropy_bits(h)
    result.parts = parts
    return result


def decode_plane(seg: memoryview, entry: dict, block: int, what: str) -> np.ndarray:
    n = int(entry["symbols"])
    mode = entry["mode"]
    if mode == "raw":
        if len(seg) != n:
            raise CorruptFile(f"{what}: expected {n:,} raw bytes, found {len(seg):,}")
        return np.frombuffer(seg, dtype=np.uint8)
    try:
        shared = huffman.Decoder(_unpack_table(bytes.fromhex(entry["table"]))) if mode == "shared" else None
    except (KeyError, ValueError):
        raise CorruptFile(f"{what}: the shared Huffman table is missing or malformed") from None
    out = np.empty(n, np.uint8)
    pos = filled = 0
    rec = container.CHUNK_RECORD
    while filled < n:
        if pos + rec.size > len(seg):
            raise CorruptFile(f"{what}: the chunk list ends early")
        codec, count, size = rec.unpack(seg[pos:pos + rec.size])
        pos += rec.size
        body = seg[pos:pos + size]
        pos += size
        if len(body) != size or filled + count > n:
            raise CorruptFile(f"{what}: a chunk does not fit the plane")
        if codec == container.RAW:
            out[filled:filled + count] = np.frombuffer(body, np.uint8)
        elif codec == container.HUFFMAN:
            try:  # a table that breaks the Kraft inequality, or a short body, is a ValueError here
                decoder = shared
                if decoder is None:
                    decoder, body = huffman.Decoder(_unpack_table(body[:TABLE_BYTES])), body[TABLE_BYTES:]
                nblocks = -(-count // block)
                block_bits = np.frombuffer(body[:4 * nblocks], dtype="<u4").astype(np.uint64)
                stream = huffman.EncodedStream(bytes(body[4 * nblocks:]), block_bits, count, block)
                decoder.decode_into(stream, out[filled:filled + count])
            except ValueError as exc:
                raise CorruptFile(f"{what}: {exc}") from None
        else:
            raise CorruptFile(f"{what}: unknown chunk codec {codec}")
        filled += count
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
    huff_entropy_bits: float = 0.0

    @property
    def ratio(self) -> float:
        return self.coded_bytes / self.raw_bytes if self.raw_bytes else 1.0

    @property
    def huffman_overhead(self) -> float:
        """How far the Huffman coder is above the order-0 entropy of the chunks it coded (0.004 = 0.4 %)."""
        return self.huff_bits / self.huff_entropy_bits - 1 if self.huff_entropy_bits else 0.0


def _generic_zstd(raw: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(raw)


def compress(data: bytes | memoryview, name: str = "checkpoint.safetensors", progress: Progress = _quiet,
             chunk: int = CHUNK, block: int = BLOCK) -> tuple[bytes, Report]:
    """Compress a whole safetensors file held in memory: (container bytes, report)."""
    started = time.perf_counter()
    st = sio.parse(data, name)
    # the whole-file digest runs on a second thread while this one codes (hashlib releases the GIL)
    file_hash = ThreadPoolExecutor(1).submit(lambda: hashlib.sha256(data).hexdigest())
    payload: list[bytes] = []
    offset = 0

    def put(parts: list) -> dict:
        nonlocal offset
        crc = size = 0
        for part in parts:
            payload.append(part)
            crc = zlib.crc32(part, crc)
            size += memoryview(part).nbytes
        entry = {"offset": offset, "size": size, "crc32": crc}
        offset += size
        return entry

    header = {"format": "lmlab-checkpoint", "chunk": chunk, "block": block,
              "source": {"name": name, "size": st.size, "sha256": "", "prefix": put([st.prefix])},
              "gaps": [], "tensors": []}
    report = Report(name, st.size, 0, "", 0.0)
    for start, end in st.gaps():
        header["gaps"].append({"start": start, "end": end, **put([st.data[start:end]])})
    total = max(1, sum(t.nbytes for t in st.tensors))
    done = 0
    for t in st.tensors:
        progress(done / total, f"compressing {t.name}")
        raw = st.raw(t)
        entry = {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "start": t.start, "end": t.end,
                 "sha256": hashlib.sha256(raw).hexdigest()}
        transform, planes = split_planes(raw, t.dtype)
        results = [encode_plane(p, _role(t.dtype, j, len(planes)), chunk, block) for j, p in enumerate(planes)]
        coded = sum(r.size for r in results)
        if t.dtype not in sio.FLOATS and t.nbytes:
            z = _generic_zstd(bytes(raw))
            if len(z) < coded:  # integer ids and masks: repeats that only an LZ coder sees
                transform, results = "none", [PlaneResult({"role": "bytes", "mode": "zstd", "symbols": t.nbytes}, [z], np.zeros(256, np.int64))]
        entry["transform"] = transform
        entry["planes"] = [{**r.entry, **put(r.parts)} for r in results]
        header["tensors"].append(entry)
        exp_h = results[-1].hist if transform == "rotl1" else None
        if exp_h is not None and t.numel:
            acc = report.exponent_hist.setdefault(t.dtype, np.zeros(256, np.int64))
            acc += exp_h
        for r in results:
            report.huff_symbols += r.huff_symbols
            report.huff_bits += r.huff_bits
            report.huff_entropy_bits += r.huff_entropy_bits
        report.rows.append(TensorRow(t.name, t.dtype, t.shape, t.nbytes, sum(r.size for r in results),
                                     huffman.entropy_bits(exp_h) if exp_h is not None else None,
                                     "/".join(r.entry["mode"] for r in results)))
        done += t.nbytes
    header["source"]["sha256"] = report.sha256 = file_hash.result()
    out = container.pack(header, payload)
    report.coded_bytes = len(out)
    report.seconds = time.perf_counter() - started
    progress(1.0, "compressed")
    return out, report


def _role(dtype: str, j: int, nplanes: int) -> str:
    if dtype not in sio.FLOATS:
        return "bytes"
    return "exponent" if j == nplanes - 1 else "mantissa"


def _tensors(header: dict, payload: memoryview, progress: Progress, check: bool = True, dest: np.ndarray | None = None):
    """Yield (entry, raw uint8 array) per tensor, each checked against its sha256 when ``check``.

    With ``dest`` (the data section of the output file) tensors are decoded straight into it.
    """
    block = int(header.get("block", BLOCK))
    entries = header.get("tensors", [])
    for k, entry in enumerate(entries):
        progress(k / max(1, len(entries)), f"decompressing {entry['name']}")
        what = f"tensor {entry['name']!r}"
        start, end = int(entry["start"]), int(entry["end"])
        if dest is not None and not (0 <= start <= end <= len(dest)):
            raise CorruptFile(f"{what} does not fit the recorded file layout")
        target = dest[start:end] if dest is not None else None
        planes = []
        for j, p in enumerate(entry["planes"]):
            seg = container.segment(payload, p, f"{what}, plane {j}")
            if p["mode"] == "zstd":
                try:  # the frame's own size field must agree before zstd allocates it
                    if zstandard.frame_content_size(bytes(seg)) not in (-1, int(p["symbols"])):
                        raise CorruptFile(f"{what}: its zstd frame declares another size than its header")
                    planes.append(np.frombuffer(zstandard.ZstdDecompressor().decompress(
                        bytes(seg), max_output_size=int(p["symbols"])), np.uint8))
                except zstandard.ZstdError as exc:
                    raise CorruptFile(f"{what}: {exc}") from None
            else:
                planes.append(decode_plane(seg, p, block, f"{what}, plane {j}"))
        item = sio.DTYPES.get(entry["dtype"], (None, 0))[1]
        sizes = {len(p) for p in planes}
        if entry["planes"] and entry["planes"][0]["mode"] == "zstd":
            raw = planes[0]
        elif len(sizes) > 1 or not item or (planes and len(planes) * next(iter(sizes)) != end - start):
            raise CorruptFile(f"{what}: its planes do not add up to {end - start:,} bytes")
        else:
            raw = merge_planes(planes, entry["dtype"], entry["transform"], target) if planes else np.zeros(0, np.uint8)
        if len(raw) != end - start:
            raise CorruptFile(f"{what} decodes to {len(raw):,} bytes instead of {end - start:,}")
        if target is not None and raw is not target:
            target[:] = raw
        if check and hashlib.sha256(raw).hexdigest() != entry["sha256"]:
            raise CorruptFile(f"{what} fails its sha256 check: the compressed file is corrupt")
        yield entry, raw


def decompress(blob: bytes | memoryview, name: str = "file", progress: Progress = _quiet,
               check: bool = True) -> bytearray:
    """The original safetensors file, byte for byte. ``check``: compare every sha256 (tensors and file)."""
    header, payload = _open(blob, name)
    src = header["source"]
    prefix = container.segment(payload, src["prefix"], "the safetensors header")
    size = int(src["size"])
    if size < len(prefix):
        raise CorruptFile(f"{name}: the recorded file size is smaller than its header")
    out = bytearray(size)
    out[:len(prefix)] = prefix
    data = np.frombuffer(out, dtype=np.uint8)[len(prefix):]
    for gap in header.get("gaps", []):
        seg = container.segment(payload, gap, "a gap between tensors")
        start, end = int(gap["start"]), int(gap["end"])
        if not (0 <= start <= end <= len(data)) or len(seg) != end - start:
            raise CorruptFile(f"{name}: a gap between tensors does not fit the recorded file layout")
        data[start:end] = np.frombuffer(seg, np.uint8)
    for _ in _tensors(header, payload, progress, check, data):
        pass
    del data  # release the export so the bytearray can become bytes without a copy
    if check and hashlib.sha256(out).hexdigest() != src["sha256"]:
        raise CorruptFile(f"{name}: the restored file fails its sha256 check")
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
        if header["block"] < 1 or not isinstance(src, dict) or not isinstance(src.get("name"), str) \
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
                # a Huffman code spends at least one bit per symbol; raw bytes one byte
                if symbols > (seg if mode == "raw" else 8 * seg):
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
    import psutil

    free = psutil.virtual_memory().available
    if size > free:
        raise InputError(f"{name}: restoring needs {size / 2**30:,.1f} GiB of memory but only {free / 2**30:,.1f} GiB "
                         "are free here; restore it with the command line on a larger machine")


def decompress_tensors(blob: bytes | memoryview, name: str = "file", progress: Progress = _quiet) -> dict[str, np.ndarray]:
    """The tensors as numpy arrays (bf16 as raw uint16 bits), each checked against its sha256."""
    header, payload = _open(blob, name)
    return {e["name"]: raw.view(sio.DTYPES[e["dtype"]][0]).reshape(e["shape"]) for e, raw in _tensors(header, payload, progress)}


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
    from pathlib import Path

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

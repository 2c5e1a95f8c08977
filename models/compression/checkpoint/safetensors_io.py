"""A strict reader of the safetensors layout that keeps every byte, so a file can be rebuilt exactly.

Layout: 8-byte little-endian header length N, N bytes of JSON (``{name: {dtype, shape,
data_offsets: [start, end]}, "__metadata__": {...}}``, often space-padded), then the data section.
Offsets are relative to the data section. Anything that does not add up is rejected with a message
that names the problem; bytes that no tensor covers are kept as gaps.
"""

from __future__ import annotations

import io
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.core.errors import CorruptFile, InputError

# safetensors dtype -> (numpy dtype of the raw elements, bytes per element)
DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("<f8", 8), "F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2),
    "I64": ("<i8", 8), "I32": ("<i4", 4), "I16": ("<i2", 2), "I8": ("i1", 1),
    "U64": ("<u8", 8), "U32": ("<u4", 4), "U16": ("<u2", 2), "U8": ("u1", 1), "BOOL": ("?", 1),
    "F8_E4M3": ("u1", 1), "F8_E5M2": ("u1", 1),
}
FLOATS = {"F32", "F16", "BF16", "F64"}
MAX_HEADER = 100 * 2**20  # what the safetensors library accepts


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # offsets in the data section
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class Safetensors:
    prefix: bytes  # the 8-byte length and the header exactly as stored (padding included)
    metadata: dict
    tensors: list[TensorEntry]  # in data-section order
    data: memoryview  # the data section

    @property
    def size(self) -> int:
        return len(self.prefix) + len(self.data)

    def raw(self, entry: TensorEntry) -> memoryview:
        return self.data[entry.start:entry.end]

    def gaps(self) -> list[tuple[int, int]]:
        """Data-section ranges no tensor covers (kept so the rebuilt file is byte-identical)."""
        out, cursor = [], 0
        for t in self.tensors:
            if t.start > cursor:
                out.append((cursor, t.start))
            cursor = max(cursor, t.end)
        if cursor < len(self.data):
            out.append((cursor, len(self.data)))
        return out


def parse(buf: bytes | bytearray | memoryview, name: str = "file") -> Safetensors:
    """Parse a whole safetensors file held in memory; raises CorruptFile naming the problem."""
    view = memoryview(buf)
    if len(view) < 8:
        raise CorruptFile(f"{name} is not a safetensors checkpoint: only {len(view)} bytes")
    (n,) = struct.unpack("<Q", view[:8])
    if n > len(view) - 8:
        raise CorruptFile(f"{name} is not a safetensors checkpoint (or is truncated): header length {n:,} "
                          f"exceeds the file size {len(view):,}")
    if n > MAX_HEADER or n < 2:
        raise CorruptFile(f"{name} is not a safetensors checkpoint: implausible header length {n:,}")
    try:
        header = json.loads(bytes(view[8:8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CorruptFile(f"{name} is not a safetensors checkpoint: its header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CorruptFile(f"{name} is not a safetensors checkpoint: its header is not a JSON object")
    data = view[8 + n:]
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CorruptFile(f"{name}: its __metadata__ must map names to strings")
    tensors = []
    for tname, info in header.items():
        try:
            dtype, shape, (start, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
            if not isinstance(info["shape"], list) or not all(type(s) is int for s in shape):
                raise TypeError
        except (KeyError, TypeError, ValueError):
            raise CorruptFile(f"{name}: tensor {tname!r} has a malformed header entry") from None
        if dtype not in DTYPES:
            raise CorruptFile(f"{name}: tensor {tname!r} has unsupported dtype {dtype!r}")
        if not (type(start) is int and type(end) is int and 0 <= start <= end):
            raise CorruptFile(f"{name}: tensor {tname!r} has invalid data offsets {start}..{end}")
        if end > len(data):
            raise CorruptFile(f"{name} is truncated: tensor {tname!r} ends at byte {end:,} of the data section, "
                              f"which has only {len(data):,} bytes")
        # math.prod: Python integers, where numpy's int64 product could wrap to a matching size
        if any(s < 0 for s in shape) or math.prod(shape) * DTYPES[dtype][1] != end - start:
            raise CorruptFile(f"{name}: tensor {tname!r} of shape {list(shape)} {dtype} does not fill its "
                              f"{end - start:,} bytes")
        tensors.append(TensorEntry(tname, dtype, shape, start, end))
    tensors.sort(key=lambda t: (t.start, t.end))
    for a, b in zip(tensors, tensors[1:], strict=False):
        if b.start < a.end:
            raise CorruptFile(f"{name}: tensors {a.name!r} and {b.name!r} overlap")
    return Safetensors(bytes(view[:8 + n]), metadata, tensors, data)


def read(path: Path) -> Safetensors:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path.name}: no such file")
    return parse(path.read_bytes(), path.name)


def array(st: Safetensors, entry: TensorEntry) -> np.ndarray:
    """The tensor as a numpy array (bf16 as its raw uint16 bits)."""
    return np.frombuffer(st.raw(entry), dtype=DTYPES[entry.dtype][0]).reshape(entry.shape)


def from_torch_bin(path: Path) -> bytes:
    """A PyTorch ``.bin`` state dict, loaded with ``weights_only=True``, as safetensors bytes."""
    import torch  # late: torch is heavy and only this path needs it
    from safetensors.torch import save  # late: torch is heavy and only this path needs it

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, refused globals
        raise CorruptFile(f"{Path(path).name} is not a PyTorch state dict that loads safely: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    tensors = {k: v.contiguous().clone() for k, v in state.items() if isinstance(v, torch.Tensor)} if isinstance(state, dict) else {}
    if not tensors:
        raise InputError(f"{Path(path).name} holds no tensors")
    return save(tensors)


def cast(st: Safetensors, dtype: str) -> bytes:
    """The same checkpoint with every float tensor cast to ``dtype`` (BF16 or F16), as safetensors bytes."""
    import torch  # late: torch is heavy and only this path needs it
    from safetensors.torch import save  # late: torch is heavy and only this path needs it

    target = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}[dtype]
    out = {}
    for entry in st.tensors:
        raw = bytes(st.raw(entry))
        if entry.dtype == "BF16":
            t = torch.frombuffer(bytearray(raw), dtype=torch.int16).view(torch.bfloat16) if raw else torch.zeros(0, dtype=torch.bfloat16)
        else:
            t = torch.from_numpy(np.frombuffer(raw, dtype=DTYPES[entry.dtype][0]).copy()) if entry.dtype != "BOOL" \
                else torch.from_numpy(np.frombuffer(raw, dtype=bool).copy())
        t = t.reshape(entry.shape)
        out[entry.name] = t.to(target) if entry.dtype in FLOATS else t
    return save(out, metadata={str(k): str(v) for k, v in st.metadata.items()} or None)


def to_file_bytes(st: Safetensors) -> bytes:
    buf = io.BytesIO()
    buf.write(st.prefix)
    buf.write(st.data)
    return buf.getvalue()

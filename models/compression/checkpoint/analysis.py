"""What the Compress tab and the CLI ask of the checkpoint codec: pick a checkpoint, analyse it
(Huffman statistics, per-tensor savings, baselines, all verified by a round-trip), and turn files
into compressed files and back, atomically and under the data folder.
"""

from __future__ import annotations

import hashlib
import lzma
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zstandard

from models.compression import huffman
from models.compression.checkpoint import codec as checkpoint
from models.compression.checkpoint import container
from models.core import assets, handout, registry, settings
from models.core.errors import CorruptFile, InputError
from models.core.filenames import safe_name

Progress = Callable[[float, str], None]
DTYPE_VIEWS = ("as stored", "BF16", "F16")
SLOW_SAMPLE_BYTES = 16 * 2**20  # slow baselines (zlib -9, LZMA, zstd -19) run on a sample this large


def _quiet(fraction: float, message: str) -> None:
    pass


# --- which checkpoints --------------------------------------------------------------------------


def sources() -> list[tuple[str, str]]:
    """(label, path) of every local checkpoint: embedded models and fine-tuned runs with model.safetensors."""
    out, seen = [], set()
    specs = [("MiniLM-L6-v2 (embedded, fp32)", "embedded", "all-minilm-l6-v2")]
    for task in (registry.CAUSAL_LM, registry.TOKEN_CLASSIFICATION):
        for spec in registry.catalogue(task):
            if spec.source != "hub":
                specs.append((spec.label, spec.source, spec))
    for label, _source, ref in specs:
        try:
            if isinstance(ref, str) or ref.source == "embedded":  # offered once fetched; never fetched here
                key = ref if isinstance(ref, str) else ref.location
                if not assets.is_ready(key):
                    continue
                folder = assets.path(key)
                folder = folder / "model" if (folder / "model").is_dir() else folder
            else:
                folder = ref.local_dir()
        except Exception:  # an asset that cannot be fetched offline is simply not offered
            continue
        if folder is None:
            continue
        for name in ("model.safetensors", "adapter_model.safetensors"):  # a LoRA run's folder holds its adapter
            file = Path(folder) / name
            if file.is_file() and str(file) not in seen:
                seen.add(str(file))
                out.append((label + (" (LoRA adapter weights)" if name.startswith("adapter") else ""), str(file)))
                break
    return out


def allowed_source(path: str) -> Path:
    """Only a listed checkpoint may be read by name (uploads arrive as files, not as names)."""
    if str(path) in {p for _, p in sources()}:
        return Path(path)
    raise InputError(f"{Path(str(path)).name}: choose a checkpoint from the list or upload a .safetensors file")


# --- analysis ---------------------------------------------------------------------------------------


@dataclass
class Baseline:
    name: str
    coded_bytes: int  # for the whole checkpoint (estimated from the sample when `sampled`)
    ratio: float
    compress_mbs: float
    decompress_mbs: float
    verified: bool
    sampled: bool = False
    note: str = ""


@dataclass
class Analysis:
    name: str
    dtype_view: str
    report: checkpoint.Report
    stats: huffman.HuffmanStats  # of the exponent plane's histogram over the whole checkpoint
    stats_dtype: str
    exponent_hist: np.ndarray
    baselines: list[Baseline] = field(default_factory=list)
    sha256: str = ""
    verified: bool = False
    compressed_path: Path | None = None
    decompress_seconds: float = 0.0


def _timed(fn, *args):
    started = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - started


def _sample(data: bytes, limit: int) -> bytes:
    """Evenly spaced 1 MiB pieces of the data, ``limit`` bytes in all (the whole thing when smaller)."""
    if len(data) <= limit:
        return data
    piece = 2**20
    starts = np.linspace(0, len(data) - piece, limit // piece).astype(np.int64)
    return b"".join(data[s:s + piece] for s in starts)


def _byte_huffman(data: bytes) -> tuple[bytes, Callable[[bytes], bytes]]:
    plane = np.frombuffer(data, dtype=np.uint8)
    res = checkpoint.encode_plane(plane, "bytes")
    entry = res.entry
    return res.segment, lambda seg: checkpoint.decode_plane(memoryview(seg), entry, checkpoint.BLOCK, "bytes").tobytes()


def baselines(data: bytes, progress: Progress = _quiet, sample_bytes: int = SLOW_SAMPLE_BYTES) -> list[Baseline]:
    """General-purpose codecs on the same bytes, each decoded and compared."""
    sample = _sample(data, sample_bytes)
    methods = [
        ("zstd -3", False, lambda b: zstandard.ZstdCompressor(level=3).compress(b), zstandard.ZstdDecompressor().decompress),
        ("byte Huffman (no planes)", False, None, None),
        ("zlib -9 (deflate)", True, lambda b: zlib.compress(b, 9), zlib.decompress),
        ("LZMA", True, lambda b: lzma.compress(b, preset=6), lzma.decompress),
        ("zstd -19", True, lambda b: zstandard.ZstdCompressor(level=19).compress(b), zstandard.ZstdDecompressor().decompress),
    ]
    out = []
    for k, (name, slow, enc, dec) in enumerate(methods):
        progress(k / len(methods), f"baseline {name}")
        src = sample if slow else data
        if enc is None:
            (coded, dec), tc = _timed(_byte_huffman, src)
        else:
            coded, tc = _timed(enc, src)
        back, td = _timed(dec, coded)
        ok = bytes(back) == src
        ratio = len(coded) / max(1, len(src))
        out.append(Baseline(name, round(ratio * len(data)), ratio, len(src) / 1e6 / max(tc, 1e-9),
                            len(src) / 1e6 / max(td, 1e-9), ok, slow and src is not data,
                            f"measured on a {len(src) / 2**20:.0f} MiB sample" if slow and src is not data else ""))
    return out


def analyse(path: str | Path, dtype_view: str = "as stored", with_baselines: bool = True,
            progress: Progress = _quiet) -> Analysis:
    """Compress, decompress and compare; statistics and baselines for the same bytes."""
    if dtype_view not in DTYPE_VIEWS:
        raise InputError(f"unknown dtype view {dtype_view!r}; choose one of {', '.join(DTYPE_VIEWS)}")
    progress(0.0, "reading the checkpoint")
    data, name = checkpoint.load_source(path, dtype_view)
    blob, report = checkpoint.compress(data, name, lambda f, m: progress(0.05 + 0.4 * f, m))
    back, seconds = _timed(checkpoint.decompress, blob, name, lambda f, m: progress(0.45 + 0.15 * f, m))
    sha = hashlib.sha256(back).hexdigest()
    if back != data or sha != report.sha256:
        raise CorruptFile("the round-trip did not give back the same bytes; no saving is reported")
    stem = safe_name(Path(name).stem, "checkpoint") + ("" if dtype_view == "as stored" else f"-{dtype_view.lower()}")
    out = handout.new_folder() / f"{stem}{container.SUFFIX}"  # the visitor's download: an unguessable folder
    settings.atomic_write_bytes(out, blob)
    if report.exponent_hist:
        stats_dtype = max(report.exponent_hist, key=lambda d: report.exponent_hist[d].sum())
        hist = report.exponent_hist[stats_dtype]
    else:
        stats_dtype, hist = "", np.zeros(256, np.int64)
    stats = huffman.stats(hist, huffman.code_lengths(hist, checkpoint.MAX_LEN), top=20)
    result = Analysis(name, dtype_view, report, stats, stats_dtype, hist, sha256=sha,
                      verified=True, compressed_path=out, decompress_seconds=seconds)
    if with_baselines:
        result.baselines = baselines(data, lambda f, m: progress(0.6 + 0.4 * f, m))
    progress(1.0, "done")
    return result


# --- files -----------------------------------------------------------------------------------------


def compress_file(src: str | Path, dst: str | Path | None = None, dtype_view: str = "as stored",
                  verify: bool = True, progress: Progress = _quiet) -> tuple[Path, checkpoint.Report]:
    """Compress a checkpoint to ``dst`` (default: beside it with .lmhz), checking the round-trip first."""
    data, name = checkpoint.load_source(src, dtype_view)
    blob, report = checkpoint.compress(data, name, lambda f, m: progress(0.8 * f if verify else f, m))
    if verify and checkpoint.decompress(blob, name, lambda f, m: progress(0.8 + 0.2 * f, m)) != data:
        raise CorruptFile("the round-trip did not give back the same bytes; nothing was written")
    dst = Path(dst) if dst else Path(src).with_suffix(container.SUFFIX)
    settings.atomic_write_bytes(dst, blob)
    return dst, report


def decompress_file(src: str | Path, dst: str | Path | None = None, progress: Progress = _quiet,
                    folder: str | Path | None = None) -> Path:
    """Restore the safetensors file (every sha256 checked before anything is written).

    ``dst`` default: the name recorded in the file, in ``folder`` (default: ``restored/`` in the data folder).
    """
    src = Path(src)
    if not src.is_file():
        raise InputError(f"{src.name}: no such file")
    blob = src.read_bytes()
    data = checkpoint.decompress(blob, src.name, progress)
    if dst is None:
        header, _ = container.unpack(blob, src.name)
        # the recorded name is a stranger's: one safe component, never a path
        dst = Path(folder or settings.home() / "restored") / safe_name(header["source"]["name"], "restored.safetensors")
    dst = Path(dst)
    settings.atomic_write_bytes(dst, data)
    return dst


def verify_file(src: str | Path, original: str | Path | None = None, progress: Progress = _quiet) -> dict:
    """Decode everything, check every CRC32 and sha256; compare with ``original`` when given."""
    src = Path(src)
    if not src.is_file():
        raise InputError(f"{src.name}: no such file")
    blob = src.read_bytes()
    data, seconds = _timed(checkpoint.decompress, blob, src.name, progress)
    info = checkpoint.inspect(blob, src.name)
    result = {"ok": True, "sha256": hashlib.sha256(data).hexdigest(), "original_bytes": len(data),
              "compressed_bytes": len(blob), "ratio": len(blob) / max(1, len(data)), "seconds": seconds,
              "source": info["source"]}
    if original is not None:
        ref = Path(original).read_bytes()
        result["matches_original"] = ref == data
        result["ok"] = ref == data
    return result

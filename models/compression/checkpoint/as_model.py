"""A compressed checkpoint (.lmhz) as a model the pickers offer, decompressed in memory when it loads.

The Compress tab writes a .lmhz file for the visitor to download; "use as a model" (``use_as_model``)
copies it into ``registry.compressed_dir()``, where ``specs`` finds it: a file whose original is the
weights file of a local model of the task (same size and sha256) loads with that model's config and
tokenizer. The registry knows nothing of this codec: ``install()`` (called by the app at start-up)
registers these functions with it.
"""

from __future__ import annotations

import hashlib
import mmap
import threading
from pathlib import Path

from models.compression.checkpoint import codec as checkpoint
from models.compression.checkpoint import container
from models.core import assets, registry, settings
from models.core.errors import InputError
from models.core.filenames import safe_name

SOURCE = "lmhz"

_sha_cache: dict[tuple[str, int, int], str] = {}
_sha_lock = threading.Lock()


def _file_sha256(path: Path) -> str:
    """sha256 of a local checkpoint, cached by (path, size, mtime): the pickers ask often."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _sha_lock:
        if key not in _sha_cache:
            digest = hashlib.sha256()
            with path.open("rb") as fh:
                while block := fh.read(1 << 22):
                    digest.update(block)
            _sha_cache[key] = digest.hexdigest()
        return _sha_cache[key]


def source_of(path: Path) -> dict:
    """The original file's name, size and sha256 from a .lmhz header (read from the file's end only)."""
    with Path(path).open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        header, payload = container.unpack(memoryview(mm), Path(path).name)
        source = dict(header.get("source") or {})
        del payload, header
    return source


def _weights_by_size(bases: list[registry.ModelSpec]) -> dict[int, list[tuple[registry.ModelSpec, Path]]]:
    by_size: dict[int, list[tuple[registry.ModelSpec, Path]]] = {}
    for base in bases:
        if base.source in ("hub", SOURCE) or (base.source == "embedded" and not assets.is_ready(base.location)):
            continue
        local = base.local_dir()
        weights = local / "model.safetensors" if local else None
        if weights is not None and weights.is_file():
            by_size.setdefault(weights.stat().st_size, []).append((base, weights))
    return by_size


def _base_for(path: Path, bases: list[registry.ModelSpec]) -> registry.ModelSpec | None:
    source = source_of(path)
    for base, weights in _weights_by_size(bases).get(int(source.get("size", -1)), []):
        if _file_sha256(weights) == source.get("sha256"):
            return base
    return None


def _spec(path: Path, base: registry.ModelSpec, task: str) -> registry.ModelSpec:
    mb, original = path.stat().st_size / 1e6, int(source_of(path)["size"]) / 1e6
    return registry.ModelSpec(f"{SOURCE}:{path.name}", f"{base.label.split(' (')[0]} from {path.name} "
                              f"(compressed, {mb:,.0f} MB of {original:,.0f} MB)", task, SOURCE, str(path),
                              base.licence, base.key)


def specs(task: str, bases: list[registry.ModelSpec]) -> list[registry.ModelSpec]:
    """The .lmhz files in ``registry.compressed_dir()`` whose original is the weights of one of ``bases``."""
    folder = registry.compressed_dir()
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.lmhz")):
        try:
            base = _base_for(path, bases)
            if base is not None:
                out.append(_spec(path, base, task))
        except Exception:  # a damaged or foreign file is simply not offered
            continue
    return out


def weights(spec: registry.ModelSpec) -> dict:
    """The state dict of a compressed checkpoint, decompressed in memory (every tensor's sha256 and the whole
    file's checked: CorruptFile on any difference)."""
    from safetensors.torch import load as load_safetensors  # late: torch is heavy and only this path needs it

    path = Path(spec.location)
    return load_safetensors(bytes(checkpoint.decompress(path.read_bytes(), path.name)))


def _sizes(path: Path) -> str:
    size, original = path.stat().st_size, int(source_of(path).get("size", 0))
    return (f"{path.name}: {size / 1e6:,.1f} MB compressed, {original / 1e6:,.1f} MB original "
            f"({size / max(original, 1):.1%})")


def describe(spec: registry.ModelSpec, loaded: bool) -> str:
    """What the UI says of a model run from a .lmhz file, before and after it loads."""
    if loaded:
        return f"loaded from {_sizes(Path(spec.location))}, decompressed in memory, sha256 verified"
    return f"Runs from {_sizes(Path(spec.location))}; decompressed in memory and sha256-checked when it loads"


def install() -> None:
    """Let the registry offer and load .lmhz files (the app calls this once at start-up)."""
    registry.add_derived_source(SOURCE, specs, weights, describe)


def use_as_model(path: str | Path) -> registry.ModelSpec:
    """Offer a .lmhz file made by the Compress tab as a model: checked, then copied (atomically) into
    ``registry.compressed_dir()``, where every session's pickers find it. Returns its spec (key, label, task).

    InputError when the file is not a compressed checkpoint, or its original is not the weights file of a
    model here (only then are a config and a tokenizer known to run it).
    """
    path = Path(path)
    try:
        source_of(path)
    except Exception as exc:
        raise InputError(f"{path.name} is not a compressed checkpoint made by the Compress tab ({exc})") from exc
    for task in (registry.CAUSAL_LM, registry.TOKEN_CLASSIFICATION):
        bases = [s for s in registry.catalogue(task) if s.source != SOURCE]
        base = _base_for(path, bases)
        if base is None:
            continue
        # named by the model and the file's content: the same file used twice is one entry
        name = safe_name(f"{Path(base.location).name}-{_file_sha256(path)[:8]}", "model", ".lmhz")
        target = registry.compressed_dir() / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            settings.atomic_write_bytes(target, path.read_bytes())
        return _spec(target, base, task)
    raise InputError(f"{path.name} holds a compressed copy of a file that is not the weights of any model here "
                     f"(an embedded model, a local model folder or a fine-tuned run), so there is no configuration "
                     f"and tokenizer to run it with; it can still be downloaded and restored")

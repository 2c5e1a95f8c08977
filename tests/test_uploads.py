"""Upload limits and download names: an oversized upload gets a clear message; files offered for download
have plain, safe names."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

import app

LIMIT = 200 * 1024**2


def test_launch_sets_the_upload_limit():
    assert app.launch_kwargs()["max_file_size"] == "200mb"


def test_the_page_knows_the_limit(app_url):
    """The browser checks the size before sending (and says so); the config carries the limit."""
    config = httpx.get(app_url + "config", timeout=30).json()
    assert config["max_file_size"] == LIMIT


def _multipart(total: int, boundary: str = "lmlabboundary"):
    yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.safetensors\"\r\n"
           "Content-Type: application/octet-stream\r\n\r\n").encode()
    chunk = bytes(4 * 2**20)
    sent = 0
    while sent < total:
        piece = chunk[: min(len(chunk), total - sent)]
        sent += len(piece)
        yield piece
    yield f"\r\n--{boundary}--\r\n".encode()


def test_oversized_upload_is_refused_with_a_clear_message(app_url):
    """201 MiB sent straight to the upload route (what a script would do): 413 and a sentence saying why."""
    headers = {"Content-Type": "multipart/form-data; boundary=lmlabboundary"}
    try:
        resp = httpx.post(app_url + "gradio_api/upload", content=_multipart(LIMIT + 2**20), headers=headers, timeout=120)
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError) as exc:  # the server may hang up early
        pytest.fail(f"the server dropped the connection instead of answering: {exc}")
    assert resp.status_code == 413
    assert re.search(r"File size exceeded maximum allowed size of 209715200 bytes", resp.text), resp.text


def test_small_upload_is_accepted(app_url):
    headers = {"Content-Type": "multipart/form-data; boundary=lmlabboundary"}
    resp = httpx.post(app_url + "gradio_api/upload", content=_multipart(1024), headers=headers, timeout=60)
    assert resp.status_code == 200 and Path(resp.json()[0]).name == "big.safetensors"


def test_download_names_are_plain(tmp_path):
    """An upload called 'my model (copy) ü.safetensors' is offered back under a plain ASCII name."""
    import torch
    from safetensors.torch import save

    from models.compression.checkpoint import analysis as ca

    src = tmp_path / "my model (copy) ü;rm -rf.safetensors"
    src.write_bytes(save({"w": torch.zeros(64)}))
    result = ca.analyse(src, with_baselines=False)
    assert re.fullmatch(r"[A-Za-z0-9._+-]+\.lmhz", result.compressed_path.name), result.compressed_path.name
    restored = ca.decompress_file(result.compressed_path)
    assert re.fullmatch(r"[A-Za-z0-9._+-]+\.safetensors", restored.name) and restored.read_bytes() == src.read_bytes()


def test_files_written_under_the_data_folder_can_be_downloaded():
    """Every download (compressed files, restored files, NER outputs, model zips) lives under the data folder's
    downloads/ (not /tmp on a real install): gradio hands it out only when launch() allows it, and nothing
    else of the data folder is allowed (tests/test_public_mode.py)."""
    from models.core import handout, settings

    assert app.launch_kwargs()["allowed_paths"] == [str(handout.root())]
    assert handout.root().is_relative_to(settings.home())

"""The Checkpoint half of the Compress tab, through the API and in a browser."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save

from models.compression.checkpoint import analysis as ca


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    rng = np.random.default_rng(5)
    path = tmp_path_factory.mktemp("ck") / "small.safetensors"
    path.write_bytes(save({"w": torch.from_numpy(rng.normal(0, 0.02, size=(300, 200)).astype(np.float32)),
                           "ids": torch.arange(100)}))
    return path


def test_api_compress_and_restore(client, small_file):
    from gradio_client import handle_file

    out = client.predict(None, handle_file(str(small_file)), "BF16", api_name="/compress_checkpoint")
    status, stats, *_plots, codes, tensors, _base_plot, base_rows, download = out
    assert "verified bit-exact" in status and "sha256" in status
    assert "entropy H" in stats and "Kraft sum" in stats
    assert {row[0] for row in tensors["data"]} == {"w", "ids"}
    codecs = {row[0] for row in base_rows["data"]}
    assert {"zstd -3", "zlib -9 (deflate)", "LZMA", "zstd -19", "byte Huffman (no planes)", "this codec"} <= codecs
    assert all(row[5] != "NO" for row in base_rows["data"])
    restored, message = client.predict(handle_file(download), api_name="/decompress_checkpoint")
    assert "every CRC32 and sha256 matched" in message
    from safetensors.torch import load_file

    back = load_file(restored)
    assert back["w"].dtype == torch.bfloat16 and back["ids"].tolist() == list(range(100))  # the bf16 view was stored


def test_api_inspect_embedded_minilm(client):
    minilm = next(path for label, path in ca.sources() if "MiniLM" in label)
    status, stats, *_rest = client.predict(minilm, None, "as stored", api_name="/inspect_checkpoint")
    assert "verified bit-exact" in status and "90.87 MB" in status
    assert "F32" in stats


def test_api_bad_inputs_are_clear_errors(client, tmp_path):
    from gradio_client import handle_file

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(Exception, match="not a safetensors checkpoint"):
        client.predict(None, handle_file(str(junk)), "as stored", api_name="/inspect_checkpoint")
    with pytest.raises(Exception, match="not in the list of choices|choose a checkpoint from the list"):
        client.predict("/etc/passwd", None, "as stored", api_name="/inspect_checkpoint")
    bad = tmp_path / "bad.lmhz"
    bad.write_bytes(b"LMLABHZ\x01" + b"\x00" * 40)
    with pytest.raises(Exception, match="version|truncated|CRC32"):
        client.predict(handle_file(str(bad)), api_name="/decompress_checkpoint")


@pytest.mark.browser
def test_browser_compress_tab_shows_statistics(page, screenshot_dir):
    page.get_by_role("tab", name="Checkpoints", exact=True).click()
    page.locator("#ck-inspect").click()
    page.get_by_text("verified bit-exact").wait_for(timeout=240_000)
    page.get_by_text("entropy H").first.wait_for()
    page.locator("#ck-tree-plot .plot-container").first.wait_for()
    assert page.locator("#ck-tensors").get_by_text("embeddings.word_embeddings.weight").count() >= 1
    page.locator("#ck-status").evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(500)
    page.screenshot(path=str(screenshot_dir / "compress_checkpoint.png"), full_page=False)
    page.locator("#ck-tree-plot").evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(500)
    page.screenshot(path=str(screenshot_dir / "compress_checkpoint_tree.png"), full_page=False)


def test_fine_tuned_runs_are_offered(tmp_path, small_file):
    from models.core import registry

    run = tmp_path / "runs" / "ner-1" / "model"
    run.mkdir(parents=True)
    (run / "model.safetensors").write_bytes(small_file.read_bytes())

    def provider(task):
        if task != registry.TOKEN_CLASSIFICATION:
            return []
        return [registry.ModelSpec("run:ner-1", "ner-1 (fine-tuned run)", task, "run", str(run))]

    registry.add_provider(provider)
    try:
        listed = dict(ca.sources())
        assert listed["ner-1 (fine-tuned run)"] == str(run / "model.safetensors")
        assert ca.allowed_source(str(run / "model.safetensors")) == run / "model.safetensors"
    finally:
        registry._providers.remove(provider)
    with pytest.raises(Exception, match="choose a checkpoint"):
        ca.allowed_source(str(run / "model.safetensors"))

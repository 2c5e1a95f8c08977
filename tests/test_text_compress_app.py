"""The Text half of the Compress tab through the API and in a browser (embedded SmolLM2)."""

from __future__ import annotations

import pytest

MODEL = "smollm2-135m-instruct"
SHORT = "Alice was beginning to get very tired of sitting by her sister on the bank."


@pytest.mark.slow
def test_api_compress_then_decompress(client):
    from gradio_client import handle_file

    status, table, *_figs_and_html, download = client.predict(SHORT, None, MODEL, api_name="/compress_text")
    assert "every row decoded and compared" in status and "cross-entropy" in status
    rows = table["data"]
    assert len(rows) == 9 and all(row[-1] == "✅ verified" for row in rows)
    assert rows[-2][0].startswith("language model") and int(rows[-1][3]) < int(rows[-2][3])
    assert download.endswith(".lmlt")
    text, restored_path, message = client.predict(handle_file(download), api_name="/decompress_text")
    assert text == SHORT and "sha256" in message
    with open(restored_path, encoding="utf-8") as fh:
        assert fh.read() == SHORT


@pytest.mark.slow
def test_api_sampling_is_decompression(client):
    a = client.predict(MODEL, 7, 8, "The", api_name="/sample_from_bits")
    b = client.predict(MODEL, 7, 8, "The", api_name="/sample_from_bits")
    assert a[0] == b[0] and a[0].startswith("The") and len(a[0]) > 3
    assert "Same seed, same text" in a[2]


def test_api_bad_inputs(client, tmp_path):
    from gradio_client import handle_file

    with pytest.raises(Exception, match="nothing to compress"):
        client.predict("", None, MODEL, api_name="/compress_text")
    with pytest.raises(Exception, match="at most 16,000 bytes"):
        client.predict("x" * 16_001, None, MODEL, api_name="/compress_text")
    bad = tmp_path / "bad.lmlt"
    bad.write_bytes(b"LMLT\x02\xff\xff\x00\x00{}")
    with pytest.raises(Exception, match="exceeds the file size|truncated"):
        client.predict(handle_file(str(bad)), api_name="/decompress_text")
    with pytest.raises(Exception, match="upload a .lmlt file"):
        client.predict(None, api_name="/decompress_text")


@pytest.mark.browser
@pytest.mark.slow
def test_browser_text_tab(page, screenshot_dir):
    page.get_by_role("tab", name="Compress", exact=True).click()
    page.get_by_role("tab", name="Text", exact=True).click()
    page.locator("#ct-text textarea").fill(
        "In 1905 Albert Einstein published four papers. The common words cost the model almost nothing; "
        "the names and the numbers are where the bits go.")
    page.locator("#ct-go").click()
    page.get_by_text("every row decoded and compared").wait_for(timeout=300_000)
    page.locator("#ct-bars .plot-container").first.wait_for()
    page.locator("#ct-heat .tok").first.wait_for()
    page.evaluate("document.querySelector('#ct-status').scrollIntoView()")
    page.screenshot(path=str(screenshot_dir / "compress_text.png"), full_page=False)
    assert page.locator("#ct-table").get_by_text("✅ verified").count() >= 7  # one per coder


def test_api_dictionary_coders(client):
    lz77, lz78_parse, table = client.predict("abracadabra abracadabra, the cat sat on the mat", None,
                                             api_name="/dictionary_coders")
    assert "LZ77" in lz77 and "copies" in lz77
    assert "lz78-phrase" in lz78_parse and "LZ78" in lz78_parse
    assert table.count("<tr>") == 1 + 26  # the header row and one row per phrase of this short text
    with pytest.raises(Exception, match="nothing to compress"):
        client.predict("", None, api_name="/dictionary_coders")


@pytest.mark.browser
def test_browser_lz77_next_to_lz78(page, screenshot_dir):
    page.get_by_role("tab", name="Compress", exact=True).click()
    page.get_by_role("tab", name="Text", exact=True).click()
    page.locator("#ct-text textarea").fill(
        "the cat sat on the mat; the cat sat on the hat; the rat sat on the cat; that is that. "
        "the cat sat on the mat; the cat sat on the hat.")
    page.locator("#ct-dict-go").click()
    page.locator("#ct-lz78-dict tbody tr").nth(40).wait_for()
    assert page.locator("#ct-lz78-parse .lz78-phrase").count() > 20
    assert page.locator("#ct-lz77-parse .lz-ref").count() > 3
    page.locator("#ct-dict-go").scroll_into_view_if_needed()
    page.evaluate("window.scrollBy(0, -20)")
    page.wait_for_timeout(300)
    page.screenshot(path=str(screenshot_dir / "compress_lz78.png"), full_page=False)


@pytest.mark.slow
def test_api_arithmetic_and_sampling_steps(client):
    fig, table, note = client.predict(SHORT, None, MODEL, 12, api_name="/arithmetic_steps")
    assert table.count("<tr>") == 1 + 12 and "are already settled" in note
    fig, table, note = client.predict(MODEL, 5, 12, api_name="/sampling_steps")
    assert table.count("<tr>") == 1 + 12 and "u = 0." in note
    again = client.predict(MODEL, 5, 12, api_name="/sampling_steps")
    assert again[2] == note  # the same seed gives the same bits and the same tokens
    with pytest.raises(Exception, match="nothing to code"):
        client.predict("", None, MODEL, 12, api_name="/arithmetic_steps")


@pytest.mark.browser
@pytest.mark.slow
def test_browser_arithmetic_coding_steps(page, screenshot_dir):
    page.get_by_role("tab", name="Compress", exact=True).click()
    page.get_by_role("tab", name="Text", exact=True).click()
    page.locator("#ct-text textarea").fill(SHORT)
    page.locator("#ct-ac-go").click()
    page.locator("#ct-ac-table tbody tr").nth(11).wait_for(timeout=300_000)  # SHORT is 16 tokens: 16 steps
    page.locator("#ct-ac-plot .plot-container").first.wait_for()
    page.locator("#ct-ac-note").scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    page.screenshot(path=str(screenshot_dir / "compress_arithmetic_steps.png"), full_page=False)
    page.locator("#ct-sp-go").click()
    page.locator("#ct-sp-table tbody tr").nth(19).wait_for(timeout=300_000)
    page.locator("#ct-sp-plot .plot-container").first.wait_for()
    page.locator("#ct-sp-note").scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    page.screenshot(path=str(screenshot_dir / "compress_sampling_steps.png"), full_page=False)

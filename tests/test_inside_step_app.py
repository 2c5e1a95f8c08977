"""Inside one step and beam search through the running app: the API (gradio_client) and a real browser.

Set LMLAB_UPDATE_SCREENSHOTS=1 to write the screenshots into assets/screenshots/ (the README's images).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser_steps import open_app, screenshots_folder

ROOT = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m-instruct"


def test_events_wait_in_the_model_queue():
    """The three views run the model: they share the device's one queue and show their place in it."""
    import app

    demo = app.build_demo()
    by_name = {fn.api_name: fn for fn in demo.fns.values() if fn.api_name}
    for name in ("logit_lens", "attention", "beam_search"):
        fn = by_name[name]
        assert fn.concurrency_id == "model" and fn.show_progress == "full" and fn.queue is not False, name


@pytest.mark.slow
def test_api_logit_lens_and_attention(client):
    plot, status, _ = client.predict("The capital of France is", "", MODEL, 5, api_name="/logit_lens")
    assert "30 layers" in status and "Paris" in status
    figure = plot["plot"] if isinstance(plot, dict) and "plot" in plot else plot
    assert "Logit lens" in str(figure)
    attn = client.predict("The capital of France is", " Paris", MODEL, 30, 9, 16, api_name="/attention")
    assert "layer 30, head 9" in str(attn)  # the last of 9 heads: heads count from 1, as layers do
    # the status and the attention map count the same tokens (they said "5 tokens read" above "last 6 of 6
    # tokens", whose first row, an unexplained <|endoftext|>, is the start token every text begins with)
    assert "6 tokens read (the start token and 5 of the text)" in status
    attn = client.predict("The capital of France is", "", MODEL, 1, 1, 16, api_name="/attention")
    assert "last 6 of 6 tokens" in str(attn) and "0: start token" in str(attn) and "endoftext" not in str(attn)


@pytest.mark.slow
def test_api_lens_says_what_the_tabs_doc_says(client):
    """docs/TABS.md quotes the logit lens on "The capital of France is": layer 29's and the output layer's
    probability of ␣Paris, as the page prints them (whole percent). The doc said 7 % and 77 % when the page
    showed 6 % and 81 %."""
    doc = (ROOT / "docs" / "TABS.md").read_text(encoding="utf-8")
    quoted = re.search(r"layer 29 guesses ␣capital and\s+gives ␣Paris (\d+) %; only the output layer says "
                       r"␣Paris \((\d+) %\)", doc)
    assert quoted, "docs/TABS.md no longer quotes the lens on the capital of France"
    plot, status, _ = client.predict("The capital of France is", "", MODEL, 5, "prompt", api_name="/logit_lens")
    assert "next token ␣Paris" in status
    figure = plot["plot"] if isinstance(plot, dict) and "plot" in plot else plot
    figure = json.loads(figure) if isinstance(figure, str) else figure
    bars = next(trace for trace in figure["data"] if trace["type"] == "bar")  # p(␣Paris) by layer, as printed
    shown = dict(zip(bars["y"], bars["text"], strict=True))
    assert (shown["layer 29"], shown["layer 30 (output)"]) == (f"{quoted[1]}%", f"{quoted[2]}%")


@pytest.mark.slow
def test_api_beam_search(client):
    plot, table, status, context = client.predict("The capital of France is", MODEL, 3, 1.0, 5, 0.8, 0,
                                                  api_name="/beam_search")
    assert "The capital of France is</div>" in context
    methods = [row[0] for row in table["data"]]
    assert methods[0] == "beam search #1 (returned)" and methods[-2:] == ["greedy", "sampling (temperature 0.8, seed 0)"]
    assert table["data"][0][1].startswith(" Paris") and "pruned" in status


@pytest.mark.slow
def test_api_rejects_bad_input(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="prefix is empty"):
        client.predict("", "", MODEL, 5, api_name="/logit_lens")
    with pytest.raises(AppError, match="layer must be between 1 and 30|greater than maximum value 30"):
        client.predict("Hello", "", MODEL, 31, 1, 16, api_name="/attention")
    with pytest.raises(AppError, match="num beams|greater than maximum"):
        client.predict("Hello", MODEL, 9, 1.0, 5, 0.8, 0, api_name="/beam_search")


def _plot_ready(page, elem_id: str) -> None:
    page.wait_for_function(f"() => {{ const p = document.querySelector('#{elem_id} .js-plotly-plot');"
                           " return p && p.data && p.data.length > 0; }", timeout=180_000)


@pytest.mark.browser
@pytest.mark.slow
def test_browser_inside_step_and_beam_search(browser, app_url, screenshot_dir):
    out = screenshots_folder(screenshot_dir)
    page = open_app(browser, app_url)
    page.locator("#gen-prompt textarea").fill("The capital of France is")

    # Inside one step: the logit lens ends on the model's answer, the attention map has one row per token
    page.get_by_role("tab", name="Inside one step", exact=True).click()
    page.locator("#step-go").click()
    _plot_ready(page, "step-lens")
    _plot_ready(page, "step-attention")
    expect(page.locator("#step-status")).to_contain_text("Paris")
    lens_rows = page.evaluate("() => document.querySelector('#step-lens .js-plotly-plot').data[0].y.length")
    assert lens_rows == 31  # embeddings + 30 layers of SmolLM2-135M
    page.locator("#step-lens").scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    page.locator("#step-lens").screenshot(path=str(out / "logit_lens.png"))
    # A longer prefix, and a typed layer and head redraw the map (layer 2, head 3 reads the previous token)
    page.get_by_role("tab", name="Generate", exact=True).click()
    page.locator("#gen-prompt textarea").fill(
        "Once upon a time, in a small village by the sea, there lived an old fisherman who")
    page.get_by_role("tab", name="Inside one step", exact=True).click()
    page.locator("#step-go").click()  # the new text made the pictures stale
    for elem_id, value in (("step-layer", "2"), ("step-head", "3")):
        box = page.locator(f"#{elem_id} input[type=number]")
        box.fill(value)
        box.press("Enter")
    # 20 tokens: the start token the model reads first (as in Generate and Compress), then the text's 19
    expect(page.locator("#step-attention")).to_contain_text("layer 2, head 3: last 16 of 20", timeout=120_000)
    expect(page.locator("#step-attention")).to_contain_text("earlier")
    page.locator("#step-attention").scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    page.locator("#step-attention").screenshot(path=str(out / "attention.png"))

    # Beam search: a tree with the returned path highlighted, and the comparison table
    page.get_by_role("tab", name="Beam search", exact=True).click()
    page.locator("#beam-go").click()
    _plot_ready(page, "beam-tree")
    expect(page.locator("#beam-table")).to_contain_text("greedy", timeout=180_000)
    expect(page.locator("#beam-table")).to_contain_text("sampling")
    expect(page.locator("#beam-status")).to_contain_text("pruned")
    legend = page.evaluate("() => document.querySelector('#beam-tree .js-plotly-plot').data.map(d => d.name)")
    assert "the text beam search returns" in legend and "pruned" in legend
    page.locator("#beam-tree").scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    page.locator("#beam-accordion").screenshot(path=str(out / "beam_search.png"))
    page.context.close()

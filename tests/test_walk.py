"""One walk through the whole app in one real browser session, as a teacher would do it.

Generates text and stops it, looks inside one step (logit lens, attention) and at beam search, tags a
sentence, starts and cancels a tiny fine-tuning run, inspects a checkpoint, compresses a paragraph and
looks at the pictures of its coding (LZ77 next to LZ78, arithmetic coding step by step, sampling as
decompression), with a screenshot of each tab. Set LMLAB_UPDATE_SCREENSHOTS=1 to
write them into assets/screenshots/ (the README's images); otherwise they go to tests/artifacts/.
Also checks that every visible input has a name a screen reader can read.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser_steps import open_app, screenshots_folder, start_long_generation

ROOT = Path(__file__).resolve().parent.parent

# An input is named if it has a <label>, aria-label(ledby) or sits inside a <label>.
UNNAMED_INPUTS_JS = """() => [...document.querySelectorAll('input, textarea, select')]
  .filter(e => e.type !== 'hidden' && e.offsetParent !== null)
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
               && !e.getAttribute('aria-labelledby') && !e.closest('label'))
  .map(e => (e.closest('[id]') || {}).id + ':' + e.tagName + ':' + (e.type || ''))"""


def _shot(page, name: str, out: Path) -> None:
    page.wait_for_timeout(400)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(out / f"{name}.png"), full_page=False)


def _named(page, where: str) -> None:
    unnamed = page.evaluate(UNNAMED_INPUTS_JS)
    assert not unnamed, f"inputs without an accessible name on {where}: {unnamed}"


def _plot_rows(page, elem_id: str, rows: int) -> list[str]:
    """Wait until the interval chart in ``elem_id`` has ``rows`` rows; return its traces' names."""
    page.wait_for_function(f"() => {{ const p = document.querySelector('#{elem_id} .js-plotly-plot');"
                           f" return p && p.data && p.data.length > 1 && p.data[1].y.length === {rows}; }}")
    return page.evaluate(f"() => document.querySelector('#{elem_id} .js-plotly-plot').data.map(d => d.name)")


def _choose(page, elem_id: str, text: str) -> None:
    page.click(f"#{elem_id} input")
    page.get_by_role("option", name=text).first.click()


@pytest.mark.browser
@pytest.mark.slow
def test_walk_through_every_tab(browser, app_url, screenshot_dir):
    out = screenshots_folder(screenshot_dir)
    page = open_app(browser, app_url)

    # Generate: stream, stop, look at the next-token chart
    _named(page, "Generate")
    start_long_generation(page, words=4, seconds=90)
    page.locator("#gen-stop").click()
    expect(page.locator("#gen-status")).to_contain_text("stopped by you", timeout=30_000)
    page.locator("#gen-peek").click()
    page.wait_for_selector("#gen-next-plot .js-plotly-plot")
    _shot(page, "walk-generate", out)

    # Generate, below: inside one step (logit lens, attention) and beam search for the same prefix
    page.get_by_role("tab", name="Inside one step", exact=True).click()
    _named(page, "Inside one step")
    page.locator("#step-go").click()
    page.wait_for_selector("#step-lens .js-plotly-plot")
    page.wait_for_selector("#step-attention .js-plotly-plot")
    page.get_by_role("tab", name="Beam search", exact=True).click()
    page.locator("#beam-go").click()
    page.wait_for_selector("#beam-tree .js-plotly-plot")
    expect(page.locator("#beam-table")).to_contain_text("greedy")

    # NER: tag a sentence, entities highlighted
    page.get_by_role("tab", name="NER", exact=True).click()
    _named(page, "NER")
    page.locator("#ner-text textarea").fill("Marie Curie worked in Paris with the University of Paris before the Nobel Committee honoured her.")
    page.locator("#ner-go").click()
    expect(page.locator("#ner-highlighted")).to_contain_text("Marie Curie", timeout=120_000)
    expect(page.locator("#ner-table")).to_contain_text("PER")
    _shot(page, "walk-ner", out)

    # Fine-tune: a tiny run from scratch, started then cancelled
    page.get_by_role("tab", name="Fine-tune", exact=True).click()
    _named(page, "Fine-tune")
    _choose(page, "ft-base", "GPT-2 from scratch")
    _choose(page, "ft-dataset", "Canterbury")
    expect(page.locator("#ft-data-info")).to_contain_text("lines", timeout=60_000)
    page.get_by_text("Hyper-parameters").click()
    for name, value in {"max_steps": "300", "batch_size": "2", "seq_len": "32", "logging_steps": "1",
                        "eval_steps": "0", "bleu_samples": "2"}.items():
        box = page.locator(f"#ft-{name} input")
        box.fill(value)
        box.press("Tab")
    page.locator("#ft-eval_before input").uncheck()
    page.click("#ft-start")
    expect(page.locator("#ft-status")).to_contain_text("running", timeout=120_000)
    page.wait_for_function("() => { const p = document.querySelector('#ft-loss .js-plotly-plot');"
                           " return p && p.data && p.data.length && p.data[0].x.length >= 2; }")
    _shot(page, "walk-finetune", out)
    page.click("#ft-cancel")
    expect(page.locator("#ft-status")).to_contain_text("cancelled", timeout=60_000)

    # Compress, checkpoint half: Huffman statistics of the embedded MiniLM, verified
    page.get_by_role("tab", name="Checkpoints", exact=True).click()
    _named(page, "Checkpoints")
    page.locator("#ck-inspect").click()
    page.get_by_text("verified bit-exact").wait_for(timeout=240_000)
    page.get_by_text("entropy H").first.wait_for()
    _shot(page, "walk-compress-checkpoint", out)

    # Compress, text half: a paragraph through every coder, each row verified
    page.get_by_role("tab", name="Compress", exact=True).click()
    _named(page, "Compress")
    page.locator("#ct-text textarea").fill(
        "The language model predicts each next token. Common words are nearly free; names such as "
        "Ada Lovelace and numbers such as 1843 cost many bits. An arithmetic coder turns those predictions "
        "into a compressed file, and the same model decodes it back, byte for byte.")
    page.locator("#ct-go").click()
    page.get_by_text("every row decoded and compared").wait_for(timeout=300_000)
    page.locator("#ct-bars .plot-container").first.wait_for()
    _shot(page, "walk-compress-text", out)

    # The same paragraph under the classic coders: LZ77's copies and LZ78's phrases, and its dictionary
    # (filled after Compress, without another click)
    page.get_by_role("tab", name="LZ77 and LZ78", exact=True).click()
    page.locator("#ct-lz78-dict tbody tr").nth(30).wait_for()
    assert page.locator("#ct-lz78-parse .lz78-phrase").count() > 30
    assert page.locator("#ct-lz77-parse .lz-ref").count() > 0
    expect(page.locator("#ct-lz78-table")).to_contain_text("The LZ78 dictionary growing")
    expect(page.locator("#ct-lz78-dict tbody tr").first).to_contain_text("= #0")  # the first phrase: empty + a char

    # Arithmetic coding step by step: one row per token of the paragraph, each its slice of the interval
    page.get_by_role("tab", name="Arithmetic coding", exact=True).click()
    page.locator("#ct-ac-go").click()
    _plot_rows(page, "ct-ac-plot", 20)  # the slider's default
    assert page.locator("#ct-ac-table tbody tr").count() == 20
    expect(page.locator("#ct-ac-plot")).to_contain_text("1. The")
    expect(page.locator("#ct-ac-note")).to_contain_text("are already settled")

    # Sampling is decompression: the random number u falls into one slice per step
    page.get_by_role("tab", name="Sampling is decompression", exact=True).click()
    page.locator("#sd-n input[type=number]").fill("20")
    page.locator("#sd-n input[type=number]").press("Enter")
    page.locator("#sd-steps").click()
    names = _plot_rows(page, "sd-plot", 20)
    assert "the random number u" in names
    expect(page.locator("#sd-steps-note")).to_contain_text("u = 0.")
    expect(page.locator("#sd-plot")).to_contain_text("Sampling = decoding random bits")
    page.context.close()

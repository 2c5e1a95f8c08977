"""The lesson path: every picture names the text it read, a changed text marks the pictures stale, a typed
slider value redraws like a dragged one, "compress this text" carries Generate's text into the Compress
tab, and the two views of sampling-as-decoding read one seed's bits, one start text and one model."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from components.common import md_literal
from tests.browser_steps import generate

MODEL = "smollm2-135m-instruct"


def test_tabs_follow_the_lesson():
    import app

    demo = app.build_demo()
    tabs = [b for b in demo.blocks.values() if type(b).__name__ == "Tab" and b.parent.elem_id == "lmlab-tabs"]
    assert [t.label for t in tabs] == ["Generate", "Inside one step", "Compress", "Sampling is decompression",
                                       "Fine-tune", "NER", "Checkpoints"]
    compress = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "ct-views")
    assert compress.children[0].label == "Every coder"  # the Compress tab opens on the text coders


@pytest.mark.slow
def test_api_lens_reads_the_prompt_only(client):
    """The README's example: "The capital of France is" -> " Paris", with a generated text beside it."""
    _, status, context = client.predict("The capital of France is", " a city of light.", MODEL, 5, "prompt",
                                        api_name="/logit_lens")
    assert "next token ␣Paris" in status
    assert "The capital of France is</div>" in context and "city of light" not in context
    _, status, context = client.predict("The capital of France is", " a city of light.", MODEL, 5, "both",
                                        api_name="/logit_lens")
    assert "The capital of France is a city of light.</div>" in context and "␣Paris" not in status


@pytest.mark.slow
def test_api_one_seed_one_text(client):
    """"Decode random bits" and "Show the random number falling" decode the same bits after the same start
    text with the same model, and say so."""
    start = "Once upon a time"
    text, _, note = client.predict(MODEL, 0, 30, start, api_name="/sample_from_bits")
    _, table, steps_note = client.predict(MODEL, 0, 30, start, api_name="/sampling_steps")
    bits = re.search(r"u = 0\.([01]{32})", note).group(1)
    assert re.search(r"u = 0\.([01]{32})", steps_note).group(1) == bits
    for shown in (note, steps_note):
        assert "seed 0" in shown and f"«{start}»" in shown and "SmolLM2" in shown
    assert text.startswith(start)
    assert f"Decoded: «{md_literal(text[len(start):])}»" in steps_note  # one decode, two views
    n = table.count("<tr>") - 1  # a row per token: 30, or fewer where the model ended its text (seed 0 does)
    assert n == 30 or f"ended its text here, after {n - 1} tokens" in note and f"after {n - 1} tokens" in steps_note
    # a longer decode of the same seed starts with the same text; another seed reads other bits
    longer, _, _ = client.predict(MODEL, 0, 45, start, api_name="/sample_from_bits")
    assert longer.startswith(text)
    _, _, other = client.predict(MODEL, 1, 30, start, api_name="/sample_from_bits")
    assert re.search(r"u = 0\.([01]{32})", other).group(1) != bits


def _context(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id}").inner_text()


def _plot_title(page, elem_id: str) -> str:
    return page.evaluate(f"() => {{ const p = document.querySelector('#{elem_id} .js-plotly-plot');"
                         " return p && p.layout ? JSON.stringify(p.data.map(d => d.name)) : ''; }")


@pytest.mark.browser
@pytest.mark.slow
def test_browser_pictures_name_their_text_and_go_stale(page):
    prompt = page.locator("#gen-prompt textarea")
    prompt.fill("The capital of France is")
    page.locator("#gen-max-new input[type=number]").fill("3")
    page.locator("#gen-max-new input[type=number]").press("Enter")
    page.locator("#gen-go").click()
    expect(page.locator("#gen-status")).to_contain_text("Done", timeout=120_000)
    generated = page.locator("#gen-output textarea").input_value()
    assert generated

    # The next-token chart prints what it read; "the prompt only" reads the bare prompt
    page.locator("#gen-peek").click()
    expect(page.locator("#gen-peek-context")).to_contain_text("The capital of France is" + generated.rstrip())
    page.locator("#gen-peek-read").get_by_text("the prompt only").click()
    expect(page.locator("#gen-peek-context")).to_contain_text("The text changed")  # the other reading: stale
    page.locator("#gen-peek").click()
    expect(page.locator("#gen-next-plot .js-plotly-plot")).to_be_visible()
    assert _context(page, "gen-peek-context").rstrip().endswith("The capital of France is")
    expect(page.locator("#gen-next-plot")).to_contain_text("Paris")

    # A number typed into a slider's box redraws the chart, as a drag does
    box = page.locator("#gen-temperature input[type=number]")
    box.fill("0")
    box.press("Enter")
    expect(page.locator("#gen-next-plot")).to_contain_text("greedy", timeout=60_000)

    # Editing the prompt marks the chart stale and clears it, and its table of candidates (which stayed with the
    # old text's numbers): no picture under a text it did not read
    assert page.locator("#gen-candidates tbody tr").count() > 0
    prompt.fill("My favourite subject at school is")
    expect(page.locator("#gen-peek-context")).to_contain_text("The text changed since this picture was drawn")
    assert page.locator("#gen-next-plot .js-plotly-plot").count() == 0
    expect(page.locator("#gen-candidates tbody tr")).to_have_count(0)
    # and the text generated for the old prompt goes: the next steps read prompt + generated text together
    # (a new prompt was read, and compressed, with the old story after it)
    expect(page.locator("#gen-output textarea")).to_have_value("")
    expect(page.locator("#gen-status")).to_contain_text("The prompt changed")

    # Inside one step: the lens names its text, reads the prompt only when asked, and goes stale the same way
    page.get_by_role("tab", name="Inside one step", exact=True).click()
    page.locator("#step-read").get_by_text("the prompt only").click()
    page.locator("#step-go").click()
    expect(page.locator("#step-status")).to_contain_text("next token", timeout=120_000)
    assert _context(page, "step-context").rstrip().endswith("My favourite subject at school is")
    page.get_by_role("tab", name="Generate", exact=True).click()
    prompt.fill("The capital of France is")
    page.get_by_role("tab", name="Inside one step", exact=True).click()
    expect(page.locator("#step-context")).to_contain_text("The text changed since this picture was drawn")
    assert page.locator("#step-lens .js-plotly-plot").count() == 0
    page.locator("#step-go").click()
    expect(page.locator("#step-status")).to_contain_text("next token ␣Paris", timeout=120_000)


@pytest.mark.browser
@pytest.mark.slow
def test_browser_no_stale_note_before_any_picture(page):
    """"The text changed since this picture was drawn" only when a picture exists and read another text: it
    showed on first opening Inside one step, and after the first Generate above an empty next-token chart."""
    stale = "The text changed"
    page.get_by_role("tab", name="Inside one step", exact=True).click()
    page.wait_for_timeout(1000)  # the page's start-up events have fired
    expect(page.locator("#step-context")).not_to_contain_text(stale)
    page.get_by_role("tab", name="Generate", exact=True).click()
    page.locator("#gen-prompt textarea").fill("The capital of France is")
    page.locator("#gen-max-new input[type=number]").fill("3")
    page.locator("#gen-max-new input[type=number]").press("Enter")
    page.locator("#gen-go").click()
    expect(page.locator("#gen-status")).to_contain_text("Done", timeout=120_000)
    page.wait_for_timeout(500)
    expect(page.locator("#gen-peek-context")).not_to_contain_text(stale)
    page.get_by_role("tab", name="Inside one step", exact=True).click()
    expect(page.locator("#step-context")).not_to_contain_text(stale)
    page.get_by_role("tab", name="Beam search", exact=True).click()
    page.wait_for_timeout(500)
    expect(page.locator("#beam-context")).not_to_contain_text(stale)
    page.locator("#beam-go").click()
    expect(page.locator("#beam-context")).to_contain_text("continue the prompt", timeout=120_000)
    page.get_by_role("tab", name="Generate", exact=True).click()
    page.locator("#gen-prompt textarea").fill("The capital of Spain is")
    page.get_by_role("tab", name="Inside one step", exact=True).click()
    expect(page.locator("#beam-context")).to_contain_text(stale)  # beam search reads the prompt: now stale
    # once a picture exists, the same edits do mark it stale
    page.get_by_role("tab", name="Generate", exact=True).click()
    page.locator("#gen-peek").click()
    expect(page.locator("#gen-peek-context")).to_contain_text("The next token after", timeout=120_000)
    page.locator("#gen-prompt textarea").fill("The capital of Italy is")
    expect(page.locator("#gen-peek-context")).to_contain_text(stale)


@pytest.mark.browser
@pytest.mark.slow
def test_browser_beam_table_goes_stale_with_its_tree(page):
    """Beam search on one prompt, then another example picked in Generate: the tree was cleared under "The text
    changed" but the table "The same prompt, three ways" kept the old prompt's rows; it is cleared with the tree,
    as Generate's table of candidates is."""
    page.locator("#gen-prompt textarea").fill("The capital of France is")
    page.get_by_role("tab", name="Inside one step", exact=True).click()
    page.get_by_role("tab", name="Beam search", exact=True).click()
    page.locator("#beam-max-new input[type=number]").fill("3")
    page.locator("#beam-max-new input[type=number]").press("Enter")
    page.locator("#beam-go").click()
    expect(page.locator("#beam-table")).to_contain_text("greedy", timeout=120_000)
    assert page.locator("#beam-table tbody tr").count() > 0
    page.get_by_role("tab", name="Generate", exact=True).click()
    example = "The three most important ideas in physics are"
    page.get_by_text(example, exact=True).click()
    expect(page.locator("#gen-prompt textarea")).to_have_value(example)
    page.get_by_role("tab", name="Inside one step", exact=True).click()
    expect(page.locator("#beam-context")).to_contain_text("The text changed since this picture was drawn")
    assert page.locator("#beam-tree .js-plotly-plot").count() == 0
    expect(page.locator("#beam-table tbody tr")).to_have_count(0)
    expect(page.locator("#beam-table")).not_to_contain_text("greedy")


@pytest.mark.browser
@pytest.mark.slow
def test_browser_compress_this_text(page):
    whole = generate(page, "The capital of France is", 12)
    page.locator("#gen-compress").click()
    expect(page.get_by_role("tab", name="Compress", exact=True)).to_have_attribute("aria-selected", "true")
    expect(page.locator("#ct-status")).to_contain_text("every row decoded and compared", timeout=300_000)
    assert page.locator("#ct-text textarea").input_value() == whole
    assert f"{len(whole.encode()):,} bytes" in page.locator("#ct-status").inner_text()


def test_decoded_text_is_printed_literally():
    """A decoded text with a line break or '*' prints as itself in a note (it printed literal '**')."""
    import markdown

    decoded = "a *b*\n\n# c_d"
    shown = markdown.markdown(f"Decoded: «{md_literal(decoded)}»")
    assert shown == "<p>Decoded: «a *b*↵ ↵ # c_d»</p>"

"""The NER tab through the running app: the API names /ner, /ner_batch, /ner_evaluate, and a browser."""

from __future__ import annotations

from pathlib import Path

import pytest

SPACY = "spacy-en_core_web_sm"
SAMPLE_DATA = Path(__file__).resolve().parent / "data"
SENTENCE = "Angela Merkel met Emmanuel Macron in Paris to discuss the European Union budget."


def test_api_ner_tags_a_sentence(client):
    highlighted, table, pieces, status = client.predict(SENTENCE, SPACY, "first", 0.3, api_name="/ner")
    spans = [(t["token"], t["class_or_confidence"]) for t in highlighted if t["class_or_confidence"]]
    assert ("Angela Merkel", "PER") in spans and ("Paris", "LOC") in spans
    rows = table["data"]
    assert ["Paris", "LOC", None, 37, 42] in rows
    assert "B-PER" in pieces and status.startswith("**Found")  # spaCy gives no scores: the table says None
    assert "gives no confidence scores, so the score column is empty" in status  # and the status says why


def test_api_word_piece_caption_fits_the_tagger(client):
    """The word-piece view's caption said "the number is the model's probability for that tag" under spaCy's
    chips, which carry no number: it says what the tagger in use gives."""
    _, _, pieces, _ = client.predict(SENTENCE, SPACY, "first", 0.3, api_name="/ner")
    assert "B-PER" in pieces
    assert "probability for that tag" not in pieces and "gives no probabilities, so no number is shown" in pieces


def test_word_piece_caption_of_a_scoring_tagger():
    """A tagger that gives probabilities (the BERT family): each chip shows its number, and the caption says so."""
    from components import ner
    from models.ner.tagger import Piece

    shown = ner.pieces_html([Piece("Paris", "B-LOC", 0.987, 0, 5), Piece("met", "O", 0.999, 6, 9)], ner.COLOURS)
    assert "0.99" in shown and "the number is the model's probability for that tag" in shown
    assert "no number" not in shown


def test_api_ner_empty_text_is_a_clear_error(client):
    with pytest.raises(Exception, match="empty"):
        client.predict("  ", SPACY, "first", 0.3, api_name="/ner")


def test_api_batch_and_evaluate(client, tmp_path):
    from gradio_client import handle_file

    docs = tmp_path / "news.txt"
    docs.write_text("Angela Merkel visited Paris.\nReuters reported on Airbus in Toulouse.\n")
    csv_path, conll_path, preview, status = client.predict(handle_file(str(docs)), SPACY, "first", 0.0,
                                                           api_name="/ner_batch")
    assert "2 documents" in status
    assert "Toulouse,LOC" in open(csv_path).read()
    assert open(conll_path).read().startswith("Angela B-PER\nMerkel I-PER")
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\x00\x01\x02binary")
    with pytest.raises(Exception, match="binary"):
        client.predict(handle_file(str(binary)), SPACY, "first", 0.0, api_name="/ner_batch")

    gold = SAMPLE_DATA / "conll2003" / "test.txt"
    metrics, chart, mistakes, status = client.predict("upload", handle_file(str(gold)), SPACY, 0,
                                                      api_name="/ner_evaluate")
    rows = {row[0]: row[1:] for row in metrics["data"]}
    assert {"PER", "LOC", "ORG", "MISC", "micro avg", "macro avg"} <= set(rows)
    assert rows["micro avg"][2] == round(13 / 14, 4) and rows["micro avg"][3] == 14
    assert "uploaded file test.txt" in status and "5 sentences" in status and "Bayern" in mistakes
    bad = tmp_path / "bad.conll"
    bad.write_text("Paris B-LOC\nBerlin\n")
    with pytest.raises(Exception, match="line 2"):
        client.predict("upload", handle_file(str(bad)), SPACY, 0, api_name="/ner_evaluate")


def test_api_evaluate_on_conll2003(client, conll2003_dir):
    metrics, chart, mistakes, status = client.predict("test", None, SPACY, 100, api_name="/ner_evaluate")
    names = [row[0] for row in metrics["data"]]
    assert {"PER", "LOC", "ORG", "MISC", "micro avg", "macro avg"} <= set(names)
    assert "micro F1" in status and "100 sentences" in status and "gold" in mistakes


@pytest.mark.browser
def test_browser_tags_a_sentence(page, screenshot_dir):
    page.get_by_role("tab", name="NER", exact=True).click()
    box = page.locator("#ner-text textarea")
    box.fill("Chancellor Angela Merkel met French President Emmanuel Macron in Paris on Tuesday to discuss the "
             "European Union budget, Reuters reported.")
    page.locator("#ner-go").click()
    page.wait_for_function("document.querySelector('#ner-status')?.innerText.includes('Found')")
    highlighted = page.locator("#ner-highlighted")
    assert "Angela Merkel" in highlighted.inner_text()
    # the entity spans are coloured: a highlighted span carries a background colour per type
    colours = highlighted.evaluate(
        "el => [...el.querySelectorAll('*')].filter(e => e.innerText && e.innerText.trim() === 'Paris')"
        ".map(e => getComputedStyle(e).backgroundColor).filter(c => c !== 'rgba(0, 0, 0, 0)')")
    assert colours, "Paris is shown highlighted"
    assert "European Union" in page.locator("#ner-table").inner_text()
    page.get_by_text("Word-piece view").click()
    page.wait_for_selector("#ner-pieces .ner-pieces span")
    page.set_viewport_size({"width": 1400, "height": 1450})
    page.locator("#ner-text").scroll_into_view_if_needed()
    page.evaluate("window.scrollTo(0, 0)")
    shot = screenshot_dir / "ner.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000


def test_api_batch_csv_neutralises_formulas_and_conll_keeps_tokens(client, tmp_path):
    """OWASP CSV injection: entity texts like '-London', '@Paris', '+Macron' open as text in a spreadsheet."""
    import csv

    from gradio_client import handle_file

    docs = tmp_path / "formulas.txt"
    docs.write_text('=HYPERLINK("http://x") met Angela Merkel in -London.\n@Paris is big, said +Macron.\n')
    conll_in = tmp_path / "formulas.conll"
    conll_in.write_text("-London O\nis O\nbig O\n. O\n\nAngela O\nMerkel O\nmet O\n@Berlin O\n+Rome O\n. O\n")
    for upload in (docs, conll_in):
        csv_path, conll_path, preview, status = client.predict(handle_file(str(upload)), SPACY, "first", 0.0,
                                                               api_name="/ner_batch")
        cells = [cell for row in csv.reader(open(csv_path, newline="")) for cell in row]
        assert any(c.lstrip("'").startswith(("-London", "@", "+")) for c in cells), cells  # the risky texts are there
        risky = [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
        assert risky == [], f"formula-leading cells written raw: {risky}"
        assert "'-London" in cells
        tokens = [line.split(" ")[0] for line in open(conll_path).read().splitlines() if line]
        if upload is conll_in:
            assert tokens[0] == "-London" and "@Berlin" in tokens and "+Rome" in tokens  # CoNLL keeps tokens as they are
        else:
            assert "=" in tokens and "@" in tokens

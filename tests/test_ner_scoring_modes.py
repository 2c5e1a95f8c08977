"""How entities are scored: conlleval-compatible (seqeval's default) with the strict IOB2 score beside it."""

from __future__ import annotations

import pytest

from models.ner import conll, tagger
from models.ner import evaluation as ner_eval

# "I-PER" after "O" starts an entity for conlleval, none in strict IOB2; "B-PER I-LOC" is two entities for
# conlleval (PER, then LOC), one (PER) in strict mode.
GOLD = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "O"]]
PRED = [["I-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "I-LOC"]]


def test_default_and_strict_modes_differ_on_the_same_predictions():
    default, strict = conll.score(GOLD, PRED), conll.score(GOLD, PRED, strict=True)
    assert default.mode.startswith("conlleval-compatible") and strict.mode.startswith("strict IOB2")
    # default: PER, LOC, ORG right and a spurious LOC: P 3/4, R 3/3; strict: PER not read, ORG and LOC right
    assert default.micro["precision"] == pytest.approx(0.75) and default.micro["recall"] == pytest.approx(1.0)
    assert strict.micro["precision"] == pytest.approx(1.0) and strict.micro["recall"] == pytest.approx(2 / 3)
    assert default.micro["f1-score"] == pytest.approx(6 / 7) and strict.micro["f1-score"] == pytest.approx(0.8)
    assert conll.score(GOLD, GOLD, strict=True).micro["f1-score"] == 1.0


def test_iobes_tags_are_scored_strictly_with_their_own_scheme():
    gold = [["S-PER", "O", "B-LOC", "E-LOC"]]
    assert conll.score(gold, gold, strict=True).mode.startswith("strict IOBES")


def test_evaluation_reports_both_modes(tmp_path):
    """IOB1-style gold (an entity may start with I-, as in the original CoNLL-2003 release): the two modes differ."""
    gold = tmp_path / "iob1.conll"
    gold.write_text("Angela I-PER\nMerkel I-PER\nvisited O\nParis I-LOC\n. O\n")
    report = ner_eval.evaluate(tagger.SPACY_KEY, "upload", upload=gold)
    assert report.scores.micro["f1-score"] == pytest.approx(1.0)
    assert report.strict is not None and report.strict.micro["f1-score"] == pytest.approx(0.0)

    from components import ner

    rows, _chart, _mistakes, status = ner.evaluate("upload", str(gold), tagger.SPACY_KEY, 0,
                                                   progress=lambda *a, **k: None)
    micro = next(r for r in rows if r[0] == "micro avg")
    assert micro[3] == 1.0 and micro[5] == 0.0
    assert "conlleval-compatible" in status and "strict IOB2" in status

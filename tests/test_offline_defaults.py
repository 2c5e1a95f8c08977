"""A new user's machine: offline, no data folder. Every default the app starts with must be one that runs."""

from __future__ import annotations

import pytest

import app
from models.training import view


@pytest.fixture
def nothing_here(monkeypatch):
    monkeypatch.delenv("LMLAB_DATA_DIR", raising=False)  # and the tests are offline: no hub either


def _props(demo) -> dict[str, dict]:
    return {c["props"]["elem_id"]: c["props"] for c in demo.config["components"] if c["props"].get("elem_id")}


def test_the_built_app_starts_on_data_that_is_here(nothing_here):
    props = _props(app.build_demo())
    assert props["ft-dataset"]["value"] == "canterbury"
    wikitext = [label for label, key in props["ft-dataset"]["choices"] if key == "wikitext-2"]
    assert wikitext and "not available here" in wikitext[0]
    evaluate = props["ner-eval-data"]
    assert evaluate["value"] == "upload" and [key for _, key in evaluate["choices"]] == ["upload"]
    assert "CoNLL-2003 test and valid are not available here" in evaluate["info"]


def test_offline_pickers_offer_what_loads_and_say_how_to_get_more(nothing_here):
    """Teacher's words: no hub model that cannot load offline, no flag or environment variable on the page; the
    NER controls a spaCy pipeline ignores are hidden, not explained."""
    from models.core import registry

    demo = app.build_demo()
    props = _props(demo)
    for picker, task in (("gen-model", registry.CAUSAL_LM), ("ner-model", registry.TOKEN_CLASSIFICATION),
                         ("ft-base", registry.CAUSAL_LM)):
        keys = [key for _, key in props[picker]["choices"]]
        assert keys and all(registry.availability(registry.get(k, task))[0] for k in keys if k != "scratch-gpt2")
        assert not any("needs download" in label for label, _ in props[picker]["choices"])
        assert "more appear once LM Lab can reach the Hugging Face hub" in props[picker]["info"]
    assert "openai-community/gpt2" not in [key for _, key in props["gen-model"]["choices"]]
    assert props["ner-model"]["value"] == "spacy-en_core_web_sm"
    assert props["ner-aggregation"]["visible"] is False and props["ner-threshold"]["visible"] is False
    page_text = str(demo.config)
    for developer_text in ("--data-dir", "LMLAB_", "registry key", "local:<folder>", "↻", "lane(s)", "window(s)"):
        assert developer_text not in page_text, developer_text


def test_the_built_app_offers_the_real_data_sets_when_a_data_folder_has_them(sample_data):
    props = _props(app.build_demo())
    assert props["ft-dataset"]["value"] == "wikitext-2"
    assert not any("not available" in label for label, _ in props["ft-dataset"]["choices"])
    evaluate = props["ner-eval-data"]
    assert evaluate["value"] == "test" and [key for _, key in evaluate["choices"]] == ["test", "valid", "upload"]


@pytest.mark.parametrize("task, dataset, note", [("causal-lm", "canterbury", "Canterbury texts: the first 90%"),
                                                  ("token-classification", "twitter-ner", "Twitter NER sample: 80%")])
def test_each_tasks_default_data_loads_and_its_form_is_valid(nothing_here, task, dataset, note):
    cfg = view.recipe(task)
    assert cfg.dataset == dataset
    summary, rows = view.dataset_info(task, cfg.dataset)
    assert note in summary and len(rows) == 4
    assert view.form_config(cfg.__dict__) == cfg  # the recipe passes the form's own checks

"""A model run from a compressed checkpoint (.lmhz) says so where the user picks and runs it: the NER
tab's status, and the info line under the Generate tab's model picker."""

from __future__ import annotations

import pytest
import torch

from models.core import assets, registry
from tests.lmhz_helpers import compressed_copy, saved_tiny_gpt2

LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


@pytest.fixture
def compressed_ner(tmp_path, monkeypatch):
    """A 2-layer BERT tagger (random weights, the embedded MiniLM's WordPiece) saved, then compressed."""
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    wordpiece = AutoTokenizer.from_pretrained(str(assets.path("all-minilm-l6-v2")))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=wordpiece.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, id2label=dict(enumerate(LABELS)),
                        label2id={label: i for i, label in enumerate(LABELS)})
    folder = tmp_path / "tiny-ner"
    BertForTokenClassification(config).save_pretrained(folder)
    wordpiece.save_pretrained(folder)
    monkeypatch.setenv("LMLAB_MODEL_DIRS", str(folder))
    out = compressed_copy(folder, "tiny-ner.lmhz")
    yield folder, out
    out.unlink(missing_ok=True)
    registry.CACHE.clear()


@pytest.fixture
def compressed_gpt2(tiny_gpt2, tmp_path, monkeypatch):
    folder = saved_tiny_gpt2(tiny_gpt2, tmp_path, monkeypatch)
    out = compressed_copy(folder, "tiny-gen.lmhz")
    yield folder, out
    out.unlink(missing_ok=True)
    registry.CACHE.clear()


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def test_ner_status_names_the_compressed_checkpoint(compressed_ner):
    from components import ner

    folder, lmhz = compressed_ner
    original = (folder / "model.safetensors").stat().st_size
    sentence = "John Smith flew from Paris to Berlin with Reuters."
    quiet = dict(progress=lambda *a, **k: None)
    *_, status = ner.tag_text(sentence, "lmhz:tiny-ner.lmhz", "first", 0.0, **quiet)
    assert status.startswith("**Found")  # the run itself went through
    assert (f"loaded from tiny-ner.lmhz: {_mb(lmhz.stat().st_size)} compressed, {_mb(original)} original"
            in status) and "sha256 verified" in status
    *_, plain = ner.tag_text(sentence, f"local:{folder}", "first", 0.0, **quiet)  # the same weights, uncompressed
    assert plain.startswith("**Found") and "lmhz" not in plain and "compressed" not in plain

    batch = folder.parent / "news.txt"
    batch.write_text("John Smith flew to Paris.\nReuters reported from Berlin.\n")
    *_, batch_status = ner.tag_batch(str(batch), "lmhz:tiny-ner.lmhz", "first", 0.0, **quiet)
    assert "2 documents" in batch_status and "loaded from tiny-ner.lmhz" in batch_status


def _picker_notes(demo, elem_id: str) -> list:
    """The functions wired to the change of the picker ``elem_id`` that update that picker itself."""
    picker = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)
    return [f.fn for f in demo.fns.values()
            if (picker._id, "change") in f.targets and [o._id for o in f.outputs] == [picker._id]]


def test_generate_picker_says_which_file_the_model_runs_from(compressed_gpt2):
    import app

    folder, lmhz = compressed_gpt2
    demo = app.build_demo()
    assert ("lmhz:tiny-gen.lmhz" in
            [key for _, key in next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "gen-model").choices])
    for elem_id in ("gen-model", "ct-model"):
        notes = _picker_notes(demo, elem_id)
        assert len(notes) == 1, elem_id
        info = notes[0]("lmhz:tiny-gen.lmhz")["info"]
        size, original = lmhz.stat().st_size, (folder / "model.safetensors").stat().st_size
        assert info.startswith(f"Runs from tiny-gen.lmhz: {_mb(size)} compressed, {_mb(original)} original "
                               f"({size / original:.1%}); decompressed in memory")
        # Any other model: the picker's own line (how to get more models offline), which replaces the previous
        # note (None would leave it in place).
        assert notes[0](f"local:{folder}")["info"] == registry.more_models_note()
        assert notes[0]("smollm2-135m-instruct")["info"] == registry.more_models_note()
    lmhz.unlink()  # a file that is gone: no note (loading it would say why)
    assert _picker_notes(demo, "gen-model")[0]("lmhz:tiny-gen.lmhz")["info"] == registry.more_models_note()


def test_generate_status_names_the_compressed_checkpoint(compressed_gpt2):
    from types import SimpleNamespace

    from components import generation

    folder, lmhz = compressed_gpt2
    args = ("Hello", "lmhz:tiny-gen.lmhz", 0.0, 1.0, 0, 5, 1.0, 0, False)
    *_, (text, _view, status) = generation.generate(*args, request=SimpleNamespace(session_hash="lmhz-test"))
    assert "**Done**" in status and "5 tokens" in status
    assert f"model loaded from tiny-gen.lmhz: {_mb(lmhz.stat().st_size)} compressed" in status
    *_, (plain_text, _view, plain) = generation.generate("Hello", f"local:{folder}", *args[2:],
                                                          request=SimpleNamespace(session_hash="lmhz-test"))
    assert plain_text == text and "lmhz" not in plain  # the same weights, the same tokens

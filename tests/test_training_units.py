"""Fine-tuning building blocks without subprocesses: config, data, metrics, evaluation math."""

from __future__ import annotations

import math

import pytest
import sacrebleu
import torch

from models.core.errors import InputError
from models.training import data as datalib
from models.training import metrics, train, view
from models.training.__main__ import parser
from models.training.config import RunConfig, recipe
from tests.training_helpers import small_text, tiny_config


def test_every_setting_has_help_and_the_cli_reproduces_the_config(tmp_path):
    for f in RunConfig.__dataclass_fields__.values():
        assert len(f.metadata["help"]) > 10, f.name
    cfg = tiny_config(small_text(tmp_path), learning_rate=3e-4, eval_before=False)
    args = parser().parse_args(cfg.cli_args())
    rebuilt = RunConfig(**{k: getattr(args, k) for k in RunConfig.__dataclass_fields__ if getattr(args, k) is not None})
    assert rebuilt == cfg


@pytest.mark.parametrize("change, word", [(dict(learning_rate=5.0), "learning rate"), (dict(batch_size=0), "batch size"),
                                          (dict(seq_len=100_000), "seq len"), (dict(task="translate"), "task"),
                                          (dict(scratch_size="huge"), "scratch size"), (dict(bf16=True), "bf16")])
def test_out_of_range_settings_are_refused_with_the_setting_named(tmp_path, change, word):
    if "bf16" in change and torch.cuda.is_available():
        pytest.skip("this machine can do bf16")
    with pytest.raises(InputError, match=word):
        tiny_config(small_text(tmp_path), **change).validate()


def test_form_values_are_parsed_and_bad_numbers_explained(tmp_path):
    values = recipe("causal-lm").__dict__ | {"batch_size": 4.0, "max_steps": "10"}
    assert view.form_config(values).batch_size == 4
    with pytest.raises(InputError, match="whole number"):
        view.form_config(values | {"batch_size": 2.5})
    with pytest.raises(InputError, match="empty"):
        view.form_config(values | {"epochs": None})
    with pytest.raises(InputError, match="not a number"):
        view.form_config(values | {"epochs": "lots"})


def test_accelerate_command_matches_the_form(tmp_path):
    cmd = view.command(recipe("token-classification").__dict__ | {"learning_rate": 2e-4})
    assert cmd.startswith("accelerate launch --multi_gpu --num_processes 2 -m models.training --task token-classification")
    assert "--learning-rate 0.0002" in cmd


# --- data ----------------------------------------------------------------------------------------


def test_a_local_wikitext_copy_trains_on_valid_and_says_so(sample_data):
    data = datalib.load("causal-lm", "wikitext-2")
    assert "no train split" in data.note
    # the preview shows "guest @-@ starring" and "<unk>": the summary says what they are, as code (markdown would
    # take <unk> for a tag and drop it)
    summary, _rows = datalib.describe(data)
    assert "`@-@` is a hyphen inside a word" in summary and "`<unk>` stands for a rare word" in summary
    valid = (sample_data / "wikitext-2" / "valid.txt").read_text().splitlines()
    assert data.train == [line.strip() for line in valid if line.strip()]
    assert data.test[0] == "= Mill Brook =" and data.eval == data.test


def test_a_local_conll2003_copy_and_its_labels(sample_data):
    data = datalib.load("token-classification", "conll2003")
    assert (len(data.train), len(data.eval), len(data.test)) == (11, 2, 5)
    assert data.labels == ["O", "B-LOC", "I-LOC", "B-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    summary, rows = datalib.describe(data)
    assert "8 tags" in summary and rows[0][0].startswith("EU/B-ORG ministers met in Luxembourg/B-LOC")


def test_real_wikitext2_loads(wikitext2_dir):
    data = datalib.load("causal-lm", "wikitext-2")
    assert "no train split" in data.note
    assert len(data.train) > 2000 and len(data.test) > 2000 and data.train[0] != data.test[0]


def test_real_conll2003_loads_with_its_labels(conll2003_dir):
    data = datalib.load("token-classification", "conll2003")
    assert len(data.train) > 14000 and len(data.test) > 3000
    assert data.labels[0] == "O" and {"B-PER", "I-ORG", "B-LOC", "B-MISC"} <= set(data.labels)
    summary, rows = datalib.describe(data)
    assert "9 tags" in summary and "/B-" in rows[0][0]


def test_defaults_are_data_sets_that_load_here(monkeypatch, sample_data):
    """Offline with no data folder the form starts on the embedded data; with a local copy, on the real sets."""
    assert view.recipe("causal-lm").dataset == "wikitext-2"
    assert view.recipe("token-classification").dataset == "conll2003"
    assert datalib.choices("causal-lm")[0] == ("WikiText-2 (Wikipedia articles)", "wikitext-2")
    monkeypatch.delenv("LMLAB_DATA_DIR")
    assert view.recipe("causal-lm").dataset == "canterbury"
    assert view.recipe("token-classification").dataset == "twitter-ner"
    for task, real in (("causal-lm", "wikitext-2"), ("token-classification", "conll2003")):
        assert [key for label, key in datalib.choices(task) if "not available here" in label] == [real]
        datalib.load(task, view.recipe(task).dataset)  # the default loads
    with pytest.raises(InputError, match="wikitext-2 needs the Hugging Face hub.* data folder"):
        datalib.load("causal-lm", "wikitext-2")


@pytest.mark.parametrize("content, message", [
    (b"", "empty"), (b"\x00\x01binary\x00" * 50, "binary"), (b"caf\xe9 au lait\n" * 50, "not UTF-8"),
    (b"Paris B-LOC\nis O\n\nBerlin\n", "line 4"), (b"Paris B-LOC\nis BANANA\n", "line 2"),
    (b"Paris B-LOC\nis O\n", "too small"),
])
def test_bad_conll_uploads_get_clear_messages(tmp_path, content, message):
    path = tmp_path / "bad.conll"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        datalib.load("token-classification", "upload", str(path))


@pytest.mark.parametrize("content, message", [(b"", "empty"), (b"\x00\xff" * 100, "binary"),
                                              (b"short text", "too small"), (b"ok\n\xff\xfe bad\n" * 40, "line 2")])
def test_bad_text_uploads_get_clear_messages(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        datalib.load("causal-lm", "upload", str(path))


def test_dataset_must_fit_the_task():
    with pytest.raises(InputError, match="does not fit"):
        datalib.load("causal-lm", "conll2003")


# --- metrics -------------------------------------------------------------------------------------


def test_perplexity_is_exp_of_the_mean_loss():
    assert metrics.perplexity(2.0 * 10, 10) == pytest.approx(math.exp(2.0))
    with pytest.raises(ValueError):
        metrics.perplexity(1.0, 0)


def test_bleu_and_chrf_are_sacrebleu_on_the_same_strings():
    hyps, refs = ["the cat sat on the mat", "a dog barked loudly"], ["the cat sat on a mat", "the dog barked"]
    got = metrics.bleu_chrf(hyps, refs)
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert metrics.bleu_chrf(refs, refs)["bleu"] == pytest.approx(100.0)


def test_seqeval_counts_whole_entities():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "O"]]  # 2 of 3 entities found, no false positive
    report = metrics.seqeval_report(true, pred)
    assert report["precision"] == pytest.approx(1.0) and report["recall"] == pytest.approx(2 / 3)
    assert report["f1"] == pytest.approx(0.8)
    assert report["per_type"]["LOC"]["recall"] == 0.0 and report["per_type"]["PER"]["f1"] == 1.0
    # a partial span is a miss at entity level
    assert metrics.seqeval_report([["B-PER", "I-PER"]], [["B-PER", "O"]])["f1"] == 0.0


def test_model_perplexity_matches_the_models_own_loss(tiny_gpt2, gpt2_tokenizer):
    blocks = train.lm_blocks(gpt2_tokenizer, ["The quick brown fox jumps over the lazy dog. " * 20], 32)
    assert len(blocks) >= 2 and all(len(b["input_ids"]) == 32 for b in blocks)
    got = train.lm_perplexity(tiny_gpt2.model, blocks[:2])
    ids = torch.tensor([b["input_ids"] for b in blocks[:2]])
    with torch.no_grad():
        loss = tiny_gpt2.model(input_ids=ids, labels=ids).loss.item()  # mean over the 2 x 31 predicted tokens
    assert got["tokens"] == 62
    assert got["perplexity"] == pytest.approx(math.exp(loss), rel=1e-4)


def test_bleu_compares_greedy_continuations_with_the_real_next_32_tokens(tiny_gpt2, gpt2_tokenizer, monkeypatch):
    line = " ".join(f"word{i}" for i in range(80))
    pairs = train.continuation_pairs(gpt2_tokenizer, [line, "too short"], 4)
    ids = gpt2_tokenizer(line, add_special_tokens=False)["input_ids"]
    assert pairs[0][0] == ids[:32] and pairs[0][1] == gpt2_tokenizer.decode(ids[32:64])
    seen = {}

    def fake(hyps, refs):
        seen.update(hyps=hyps, refs=refs)
        return {"bleu": 1.0, "chrf": 2.0}

    monkeypatch.setattr(metrics, "bleu_chrf", fake)
    out = train.lm_bleu(tiny_gpt2.model, gpt2_tokenizer, pairs[:1])
    assert seen["refs"] == [pairs[0][1]]
    expected = tiny_gpt2.model.generate(input_ids=torch.tensor([ids[:32]]), do_sample=False, max_new_tokens=32,
                                        pad_token_id=gpt2_tokenizer.pad_token_id)[0, 32:]
    assert seen["hyps"] == [gpt2_tokenizer.decode(expected, skip_special_tokens=True)]
    assert out["bleu"] == 1.0


def test_lm_bleu_respects_the_model_context(gpt2_tokenizer):
    """A model with 40 positions continues 8 tokens (and says so); one with 32 cannot be scored."""
    from transformers import GPT2Config, GPT2LMHeadModel

    line = " ".join(f"word{i}" for i in range(80))
    pairs = train.continuation_pairs(gpt2_tokenizer, [line], 2)
    for positions, expect in ((40, 8), (32, 0)):
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=positions,
                                           vocab_size=len(gpt2_tokenizer))).eval()
        out = train.lm_bleu(model, gpt2_tokenizer, pairs[:1])
        if expect:
            assert "8 tokens" in out["capped"] and "bleu" in out
        else:
            assert "skipped" in out and "bleu" not in out


@pytest.fixture(scope="module")
def tiny_tagger():
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    from models.core import assets

    tok = AutoTokenizer.from_pretrained(str(assets.path("all-minilm-l6-v2")))
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    torch.manual_seed(0)
    model = BertForTokenClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                                                  num_attention_heads=2, intermediate_size=64, num_labels=5,
                                                  id2label=dict(enumerate(labels)),
                                                  label2id={t: i for i, t in enumerate(labels)}))
    return model.eval(), tok, labels


def test_ner_labels_go_on_the_first_word_piece_only(tiny_tagger):
    _, tok, labels = tiny_tagger
    sentence = (["Wolfeschlegelsteinhausen", "visited", "Paris"], ["B-PER", "O", "B-LOC"])
    item = train.ner_features(tok, [sentence], {t: i for i, t in enumerate(labels)}, 64)[0]
    words = tok([sentence[0]], is_split_into_words=True).word_ids(0)
    first = [i for i, w in enumerate(words) if w is not None and (i == 0 or words[i - 1] != w)]
    assert [item["labels"][i] for i in first] == [1, 0, 3]
    assert sum(lab != -100 for lab in item["labels"]) == 3 and len(item["labels"]) > 5


def test_ner_evaluation_scores_one_tag_per_word(tiny_tagger, monkeypatch):
    model, tok, _ = tiny_tagger
    sentences = [(["John", "lives", "in", "Berlin"], ["B-PER", "O", "O", "B-LOC"]), (["Hello"], ["O"])]
    seen = {}
    monkeypatch.setattr(metrics, "seqeval_report", lambda t, p: seen.update(true=t, pred=p) or {"f1": 0.5})
    assert train.ner_eval(model, tok, sentences, 64) == {"f1": 0.5}
    assert seen["true"] == [s[1] for s in sentences]
    assert [len(p) for p in seen["pred"]] == [4, 1] and all(t in model.config.label2id for p in seen["pred"] for t in p)
    # truncation: words beyond the limit are tagged O, and still one tag per word
    long = [(["Berlin"] * 40, ["B-LOC"] * 40)]
    assert len(train.ner_predict(model, tok, long, 8)[0]) == 40


def test_public_mode_bounds_runs_before_any_process_starts(monkeypatch, tmp_path):
    from models.training import runs

    monkeypatch.setenv("LMLAB_PUBLIC", "1")
    before = len(runs.list_runs())
    with pytest.raises(InputError, match="max steps"):
        runs.start(tiny_config(small_text(tmp_path), max_steps=0))
    assert len(runs.list_runs()) == before

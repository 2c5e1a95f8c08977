"""LoRA runs with peft: settings refused before training, adapter-only run folders, pickers and exports."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

from models.core import registry
from models.core.errors import InputError
from models.training import lora, runs, view
from models.training.config import RunConfig
from tests.training_helpers import small_text, tiny_config, wait_until


@pytest.fixture(autouse=True)
def finished_runs_in_the_pickers():
    """What the app does at start (``app.build_demo``): finished runs are offered as models."""
    runs.register()


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A 2-layer GPT-2 with the real GPT-2 tokenizer saved as a local folder: a 'pretrained' base in seconds."""
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tok = registry.gpt2_tokenizer()
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, n_positions=128, vocab_size=len(tok))).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def lora_run(tiny_base, tmp_path_factory):
    text = small_text(tmp_path_factory.mktemp("data"))
    cfg = tiny_config(text, base=f"local:{tiny_base}", method="lora", lora_rank=4, lora_alpha=8, learning_rate=5e-3,
                      max_steps=6, bleu_samples=0, test_samples=4)
    run_id = runs.start(cfg)
    return run_id, wait_until(run_id, lambda s: s["state"] in runs.DONE, timeout=300)


def test_bad_lora_settings_are_refused_before_a_run_starts(tiny_base, tmp_path):
    text = small_text(tmp_path)
    before = {st["id"] for st in runs.list_runs()}
    with pytest.raises(InputError, match=r"query do not exist.*valid names: c_attn, c_fc, c_proj"):
        runs.start(tiny_config(text, base=f"local:{tiny_base}", method="lora", lora_targets="c_attn, query"))
    with pytest.raises(InputError, match="lora rank = 0 is out of range"):
        runs.start(tiny_config(text, base=f"local:{tiny_base}", method="lora", lora_rank=0))
    with pytest.raises(InputError, match="from scratch"):
        runs.start(tiny_config(text, method="lora"))
    assert {st["id"] for st in runs.list_runs()} == before  # no run folder, no process


def test_lora_checks_catalogue_models_in_public_mode(monkeypatch):
    monkeypatch.setenv("LMLAB_PUBLIC", "1")
    cfg = RunConfig(method="lora", base="smollm2-135m-instruct", dataset="wikitext-2")
    assert lora.check(cfg) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    with pytest.raises(InputError, match="valid names: .*down_proj.*q_proj"):
        lora.check(RunConfig(method="lora", base="smollm2-135m-instruct", lora_targets="c_attn"))


def test_per_architecture_default_targets():
    from transformers import BertConfig, BertForTokenClassification, LlamaConfig, LlamaForCausalLM

    llama = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, vocab_size=50))
    bert = BertForTokenClassification(BertConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                 num_attention_heads=2, vocab_size=50, num_labels=3))
    assert lora.targets(RunConfig(), "llama", lora.adaptable_modules(llama)) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert lora.targets(RunConfig(), "bert", lora.adaptable_modules(bert)) == ["query", "value"]
    assert "classifier" not in lora.adaptable_modules(bert)


def test_a_lora_run_keeps_only_the_adapter_and_trains_few_parameters(lora_run, tiny_base):
    run_id, st = lora_run
    assert st["state"] == "finished", st
    model = runs.runs_root() / run_id / "model"
    names = {p.name for p in model.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= names
    assert "model.safetensors" not in names
    adapter = json.loads((model / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["lora_alpha"] == 8 and sorted(adapter["target_modules"]) == ["c_attn", "c_proj"]
    assert Path(adapter["base_model_name_or_path"]) == tiny_base
    result = st["result"]
    assert 0 < result["trainable_params"] < result["total_params"] / 10
    # the field's name in the tab's headline, not the library's argument ("LoRA r=4")
    assert f"LoRA rank 4: {result['trainable_params']:,} trainable parameters" in view.snapshot(run_id).headline


def test_pickers_load_base_plus_adapter_and_exports_match(lora_run, tiny_base, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run_id, _ = lora_run
    key = f"run:{run_id}"
    assert key in [s.key for s in registry.catalogue(registry.CAUSAL_LM)]
    loaded = registry.load_causal_lm(key, device="cpu")
    ids = torch.tensor([[464, 3290, 318, 257, 1332]])
    base = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
    with torch.no_grad():
        plain = base(ids).logits
        picked = loaded.model(ids).logits
        reference = PeftModel.from_pretrained(base, str(runs.runs_root() / run_id / "model")).eval()(ids).logits
    assert torch.allclose(picked, reference, atol=1e-5)
    assert not torch.allclose(picked, plain, atol=1e-4)  # the adapter changed the model
    from models.compression.checkpoint import analysis as checkpoint_analysis

    adapter_file = str(runs.runs_root() / run_id / "model" / "adapter_model.safetensors")
    assert any(path == adapter_file and "LoRA adapter" in label for label, path in checkpoint_analysis.sources())
    with zipfile.ZipFile(view.zip_model(run_id, "adapter")) as zf:
        assert {f"{run_id}/adapter_model.safetensors", f"{run_id}/README.md"} <= set(zf.namelist())
        assert f"{run_id}/model.safetensors" not in zf.namelist()
        card = zf.read(f"{run_id}/README.md").decode()
    assert "LoRA (peft), rank 4, alpha 8" in card and "| perplexity |" in card and "licence" in card
    assert "trainable parameters:" in card and "weights from step 6 of 6" in card
    with zipfile.ZipFile(view.zip_model(run_id, "merged")) as zf:
        assert f"{run_id}-merged/model.safetensors" in zf.namelist()
        zf.extractall(tmp_path)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / f"{run_id}-merged").eval()
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, reference, atol=1e-4)


def test_ner_lora_trains_the_fresh_head_and_the_ner_tab_loads_it(tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertModel

    from models.core import assets
    from models.ner import tagger

    base = tmp_path / "tiny-bert"
    tok = AutoTokenizer.from_pretrained(str(assets.path("all-minilm-l6-v2")))
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(base)
    tok.save_pretrained(base)
    cfg = RunConfig(task="token-classification", base=f"local:{base}", dataset="twitter-ner", max_steps=3,
                    batch_size=8, seq_len=64, eval_steps=0, test_samples=20, logging_steps=1, method="lora",
                    lora_rank=4, learning_rate=1e-3)
    run_id = runs.start(cfg)
    st = wait_until(run_id, lambda s: s["state"] in runs.DONE, timeout=180)
    assert st["state"] == "finished", st
    model = runs.runs_root() / run_id / "model"
    from safetensors import safe_open

    with safe_open(str(model / "adapter_model.safetensors"), "pt") as fh:
        assert any("classifier" in k for k in fh.keys())  # the head is saved with the adapter
    loaded = tagger.load(f"run:{run_id}", device="cpu").loaded
    assert "B-person" in loaded.model.config.label2id
    assert loaded.model.config.num_labels == len(json.loads((model / lora.LABELS_FILE).read_text()))


def _tiny_folder(folder: Path, tied: bool) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = registry.gpt2_tokenizer()
    torch.manual_seed(1)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, n_positions=128, vocab_size=len(tok),
                               tie_word_embeddings=tied)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _extracted(run_id: str, kind: str, into: Path) -> Path:
    with zipfile.ZipFile(view.zip_model(run_id, kind)) as zf:
        zf.extractall(into / kind)
        return into / kind / zf.namelist()[0].split("/")[0]


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_every_export_computes_what_the_app_serves(tied, tmp_path):
    """Full, adapter and merged downloads give the served model's logits on the same input, with LoRA on the
    input embeddings too (tied to the output layer in GPT-2: the merge once rewrote the output layer)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = _tiny_folder(tmp_path / "base", tied)
    text = small_text(tmp_path)
    ids = torch.tensor([[464, 3290, 318, 257, 1332, 13]])
    exports = {}
    for method, targets in (("lora", "wte, c_attn"), ("full", "")):
        cfg = tiny_config(text, base=f"local:{base}", method=method, lora_targets=targets, lora_rank=4,
                          learning_rate=2e-2, max_steps=4, eval_steps=0, eval_before=False, bleu_samples=0,
                          test_samples=4)
        run_id = runs.start(cfg)
        assert wait_until(run_id, lambda s: s["state"] in runs.DONE, timeout=300)["state"] == "finished"
        served = registry.load_causal_lm(f"run:{run_id}", device="cpu").model.eval()
        with torch.no_grad():
            want = served(ids).logits
            for kind in view.export_kinds(run_id):
                folder = _extracted(run_id, kind, tmp_path / run_id)
                if kind == "adapter":
                    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(folder))
                else:
                    model = AutoModelForCausalLM.from_pretrained(folder)
                exports[(method, kind)] = (model.eval()(ids).logits - want).abs().max().item()
    assert set(exports) == {("lora", "adapter"), ("lora", "merged"), ("full", "model")}
    assert all(diff < 1e-4 for diff in exports.values()), exports


def test_lora_on_the_output_layer_says_why_it_is_excluded(tiny_base, tmp_path):
    with pytest.raises(InputError, match=r"lm_head exists but gets no LoRA adapter: it is the output layer.*tie"):
        runs.start(tiny_config(small_text(tmp_path), base=f"local:{tiny_base}", method="lora", lora_targets="lm_head"))

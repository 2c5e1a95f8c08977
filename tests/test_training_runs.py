"""Runs as real subprocesses: files, status transitions, queue, cancel, a killed process, accelerate."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models.core import registry
from models.training import runs, view
from models.training.config import RunConfig
from tests.training_helpers import small_text, tiny_config, wait_until


@pytest.fixture(autouse=True)
def finished_runs_in_the_pickers():
    """What the app does at start (``app.build_demo``): finished runs are offered as models."""
    runs.register()

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    text = small_text(tmp_path_factory.mktemp("data"))
    run_id = runs.start(tiny_config(text))
    seen = set()
    st = wait_until(run_id, lambda s: seen.add(s["state"]) or s["state"] in runs.DONE, timeout=180)
    return run_id, st, seen


def test_a_run_writes_config_metrics_status_and_a_safetensors_model(finished_run):
    run_id, st, seen = finished_run
    assert st["state"] == "finished", st
    assert seen <= {"queued", "running", "finished"} and "finished" in seen
    folder = runs.runs_root() / run_id
    assert json.loads((folder / "config.json").read_text())["base"] == "scratch-gpt2"
    records = runs.read_metrics(run_id)
    train = [r for r in records if "loss" in r and "event" not in r]
    assert [r["step"] for r in train] == list(range(1, 7))
    for r in train:
        assert {"step", "epoch", "loss", "learning_rate", "tokens_per_s", "time"} <= set(r)
        assert r["tokens_per_s"] > 0 and r["loss"] > 0
    assert [r["step"] for r in records if "eval_loss" in r] == [3, 6]
    before = next(r for r in records if r.get("event") == "eval_before")
    after = next(r for r in records if r.get("event") == "eval_after")
    for r in (before, after):
        assert r["perplexity"] == pytest.approx(2.718281828 ** r["loss"], rel=1e-6)
        assert 0 <= r["bleu"] <= 100 and 0 <= r["chrf"] <= 100
    assert after["perplexity"] < before["perplexity"]  # six steps at lr 1e-3 from random weights must help
    assert st["step"] == 6 and st["summary"].startswith("perplexity")
    model = folder / "model"
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in model.iterdir()}
    assert not (model / "training_args.bin").exists() and not (folder / ".model.tmp").exists()


def test_finished_model_appears_in_the_pickers_and_loads(finished_run):
    run_id, _, _ = finished_run
    keys = [s.key for s in registry.catalogue(registry.CAUSAL_LM)]
    assert f"run:{run_id}" in keys
    assert f"run:{run_id}" not in [s.key for s in registry.catalogue(registry.TOKEN_CLASSIFICATION)]
    loaded = registry.load_causal_lm(f"run:{run_id}", device="cpu")
    assert loaded.model.config.n_layer == 2


def test_snapshot_history_and_zip_come_from_the_files(finished_run):
    import zipfile

    run_id, _, _ = finished_run
    snap = view.snapshot(run_id)
    assert snap.state == "finished" and "step 6/6" in snap.headline
    assert snap.series["training loss"][0] == [1, 2, 3, 4, 5, 6]
    assert snap.series["validation loss"][0] == [3, 6]
    assert [row[0] for row in snap.evaluation][:3] == ["test perplexity (lower is better)",
                                                       "test loss, bits per token", "same in nats (× ln 2)"]
    perplexity, bits, nats = (row[2] for row in snap.evaluation[:3])
    assert bits == pytest.approx(nats / math.log(2), abs=1e-3) and perplexity == pytest.approx(2 ** bits, rel=1e-3)
    records = [r for r in runs.read_metrics(run_id) if r.get("loss") is not None and "event" not in r]
    assert snap.series["training loss"][1] == pytest.approx([r["loss"] / math.log(2) for r in records])  # in bits
    assert snap.loss_unit == "bits per token"
    # the test split's loss before and after, beside the batches' noisy line (a class read a climbing training
    # loss as failure while the perplexity fell)
    before, after = (next(r for r in runs.read_metrics(run_id) if r.get("event") == e) for e in ("eval_before", "eval_after"))
    assert snap.series[view.TEST_LOSS] == ([0, 6], [pytest.approx(before["loss"] / math.log(2)),
                                                    pytest.approx(after["loss"] / math.log(2))])
    name = view.name_of(run_id)  # a teacher reads the model, the data and the time, not the folder's id
    assert run_id not in name and name.startswith("GPT-2 from scratch on your own .txt file, started")
    assert name in snap.headline and run_id not in snap.headline
    assert any(row[0] == name and row[2] == "finished" for row in view.history())
    assert (name, run_id) in view.run_choices()
    assert view.compare([run_id])[name][0] == [1, 2, 3, 4, 5, 6]
    with zipfile.ZipFile(view.zip_model(run_id)) as zf:
        assert f"{run_id}/model.safetensors" in zf.namelist()


def test_queue_cancel_and_a_process_killed_from_outside(tmp_path):
    text = small_text(tmp_path)
    forever = dict(max_steps=1_000_000, eval_steps=0, eval_before=False, bleu_samples=0)
    first = runs.start(tiny_config(text, **forever))
    second = runs.start(tiny_config(text, **forever))  # started at once: waits for the device
    st1 = wait_until(first, lambda s: s["state"] == "running" and s.get("step", 0) > 0)
    st2 = runs.status(second)
    assert st2["state"] == "queued" and st2["queue_position"] == 1
    assert view.latest_run(active_only=True) == first  # a reloaded page reconnects to the running one
    assert "run(s) ahead" in view.snapshot(second).headline
    third = runs.start(tiny_config(text, **forever))
    wait_until(third, lambda s: s["state"] == "queued" and s.get("queue_position") == 2)
    runs.cancel(third)  # a queued run leaves the queue at once
    assert wait_until(third, lambda s: s["state"] in runs.DONE, timeout=15)["state"] == "cancelled"

    os.kill(st1["pid"], signal.SIGKILL)  # killed from outside: the run is marked failed, the queue moves on
    st1 = wait_until(first, lambda s: s["state"] == "failed", timeout=30)
    assert "stopped unexpectedly" in st1["error"]
    wait_until(second, lambda s: s["state"] == "running" and s.get("step", 0) > 2, timeout=120)

    asked = time.monotonic()
    runs.cancel(second)
    st2 = wait_until(second, lambda s: s["state"] in runs.DONE, timeout=30)
    assert st2["state"] == "cancelled" and time.monotonic() - asked < 10
    assert "cancelled at step" in st2["error"]
    assert runs.read_metrics(second)  # what was logged is kept
    assert not (runs.runs_root() / second / "model").exists()


def test_failure_is_reported_with_its_message(tmp_path, monkeypatch):
    """A failure inside the run (a local model folder whose weights are missing) ends it as failed, with the
    message; an unknown model is refused before any run starts."""
    from models.core.errors import ModelUnavailable

    with pytest.raises(ModelUnavailable, match="nonexistent-model"):
        runs.start(tiny_config(small_text(tmp_path), task="causal-lm", base="local:/nonexistent-model"))
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2}')
    monkeypatch.setenv("LMLAB_MODEL_DIRS", str(broken))
    key = next(key for _, key in registry.choices(registry.CAUSAL_LM) if "broken-model" in key)
    run_id = runs.start(tiny_config(small_text(tmp_path), task="causal-lm", base=key))
    st = wait_until(run_id, lambda s: s["state"] in runs.DONE, timeout=120)
    assert st["state"] == "failed" and st["error"]


def test_unwritable_runs_folder_is_a_clear_error(tmp_path, monkeypatch):
    if os.geteuid() == 0:
        blocker = tmp_path / "home"
        blocker.write_text("a file where the data folder should be")  # root ignores permissions, not this
    else:
        blocker = tmp_path / "home"
        blocker.mkdir(mode=0o500)
    monkeypatch.setenv("LMLAB_HOME", str(blocker / "sub" if os.geteuid() == 0 else blocker))
    from models.core.errors import LMLabError

    with pytest.raises((LMLabError, OSError)):
        runs.start(tiny_config(small_text(tmp_path)))


@pytest.mark.skipif(shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None,
                    reason="accelerate CLI missing")
def test_the_same_command_runs_under_accelerate_launch_with_two_processes(tmp_path):
    text = small_text(tmp_path)
    # --multi_gpu starts one process per rank (torchrun); without CUDA they train on CPUs over gloo.
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "models.training",
           "--task", "causal-lm", "--base", "scratch-gpt2", "--dataset", "upload", "--upload", str(text),
           "--seq-len", "32", "--batch-size", "2", "--max-steps", "4", "--logging-steps", "1", "--no-eval-before",
           "--bleu-samples", "0", "--run-id", "accelerate-2proc"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    st = runs.status("accelerate-2proc")
    assert st["state"] == "finished" and st["world_size"] == 2
    assert [r["step"] for r in runs.read_metrics("accelerate-2proc") if "learning_rate" in r] == [1, 2, 3, 4]
    assert (runs.runs_root() / "accelerate-2proc" / "model" / "model.safetensors").is_file()


def test_ner_run_on_a_tiny_bert_reaches_the_ner_tab(tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertModel

    from models.core import assets
    from models.ner import tagger

    # A 1-layer BERT encoder with MiniLM's tokenizer stands in for the base model (seconds, not minutes).
    base = tmp_path / "tiny-bert"
    tok = AutoTokenizer.from_pretrained(str(assets.path("all-minilm-l6-v2")))
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(base)
    tok.save_pretrained(base)
    cfg = RunConfig(task="token-classification", base=f"local:{base}", dataset="twitter-ner", max_steps=3,
                    batch_size=8, seq_len=64, eval_steps=2, eval_samples=16, test_samples=30, logging_steps=1)
    run_id = runs.start(cfg)
    st = wait_until(run_id, lambda s: s["state"] in runs.DONE, timeout=180)
    assert st["state"] == "finished", st
    after = next(r for r in runs.read_metrics(run_id) if r.get("event") == "eval_after")
    assert {"precision", "recall", "f1", "macro_f1", "per_type"} <= set(after)
    assert any("f1" in r for r in runs.read_metrics(run_id) if "eval_loss" in r)  # seqeval every N steps too
    key = f"run:{run_id}"
    assert key in [s.key for s in registry.catalogue(registry.TOKEN_CLASSIFICATION)]
    loaded = tagger.load(key, device="cpu").loaded
    assert "O" in loaded.model.config.id2label.values() and "B-person" in loaded.model.config.label2id
    snap = view.snapshot(run_id)
    assert snap.evaluation[0][0].startswith("F1") and snap.per_type


@pytest.mark.parametrize("after_text", ["012 . He was also a part of the film", "a different continuation"])
def test_identical_before_and_after_texts_are_explained(after_text):
    """A 10-step demo lowers the test perplexity but often leaves the greedy continuation as it was; the tab then
    says why, with the two perplexities, instead of leaving a class to conclude that training did nothing."""
    folder = runs.runs_root() / f"same-text-{len(after_text)}"
    folder.mkdir()
    try:
        (folder / "config.json").write_text(tiny_config(Path("x.txt")).to_json())
        (folder / "status.json").write_text('{"state": "finished"}')
        common = {"example_prompt": "Robert is an actor .", "example_reference": "He had a guest role"}
        records = [{"event": "eval_before", "perplexity": 54.6065, "loss": 4.0, **common,
                    "example_output": "012 . He was also a part of the film"},
                   {"event": "eval_after", "perplexity": 48.1001, "loss": 3.87, **common, "example_output": after_text}]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        sample = dict(view.snapshot(folder.name).sample)
        assert sample["Before"] == "012 . He was also a part of the film" and sample["After"] == after_text
        if after_text == sample["Before"]:
            assert "54.6 → 48.1" in sample["Why the same text"] and "likeliest" in sample["Why the same text"]
        else:
            assert "Why the same text" not in sample
    finally:
        shutil.rmtree(folder)

"""Fine-tuning benchmark: the app's runner vs a plain ``Trainer.train()``, plus the real runs in docs/BENCHMARKS.md.

    python -m benchmarks.finetune                      # throughput: runner vs plain Trainer (minutes)
    python -m benchmarks.finetune --ner --lm           # also the real runs (long on a CPU)
    python -m benchmarks.finetune --ner-run ID         # report a real run already made by the runner
    python -m benchmarks.finetune --lora-vs-full --skip-throughput   # LoRA against full fine-tuning
    python -m benchmarks.finetune --demo --skip-throughput           # the two-minute demo, form and API
    python -m benchmarks.finetune --demo-ner --skip-throughput       # the same for the NER task's demo

The demo from defaults: the app is started offline with a fresh data folder (the embedded
Canterbury texts, as a teacher's laptop has them), then, alternately, a browser (Chromium)
opens the Fine-tune tab and presses Start without touching the form, and a script calls
``/train_start`` with ``{}``; each run's wall time is from the press or call to "finished" as the
page or ``/train_status`` shows it (polled every 0.5 s). The goal is <= 120 s on a 2-core CPU.
The machine's load average is recorded beside each run: on a shared machine it says how much of
the CPU the run had.

Throughput: the same scratch GPT-2, data (Canterbury blocks), seed and TrainingArguments,
trained alternately by ``models.training.train.train`` (callback writing metrics.jsonl and
status.json every step) and by a bare Trainer; tokens/s of ``trainer.train()`` for each,
the best of the repeats. Prints a markdown table and writes benchmarks/results/finetune.json.

LoRA against full fine-tuning: the same base model, data, seed and steps, once with each
method, each as its own ``python -m models.training`` process (so the peak memory is that
run's own): trainable parameters, training tokens/s, peak memory (resident memory on a CPU,
torch's allocated memory on a GPU), and test quality before/after (perplexity for SmolLM2 on
WikiText-2, seqeval F1 for MiniLM on CoNLL-2003).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from models.training import data as datalib
from models.training import runs, train
from models.training.config import RunConfig

RESULTS = Path(__file__).resolve().parent / "results" / "finetune.json"


def throughput_config(steps: int) -> RunConfig:
    return RunConfig(task="causal-lm", base="scratch-gpt2", dataset="canterbury", scratch_size="small", seq_len=128,
                     batch_size=8, max_steps=steps, logging_steps=1, eval_before=False, bleu_samples=0,
                     learning_rate=5e-4, seed=0)


def plain_trainer_tokens_per_s(cfg: RunConfig, items) -> float:
    """The baseline: the same model, data and arguments through Trainer.train() with no callback."""
    from transformers import Trainer, TrainingArguments, default_data_collator

    model, tokenizer = train.load_base(cfg)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, learning_rate=cfg.learning_rate, max_steps=cfg.max_steps,
                                 per_device_train_batch_size=cfg.batch_size, warmup_steps=cfg.warmup_ratio,
                                 weight_decay=cfg.weight_decay, lr_scheduler_type="linear", seed=cfg.seed,
                                 logging_steps=cfg.logging_steps, save_strategy="no", report_to="none",
                                 disable_tqdm=True, use_cpu=not torch.cuda.is_available())
        trainer = Trainer(model=model, args=args, train_dataset=train.ListDataset(items),
                          data_collator=default_data_collator, processing_class=tokenizer)
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    return cfg.max_steps * cfg.batch_size * cfg.seq_len / seconds


def runner_tokens_per_s(cfg: RunConfig) -> float:
    folder = runs.new_run_dir(cfg)
    result = train.train(cfg, folder)
    return result["steps"] * cfg.batch_size * cfg.seq_len / result["train_seconds"]


def throughput(steps: int, repeats: int) -> dict:
    cfg = throughput_config(steps)
    data = datalib.load(cfg.task, cfg.dataset)
    _, tokenizer = train.load_base(cfg)
    items = train.lm_blocks(tokenizer, data.train, cfg.seq_len)
    app, plain = [], []
    for _ in range(repeats):  # alternate, so drifting machine load hits both sides alike
        plain.append(plain_trainer_tokens_per_s(cfg, items))
        app.append(runner_tokens_per_s(cfg))
    return {"model": "GPT-2 from scratch, 4 layers x 256 (small)", "data": "Canterbury, 128-token blocks",
            "steps": steps, "batch_size": cfg.batch_size, "repeats": repeats,
            "runner_tokens_per_s": app, "plain_trainer_tokens_per_s": plain,
            "ratio_best": max(app) / max(plain)}


def real_run(cfg: RunConfig | None, run_id: str | None) -> dict:
    """Run a config through the app's runner now (cfg), or read a finished run (run_id)."""
    if cfg is not None:
        folder = runs.new_run_dir(cfg)
        t0 = time.time()
        code = runs.run_in_folder(folder, cfg)
        run_id = folder.name
        if code:
            raise SystemExit(f"run {run_id} failed: {runs.status(run_id).get('error')}")
        wall = time.time() - t0
    st = runs.status(run_id)
    if st.get("state") != "finished":
        raise SystemExit(f"run {run_id} is {st.get('state')}, not finished")
    wall = st["finished"] - st["created"] if cfg is None else wall
    result = st["result"]
    strip = {"per_type", "example_prompt", "example_output", "example_reference"}
    return {"run_id": run_id, "config": json.loads((runs.run_dir(run_id) / "config.json").read_text()),
            "wall_seconds": wall, "train_seconds": result["train_seconds"], "steps": result["steps"],
            "before": {k: v for k, v in result["before"].items() if k not in strip},
            "after": {k: v for k, v in result["after"].items() if k not in strip},
            "after_per_type": result["after"].get("per_type", {})}


def ner_config() -> RunConfig:
    from models.training.config import recipe

    return recipe("token-classification")


def lm_config(steps: int) -> RunConfig:
    return RunConfig(task="causal-lm", base="smollm2-135m-instruct", dataset="wikitext-2", seq_len=128, batch_size=4,
                     max_steps=steps, learning_rate=5e-5, logging_steps=5, bleu_samples=24, seed=42,
                     test_samples=64)  # 64 x 128 = 8,192 test tokens: the whole split takes too long on 2 shared cores


def lora_pair_configs(lm_steps: int, ner_steps: int) -> dict[str, RunConfig]:
    lm = dict(task="causal-lm", base="smollm2-135m-instruct", dataset="wikitext-2", seq_len=128, batch_size=4,
              max_steps=lm_steps, logging_steps=2, bleu_samples=0, test_samples=16, eval_steps=0, save_steps=0,
              seed=42, warmup_ratio=0.1)
    ner = dict(task="token-classification", base="all-minilm-l6-v2", dataset="conll2003", seq_len=128, batch_size=32,
               max_steps=ner_steps, logging_steps=10, test_samples=500, eval_steps=0, save_steps=0, seed=42,
               warmup_ratio=0.1)
    # The usual learning rates: LoRA's adapters start at zero and need a larger step than full fine-tuning.
    return {"lm full": RunConfig(**lm, learning_rate=5e-5),
            "lm lora": RunConfig(**lm, learning_rate=5e-4, method="lora", lora_rank=8, lora_alpha=16),
            "ner full": RunConfig(**ner, learning_rate=1e-4),
            "ner lora": RunConfig(**ner, learning_rate=1e-3, method="lora", lora_rank=8, lora_alpha=16)}


def lora_vs_full(lm_steps: int, ner_steps: int) -> dict:
    """Each config as its own training process; the numbers come from the run's status.json."""
    out = {}
    for name, cfg in lora_pair_configs(lm_steps, ner_steps).items():
        run_id = f"bench-{name.replace(' ', '-')}-{time.strftime('%H%M%S')}"
        proc = subprocess.run([sys.executable, "-m", "models.training", "--run-id", run_id, *cfg.cli_args(),
                               "--task", cfg.task], capture_output=True, text=True)
        st = runs.status(run_id)
        if proc.returncode or st.get("state") != "finished":
            raise SystemExit(f"{name} failed: {st.get('error')}\n{proc.stderr[-2000:]}")
        r = st["result"]
        key = "perplexity" if cfg.task == "causal-lm" else "f1"
        tokens = r["steps"] * cfg.batch_size * (cfg.seq_len if cfg.task == "causal-lm" else 0)
        out[name] = {"run_id": run_id, "config": json.loads(cfg.to_json()), "steps": r["steps"],
                     "trainable_params": r["trainable_params"], "total_params": r["total_params"],
                     "train_seconds": r["train_seconds"], "peak_memory_bytes": r["peak_memory_bytes"],
                     "tokens_per_s": tokens / r["train_seconds"] if tokens else st.get("tokens_per_s"),
                     "metric": key, "before": r["before"].get(key), "after": r["after"].get(key)}
        print(f"{name}: {out[name]}", flush=True)
    return out


def _demo_runs(repeats: int, task: str = "causal-lm") -> list[dict]:
    """The demo of ``task`` from the untouched form (only the task chosen) and from /train_start, alternately."""
    import shutil

    from gradio_client import Client
    from playwright.sync_api import expect, sync_playwright

    from benchmarks.common import launch_app, stop_app
    from models.core import assets

    home = Path(tempfile.mkdtemp(prefix="lmlab-demo-bench-"))
    # A fresh data folder and no local data sets: the defaults a teacher's offline laptop starts with.
    os.environ.pop("LMLAB_DATA_DIR", None)
    app, url = launch_app(home / "app.log", extra_env={"LMLAB_HOME": str(home), "LMLAB_ASSETS_DIR": str(assets.root())})
    out = []
    try:
        client = Client(url, verbose=False)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium" if Path("/usr/bin/chromium").exists()
                                         else None, args=["--no-sandbox", "--headless"], headless=True)
            for _ in range(repeats):  # alternate, so drifting machine load hits both paths alike
                for path in ("form", "api"):
                    load = os.getloadavg()[0]
                    if path == "api":
                        t0 = time.monotonic()
                        run_id = client.predict({} if task == "causal-lm" else {"task": task},
                                                api_name="/train_start")
                        while (st := client.predict(run_id, api_name="/train_status"))["state"] in ("queued",
                                                                                                 "running"):
                            time.sleep(0.5)
                        wall = time.monotonic() - t0
                    else:
                        page = browser.new_page(viewport={"width": 1400, "height": 900})
                        page.goto(url)
                        page.get_by_role("tab", name="Fine-tune").click()
                        if task != "causal-lm":
                            page.locator("#ft-task").get_by_text("Token classification").click()
                            expect(page.locator("#ft-base input")).to_have_value(re.compile("MiniLM"))
                        t0 = time.monotonic()
                        page.click("#ft-start")
                        expect(page.locator("#ft-status")).to_contain_text("finished", timeout=900_000)
                        wall = time.monotonic() - t0
                        shot = Path(tempfile.gettempdir()) / "lmlab-demo-finished.png"  # to look at, not kept
                        page.screenshot(path=str(shot), full_page=True)
                        page.close()
                        run_id = client.predict(api_name="/runs")[0]["id"]
                        st = client.predict(run_id, api_name="/train_status")
                    if st["state"] != "finished":
                        raise SystemExit(f"{path} run {run_id} is {st['state']}: {st.get('error')}")
                    r = st["result"]
                    cfg = next(run["config"] for run in client.predict(api_name="/runs") if run["id"] == run_id)
                    metric = "perplexity" if task == "causal-lm" else "f1"
                    out.append({"path": path, "wall_seconds": wall, "train_seconds": r["train_seconds"],
                                "run_cpu_seconds": r.get("cpu_seconds"),
                                "steps": r["steps"], "tokens": r["steps"] * cfg["batch_size"] * cfg["seq_len"],
                                "base": cfg["base"], "method": cfg["method"], "dataset": cfg["dataset"],
                                "test_blocks": cfg["test_samples"], "metric": metric,
                                "before": r["before"][metric], "after": r["after"][metric], "load_average_before": load,
                                "load_average_after": os.getloadavg()[0]})
                    print(f"demo via {path}: {out[-1]}", flush=True)
            browser.close()
    finally:
        stop_app(app)
        shutil.rmtree(home, ignore_errors=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30, help="training steps per throughput measurement")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--ner", action="store_true", help="run MiniLM-L6 on the full CoNLL-2003 train split now")
    p.add_argument("--ner-run", default=None, help="report this finished NER run instead of running one")
    p.add_argument("--lm", action="store_true", help="run SmolLM2-135M on WikiText-2 now")
    p.add_argument("--lm-run", default=None, help="report this finished causal-LM run instead of running one")
    p.add_argument("--lm-steps", type=int, default=40)
    p.add_argument("--skip-throughput", action="store_true", help="keep the throughput figures already saved")
    p.add_argument("--lora-vs-full", action="store_true", help="LoRA against full fine-tuning, same model/data/steps")
    p.add_argument("--pair-lm-steps", type=int, default=20)
    p.add_argument("--pair-ner-steps", type=int, default=60)
    p.add_argument("--demo", action="store_true", help="the demo from the form's defaults and /train_start {}")
    p.add_argument("--demo-ner", action="store_true", help="the NER task's demo (form: the task chosen, then Start)")
    p.add_argument("--demo-repeats", type=int, default=1)
    args = p.parse_args()

    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                      f"{'cuda' if torch.cuda.is_available() else 'cpu'}", "date": time.strftime("%Y-%m-%d")}
    out["throughput"] = old.get("throughput") if args.skip_throughput else throughput(args.steps, args.repeats)
    if args.ner or args.ner_run:
        out["ner_minilm_conll2003"] = real_run(ner_config() if args.ner else None, args.ner_run)
    elif "ner_minilm_conll2003" in old:
        out["ner_minilm_conll2003"] = old["ner_minilm_conll2003"]
    if args.lm or args.lm_run:
        out["lm_smollm2_wikitext2"] = real_run(lm_config(args.lm_steps) if args.lm else None, args.lm_run)
    elif "lm_smollm2_wikitext2" in old:
        out["lm_smollm2_wikitext2"] = old["lm_smollm2_wikitext2"]
    if args.lora_vs_full:
        out["lora_vs_full"] = lora_vs_full(args.pair_lm_steps, args.pair_ner_steps)
    elif "lora_vs_full" in old:
        out["lora_vs_full"] = old["lora_vs_full"]
    if args.demo:
        out["demo_from_defaults"] = _demo_runs(args.demo_repeats)
    elif "demo_from_defaults" in old:
        out["demo_from_defaults"] = old["demo_from_defaults"]
    if args.demo_ner:
        out["ner_demo_from_defaults"] = _demo_runs(args.demo_repeats, "token-classification")
    elif "ner_demo_from_defaults" in old:
        out["ner_demo_from_defaults"] = old["ner_demo_from_defaults"]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print_tables(out)


def _before_after(result: dict, columns: list[str], cells) -> None:
    """A markdown table of a run's metrics before and after fine-tuning; ``cells`` formats one side's row."""
    print("| | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns))
    for side in ("before", "after"):
        print(f"| {side} fine-tuning | {cells(result[side])} |")


def print_tables(out: dict) -> None:
    t = out.get("throughput")
    if t:
        print(f"\n### Training throughput ({t['model']}, {t['data']}, batch {t['batch_size']}, {t['steps']} steps, "
              f"best of {t['repeats']})\n")
        print("| trainer | tokens/s (best) | all repeats |\n|---|---:|---|")
        print(f"| app runner (callback, metrics.jsonl, status.json) | {max(t['runner_tokens_per_s']):,.0f} | "
              f"{', '.join(f'{x:,.0f}' for x in t['runner_tokens_per_s'])} |")
        print(f"| plain `Trainer.train()` | {max(t['plain_trainer_tokens_per_s']):,.0f} | "
              f"{', '.join(f'{x:,.0f}' for x in t['plain_trainer_tokens_per_s'])} |")
        print(f"\nratio runner / plain: **{t['ratio_best']:.3f}** (target >= 0.95)")
    ner = out.get("ner_minilm_conll2003")
    if ner:
        c = ner["config"]
        print(f"\n### MiniLM-L6 on CoNLL-2003 (full train split; {c['epochs']:g} epochs, batch {c['batch_size']}, "
              f"lr {c['learning_rate']:g}, linear decay, warm-up {c['warmup_ratio']:g})\n")
        _before_after(ner, ["precision", "recall", "F1 (test)"],
                      lambda r: f"{r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f}")
        print(f"\nwall time {ner['wall_seconds'] / 60:.1f} min (training {ner['train_seconds'] / 60:.1f} min, "
              f"{ner['steps']} steps) on {out['machine']}")
    lm = out.get("lm_smollm2_wikitext2")
    if lm:
        n_test = lm["before"]["tokens"]
        print(f"\n### SmolLM2-135M on WikiText-2 ({lm['steps']} steps of {lm['config']['batch_size']} x "
              f"{lm['config']['seq_len']} tokens; test perplexity on {n_test:,} predicted test tokens)\n")
        _before_after(lm, ["test perplexity", "BLEU", "chrF"],
                      lambda r: f"{r['perplexity']:.2f} | {r.get('bleu', 0):.2f} | {r.get('chrf', 0):.2f}")
        print(f"\nwall time {lm['wall_seconds'] / 60:.1f} min (training {lm['train_seconds'] / 60:.1f} min)")
    for key, task in (("demo_from_defaults", "causal-lm"), ("ner_demo_from_defaults", "token-classification")):
        demo = out.get(key)
        if not demo:
            continue
        d = demo[0]
        metric = d.get("metric", "perplexity")  # runs saved before NER's demo was measured: perplexity
        what = "test perplexity" if metric == "perplexity" else "test F1 (seqeval, entities)"
        print(f"\n### The fine-tune demo from the defaults, {task} ({d['base']}, {d['method']}, {d['steps']} steps, "
              f"{d['dataset']}; {what} on {d['test_blocks']} blocks or sentences)\n")
        print(f"| started from | wall time (press/call to finished) | training | CPU time of the run | "
              f"{what} before -> after | load average (before/after) |\n|---|---:|---:|---:|---|---|")
        for r in demo:
            call = "{}" if task == "causal-lm" else '{"task": "token-classification"}'
            form = "Start, nothing changed" if task == "causal-lm" else "the NER task chosen, then Start"
            where = f"the form ({form})" if r["path"] == "form" else f"`/train_start` with `{call}`"
            cpu = f"{r['run_cpu_seconds']:.0f} s" if r.get("run_cpu_seconds") else "–"
            before, after = r.get("before", r.get("perplexity_before")), r.get("after", r.get("perplexity_after"))
            print(f"| {where} | {r['wall_seconds']:.0f} s | {r['train_seconds']:.0f} s | {cpu} | "
                  f"{before:.3f} -> {after:.3f} | {r['load_average_before']:.1f} / {r['load_average_after']:.1f} |")
        print("\ngoal: <= 120 s on a 2-core CPU")
    pair = out.get("lora_vs_full")
    if pair:
        print("\n### LoRA against full fine-tuning (same base, data, seed and steps; each its own process)\n")
        print("| run | steps | trainable params | tokens/s (training) | peak memory | test metric before | after |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, r in pair.items():
            share = r["trainable_params"] / r["total_params"]
            print(f"| {name} (lr {r['config']['learning_rate']:g}) | {r['steps']} | {r['trainable_params']:,} "
                  f"({share:.2%}) | {r['tokens_per_s']:,.0f} | {r['peak_memory_bytes'] / 2**30:.2f} GiB | "
                  f"{r['metric']} {r['before']:.3f} | {r['after']:.3f} |")


if __name__ == "__main__":
    main()

"""What the Fine-tune tab shows, computed here so the tab only formats: run snapshots, history rows,
loss series, before/after tables, the equivalent command line, model zips.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field, fields
from functools import lru_cache
from math import log
from pathlib import Path

from models.core import handout, registry
from models.core.errors import InputError
from models.training import bases, card, lora, runs
from models.training import data as datalib
from models.training.config import CAUSAL_LM, DEMO, RunConfig
from models.training.config import recipe as config_recipe
from models.training.run_folder import read_json

LN2 = log(2)


def form_config(values: dict) -> RunConfig:
    """Widget values (numbers may arrive as floats or None) -> a validated RunConfig."""
    unknown = set(values) - {f.name for f in fields(RunConfig)}
    if unknown:
        raise InputError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    cfg = {}
    for f in fields(RunConfig):
        if f.name not in values:
            continue
        value = values[f.name]
        if value is None or value == "":
            if f.default == "":  # text settings whose empty value means something (no upload, default targets)
                value = ""
            else:
                raise InputError(f"{f.name.replace('_', ' ')} is empty: enter a value")
        kind, label = str(f.type), f.name.replace("_", " ")
        if kind in ("int", "float"):
            try:
                number = float(value)
            except (TypeError, ValueError) as exc:
                raise InputError(f"{label} = {value!r} is not a number") from exc
            if kind == "int" and number != int(number):
                raise InputError(f"{label} must be a whole number, not {value}")
            value = int(number) if kind == "int" else number
        else:
            value = bool(value) if kind == "bool" else str(value)
        cfg[f.name] = value
    return RunConfig.from_dict(cfg).validate()


def recipe(task: str, preset: str = DEMO) -> RunConfig:
    """The form's starting values for ``task`` and ``preset``, on a data set that loads here (the embedded one
    offline)."""
    cfg = config_recipe(task, preset)
    cfg.dataset = datalib.default_dataset(cfg.task)
    return cfg


@lru_cache(maxsize=8)
def _loaded(task: str, dataset: str, upload: str, mtime: float):
    return datalib.load(task, dataset, upload)


def dataset_info(task: str, dataset: str, upload: str = "") -> tuple[str, list[list[str]]]:
    """Size summary and preview rows of a dataset (cached: CoNLL-2003 takes a second to parse)."""
    mtime = os.path.getmtime(upload) if upload and os.path.exists(upload) else 0.0
    return datalib.describe(_loaded(task, dataset, upload or "", mtime))


def start(values: dict) -> str:
    """Check the settings, then the data, then launch: each error is about the first thing that is wrong."""
    cfg = form_config(values)
    runs.check(cfg)  # ranges and public-mode limits (file names included) before any data is read
    dataset_info(cfg.task, cfg.dataset, cfg.upload)  # a bad upload fails here, before a process starts
    return runs.start(cfg)


def command(values: dict, processes: int = 2) -> str:
    """The shell command that runs the same config under ``accelerate launch`` (several GPUs or machines)."""
    try:
        cfg = form_config(values)
    except InputError as exc:
        return f"# fix the form first: {exc}"
    args = cfg.cli_args()
    if cfg.upload:
        i = args.index("--upload")
        args[i + 1] = "my_data" + os.path.splitext(cfg.upload)[1]  # the upload's temp path means nothing elsewhere
    if "--task" not in args:
        args = ["--task", cfg.task, *args]
    flags = " ".join(shlex.quote(a) for a in args)
    return (f"accelerate launch --multi_gpu --num_processes {processes} -m models.training {flags}\n"
            f"# one machine, no accelerate: python -m models.training {flags}")


# --- a run's live view ------------------------------------------------------------------------


@dataclass
class Snapshot:
    run_id: str
    state: str
    headline: str  # one markdown line: state, step/total, elapsed, ETA, tokens/s
    series: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)  # loss curves
    lr: tuple[list[float], list[float]] = field(default_factory=lambda: ([], []))
    evaluation: list[list] = field(default_factory=list)  # rows: metric, before, after
    eval_header: list[str] = field(default_factory=list)
    per_type: list[list] = field(default_factory=list)
    sample: list[tuple[str, str]] = field(default_factory=list)  # (label, text): prompt, reference, before, after
    model_dir: str = ""
    status: dict = field(default_factory=dict)
    resumable: str = ""  # the checkpoint a Resume would start from ("" = cannot resume)
    signature: str = ""  # changes when the run's files change
    loss_unit: str = "bits per token"  # the unit of ``series``


def loss_unit(task: str | None) -> str:
    """The unit of the loss curves: bits per predicted token (causal LM) or per tagged word (NER)."""
    return "bits per tagged word" if task and task != CAUSAL_LM else "bits per token"


def _clock(seconds) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def base_choices(task: str) -> list[tuple[str, str]]:
    """(label, key) of the base models that can load here now (offline: the embedded and cached ones)."""
    if task == CAUSAL_LM:
        return registry.choices(CAUSAL_LM) + [(label, key) for key, label in bases.causal_bases()
                                              if key == "scratch-gpt2"]
    hub = {"bert-base-cased": "google-bert/bert-base-cased"}
    return [(label, key) for key, label in bases.ner_bases()
            if key not in hub or registry.availability(registry.ModelSpec(key, label, task, "hub", hub[key]))[0]]


def with_preset(settings: dict) -> dict:
    """A script's settings over its preset's recipe (``"preset"``: demo, the default, or full): what is not
    given comes from the recipe, as a form would fill it. A GPT-2 from scratch given without a method trains
    fully, as the form switches it."""
    settings = dict(settings or {})
    preset = settings.pop("preset", DEMO)
    values = recipe(settings.get("task", CAUSAL_LM), preset).__dict__ | settings
    if "method" not in settings:
        values["method"] = method_for(values["base"], values["method"])
    return values


def method_for(base: str, method: str) -> str:
    """The form's method after a base is picked: a GPT-2 from scratch has no pretrained weights for LoRA to
    adapt, so it trains fully (the demo preset's LoRA would otherwise be refused at Start)."""
    return "full" if base == "scratch-gpt2" else method


def _base_name(key: str) -> str:

    labels = dict(bases.causal_bases() + bases.ner_bases())
    return labels.get(key, key).split(" (")[0]


def name_of(run_id: str) -> str:
    return run_name(runs.status(run_id) | {"config": read_json(runs.run_dir(run_id) / "config.json", {})})


def run_name(st: dict) -> str:
    """A run as a teacher names it: "SmolLM2-135M-Instruct on Canterbury, started 13:11" (its folder id stays
    for scripts)."""
    cfg = st.get("config") or {}
    data = datalib.datasets_for(cfg.get("task", CAUSAL_LM)).get(cfg.get("dataset"), cfg.get("dataset") or "?")
    started = time.strftime("%H:%M", time.localtime(st.get("created", 0)))
    day = time.strftime("%d %b", time.localtime(st.get("created", 0)))
    today = time.strftime("%d %b")
    lora = " (LoRA)" if cfg.get("method") == "lora" else ""
    return (f"{_base_name(cfg.get('base', '?'))}{lora} on {data.split(' (')[0]}, started "
            f"{started}{'' if day == today else ' on ' + day}")


def latest_run(active_only: bool = False) -> str:
    """The run a freshly loaded page shows: the newest running one, else the newest queued (or any) one."""
    listed = runs.list_runs()
    for states in (("running",), runs.ACTIVE) if active_only else (("running",), runs.ACTIVE + runs.DONE):
        for st in listed:
            if st.get("state") in states:
                return st["id"]
    return ""


def _same_text_note(before: dict, after: dict) -> str:
    """Why a greedy continuation can stay the same while the test perplexity moves (a short demo run does
    this: a class reads identical Before and After texts as "fine-tuning did nothing")."""
    pb, pa = before.get("perplexity"), after.get("perplexity")
    moved = f" (test perplexity {pb:.1f} → {pa:.1f})" if isinstance(pb, float | int) and isinstance(pa, float | int) \
        else ""
    return (f"the training moved the model's probabilities{moved}, but at every step of this continuation the same "
            "token stayed the likeliest, and greedy decoding writes only the likeliest token. A longer run (the full "
            "recipe) moves the probabilities further, until the likeliest tokens change too.")


TEST_LOSS = "test loss, before and after training"


def snapshot(run_id: str) -> Snapshot:
    runs.reap()
    st = runs.status(run_id)
    cfg = st.get("config") or read_json(runs.run_dir(run_id) / "config.json", {})
    records = runs.read_metrics(run_id)
    state = st.get("state", "?")
    icon = {"queued": "⏳", "running": "▶", "finished": "✅", "failed": "❌", "cancelled": "⏹️"}.get(state, "")
    parts = [f"{icon} **{state}**", run_name(st | {"config": cfg})]
    if state == "queued":
        parts.append(f"waiting for {st.get('device')}: {st.get('queue_position', 0)} run(s) ahead")
    if st.get("max_steps"):
        parts.append(f"step {st.get('step', 0)}/{st['max_steps']}")
    if st.get("resumes"):
        parts.append(f"resumed from step {st.get('resumed_from')}" + (f" ({st['resumes']}×)" if st["resumes"] > 1
                                                                       else ""))
    if st.get("elapsed") is not None:
        parts.append(f"elapsed {_clock(st['elapsed'])}")
    if state == "running" and st.get("eta") is not None:
        parts.append(f"ETA {_clock(st['eta'])}")
    if cfg.get("method") == "lora" and st.get("total_params"):
        parts.append(f"LoRA rank {cfg.get('lora_rank')}: {st['trainable_params']:,} trainable parameters "
                     f"({st['trainable_params'] / st['total_params']:.2%})")
    if st.get("tokens_per_s"):
        parts.append(f"{st['tokens_per_s']:,.0f} tokens/s")
    if state in runs.ACTIVE and st.get("phase"):
        parts.append(f"*{st['phase']}*" + (" (cancelling…)" if st.get("cancelling") else ""))
    headline = " · ".join(parts)
    if st.get("error") and state in ("failed", "cancelled"):
        headline += f"\n\n{'**Error:** ' if state == 'failed' else ''}{st['error']}"
    if st.get("summary"):
        headline += f"\n\n**Test:** {st['summary']}"

    # The Trainer logs cross-entropy in nats; a learner reads bits (the unit of the Compress tab): / ln 2.
    train = [(r["step"], r["loss"] / LN2) for r in records
             if r.get("loss") is not None and "step" in r and "event" not in r]
    evals = [(r["step"], r["eval_loss"] / LN2) for r in records if r.get("eval_loss") is not None]
    series = {"training loss": ([s for s, _ in train], [v for _, v in train])}
    if evals:
        series["validation loss"] = ([s for s, _ in evals], [v for _, v in evals])
        step, loss = min(evals, key=lambda p: p[1])
        kept = "best checkpoint" if cfg.get("keep_best") else "best validation loss"
        series[f"{kept} (step {step})"] = ([step], [loss])
    diverged = next((r for r in records if r.get("diverged")), None)
    if diverged:  # drawn where the last finite loss was, since NaN has no height
        last = (train or evals or [(0, 0.0)])[-1][1]
        series[f"diverged: loss NaN at step {diverged['step']}"] = ([diverged["step"]], [last])
    lr = [(r["step"], r["learning_rate"]) for r in records if r.get("learning_rate") is not None]

    before = next((r for r in records if r.get("event") == "eval_before"), {})
    after = next((r for r in records if r.get("event") == "eval_after"), {})
    # Each training loss is one batch's, and batches differ: over a 10-step demo the line can climb while the
    # test loss falls (a class read 5.5 -> 5.9 as failure beside perplexity 54.6 -> 48.1). The test split's loss
    # before and after training, in the same unit, is the line that says what training did.
    tested = [(0, before["loss"] / LN2)] if before.get("loss") is not None else []
    if after.get("loss") is not None:
        tested.append((after.get("step") or (train[-1][0] if train else 0), after["loss"] / LN2))
    if tested:
        series[TEST_LOSS] = ([s for s, _ in tested], [v for _, v in tested])
    snap = Snapshot(run_id, state, headline, series, ([s for s, _ in lr], [v for _, v in lr]), status=st,
                    signature=f"{run_id}:{state}:{len(records)}", loss_unit=loss_unit(cfg.get("task")))
    if cfg.get("task") == CAUSAL_LM:
        for side in (before, after):
            if side.get("loss") is not None:
                side["bits"] = side["loss"] / LN2
        keys = [("perplexity", "test perplexity (lower is better)"), ("bits", "test loss, bits per token"),
                ("loss", "same in nats (× ln 2)"),
                ("bleu", "BLEU of greedy continuations"), ("chrf", "chrF of greedy continuations")]
        after_sample = after.get("example_output")
        if after_sample or before.get("example_output"):
            snap.sample = [("Prompt", after.get("example_prompt") or before.get("example_prompt") or "–"),
                           ("Real continuation", after.get("example_reference") or before.get("example_reference") or "–"),
                           ("Before", before.get("example_output") or "–"), ("After", after_sample or "–")]
            if after_sample and after_sample == before.get("example_output"):
                snap.sample.append(("Why the same text", _same_text_note(before, after)))
    else:
        keys = [("f1", "F1 (micro, entity level)"), ("precision", "precision (micro)"), ("recall", "recall (micro)"),
                ("macro_f1", "F1 (macro over types)")]
        types = sorted(set(before.get("per_type", {})) | set(after.get("per_type", {})))
        for t in types:
            b, a = before.get("per_type", {}).get(t, {}), after.get("per_type", {}).get(t, {})
            snap.per_type.append([t, a.get("support", b.get("support", 0)), _r(b.get("precision")), _r(b.get("recall")),
                                  _r(b.get("f1")), _r(a.get("precision")), _r(a.get("recall")), _r(a.get("f1"))])
    snap.eval_header = ["metric (test split)", "before", "after"]
    snap.evaluation = [[label, _r(before.get(k)), _r(after.get(k))] for k, label in keys
                       if k in before or k in after]
    model = runs.runs_root() / run_id / "model"
    saved = any((model / name).is_file() for name in ("config.json", "adapter_config.json"))  # full or LoRA
    snap.model_dir = str(model) if state == "finished" and saved else ""
    if state in ("failed", "cancelled"):
        try:
            snap.resumable = runs.last_checkpoint(runs.run_dir(run_id)).name
        except InputError:
            snap.resumable = ""
    return snap


def _r(value):
    return None if value is None else round(float(value), 4)


# --- history and comparison --------------------------------------------------------------------


HISTORY_HEADERS = ["run", "task", "status", "test result", "duration"]


def history() -> list[list]:
    rows = []
    for st in runs.list_runs():
        cfg = st.get("config", {})
        end = st.get("finished") or (time.time() if st.get("state") in runs.ACTIVE else st.get("updated"))
        duration = _clock(end - st["started"]) if st.get("started") and end else "–"
        task = "next-token prediction" if cfg.get("task", CAUSAL_LM) == CAUSAL_LM else "named entities"
        rows.append([run_name(st), task, st.get("state"), st.get("summary") or (st.get("error") or "")[:80],
                     duration])
    return rows


def run_choices() -> list[tuple[str, str]]:
    """(name, id) pairs for the pickers, newest first."""
    return [(run_name(st), st["id"]) for st in runs.list_runs()]


def compare(run_ids: list[str]) -> dict[str, tuple[list[float], list[float]]]:
    """Training-loss curves of several runs in bits, keyed by the run's name."""
    series = {}
    for run_id in run_ids or []:
        pts = [(r["step"], r["loss"] / LN2) for r in runs.read_metrics(run_id)
               if r.get("loss") is not None and "step" in r and "event" not in r]
        name = name_of(run_id)
        series[name if name not in series else f"{name} ({run_id})"] = ([s for s, _ in pts], [v for _, v in pts])
    return series


def export_kinds(run_id: str) -> list[str]:
    """What a finished run can be downloaded as: model (full fine-tune), or adapter and merged (LoRA)."""
    folder = runs.run_dir(run_id) / "model"
    return ["adapter", "merged"] if (folder / "adapter_config.json").is_file() else ["model"]


def zip_model(run_id: str, kind: str = "") -> str:
    """The finished model as a zip (built once beside the run, written atomically; handed out in an unguessable
    folder), with a README.md model card.

    ``kind``: model (a full fine-tune), adapter (a LoRA run's adapter alone) or merged (base + adapter
    folded into plain safetensors weights); empty = the run's natural kind (model or adapter).
    """
    snap_dir = runs.run_dir(run_id) / "model"
    st = runs.status(run_id)
    if st.get("state") != "finished" or not snap_dir.is_dir():
        raise InputError(f"run {run_id} has no finished model to download")
    kinds = export_kinds(run_id)
    kind = kind or kinds[0]
    if kind not in kinds:
        raise InputError(f"run {run_id} can be downloaded as {' or '.join(kinds)}, not {kind}")
    name = run_id if kind != "merged" else f"{run_id}-merged"
    # built once beside the run (not served), handed out as a link in a fresh unguessable folder (handout)
    out = runs.runs_root() / run_id / f"lmlab-run-{name}.zip"
    if out.exists() and out.stat().st_mtime >= snap_dir.stat().st_mtime:
        return _hand_out(out)
    cfg = runs.read_config(run_id)
    readme = card.model_card(run_id, cfg, st, runs.read_metrics(run_id), kind)
    source, scratch = snap_dir, None
    if kind == "merged":
        scratch = Path(tempfile.mkdtemp(dir=out.parent, prefix=".merge-"))
        source = lora.merged(snap_dir, cfg.task, scratch)
    tmp = out.with_suffix(".zip.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(source.iterdir()):
                if path.is_file() and path.name != "README.md":
                    zf.write(path, f"{name}/{path.name}")
            zf.writestr(f"{name}/README.md", readme)
        os.replace(tmp, out)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return _hand_out(out)


def _hand_out(built: Path) -> str:
    out = handout.new_folder() / built.name
    try:
        os.link(built, out)  # no copy where the file system allows it
    except OSError:
        shutil.copyfile(built, out)
    return str(out)

"""The Fine-tune tab: a form, Start/Cancel, a live loss chart polled from the run folder, evaluation, history.

Runs are subprocesses writing into $LMLAB_HOME/runs/<id>/; this tab only reads those
files (every 1.5 s with gr.Timer), so a reload or a closed tab reconnects to the run.
"""

from __future__ import annotations

import html

import gradio as gr

from components import glossary
from components.common import COLUMN_MIN_WIDTH, explain, guard
from components.plots import loss_figure
from models.core import registry
from models.core.errors import InputError
from models.training import config as runconfig
from models.training import data as datalib
from models.training import runs, view

EXPLANATION = f"""
**Fine-tuning** continues training a pretrained model on new data, with a small learning rate, so it adapts
without forgetting what it knows. **LoRA** freezes the model and trains small added matrices instead: far fewer
numbers to learn, so the demo recipe uses it.

- **Causal LM** (GPT-2 / SmolLM2 on WikiText-2): the model learns to predict each next token. The **loss** is
  drawn in {glossary.hover("bits per token")}: the bits an arithmetic coder driven by the model would spend per
  token of the text, as in the Compress tab (the trainer computes it in nats; bits = nats / ln 2).
  {glossary.hover("perplexity", "Perplexity")} = 2^(bits per token): the number of equally likely tokens the
  model is "choosing between"; lower is better. **BLEU** and **chrF** compare the model's greedy continuation of
  32 held-out tokens with the real next 32 tokens.
- **Token classification** (BERT / MiniLM on CoNLL-2003): a fresh head on top of the encoder tags each word
  (B-PER, I-ORG, O, …). **seqeval** scores whole entities: precision, recall and F1 per type.
- The **learning rate** warms up, then decays linearly to zero. Validation loss rising while training loss falls
  means over-fitting.
- Runs go on in the background: close the tab, come back, and the chart continues. One run uses the device at a
  time; others wait in a queue. Finished models appear in the Generate, NER and Compress pickers.
"""

FORM_FIELDS = ["learning_rate", "epochs", "max_steps", "batch_size", "grad_accum", "seq_len", "warmup_ratio",
               "weight_decay", "seed", "eval_steps", "eval_samples", "bleu_samples", "max_train_samples",
               "test_samples", "logging_steps", "save_steps", "save_total_limit", "early_stopping_patience"]
FLAGS = ["eval_before", "bf16", "keep_best"]
LORA_FIELDS = ["method", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets"]
TASK_CHOICES = [("Causal LM (next-token prediction)", runconfig.CAUSAL_LM),
                ("Token classification (NER)", runconfig.TOKEN_CLASSIFICATION)]


def base_choices(task: str) -> list[tuple[str, str]]:
    return view.base_choices(task)


def dataset_choices(task: str) -> list[tuple[str, str]]:
    return datalib.choices(task)


def _values(task, base, dataset, upload, scratch_size, *numbers) -> dict:
    values = dict(task=task, base=base, dataset=dataset, upload=upload or "", scratch_size=scratch_size)
    values.update(zip(FORM_FIELDS + FLAGS + LORA_FIELDS, numbers, strict=True))
    return values


def on_task(task, preset):
    """Switching task or preset loads that recipe into the form."""
    cfg = view.recipe(task, preset)
    bases, sets = base_choices(task), dataset_choices(task)
    return [gr.Dropdown(choices=bases, value=cfg.base), gr.Dropdown(choices=sets, value=cfg.dataset),
            gr.Dropdown(visible=cfg.base == "scratch-gpt2")] + [getattr(cfg, name) for name in FORM_FIELDS + FLAGS + LORA_FIELDS]


def on_base(base, method):
    """A GPT-2 from scratch shows its size and trains fully; a pretrained base hides the size."""
    return view.method_for(base, method), gr.Dropdown(visible=base == "scratch-gpt2")


def on_dataset(task, dataset, upload):
    if dataset == "upload" and not upload:
        return "Upload a file (.txt for causal LM, CoNLL `token … tag` lines for NER).", []
    try:
        summary, rows = view.dataset_info(task, dataset, upload or "")
    except Exception as exc:  # shown in the form, so a bad upload is explained where it was made
        return f"⚠️ {exc}", []
    return summary, rows


@guard
def start(task, base, dataset, upload, scratch_size, *numbers):
    """Start a run: returns (run id, status line)."""
    run_id = view.start(_values(task, base, dataset, upload, scratch_size, *numbers))
    return run_id, f"⏳ started: {view.name_of(run_id)}"


def command(task, base, dataset, upload, scratch_size, *numbers) -> str:
    return view.command(_values(task, base, dataset, upload, scratch_size, *numbers))


def _sample_html(snap: view.Snapshot) -> str:
    """The before/after continuation, each text printed as it is: read as Markdown, Alice's `quote' passages
    lost their backtick and became grey code boxes (and a '*' or '_' in a text turned into emphasis)."""
    return "<div class='ft-sample'>" + "".join(
        f"<p><b>{label}:</b> <span class='ft-verbatim'>{html.escape(text)}</span></p>" for label, text in snap.sample
    ) + "</div>" if snap.sample else ""


def _resume_widgets(snap: view.Snapshot):
    """Resume for a run that did not finish and has a checkpoint; Start over, and why, for one that has none.
    Hidden before any run and for a running or finished run (there is nothing to resume), as docs/TABS.md says."""
    unfinished = snap.state in ("failed", "cancelled")
    why = ""
    if unfinished and not snap.resumable:
        try:
            runs.last_checkpoint(runs.run_dir(snap.run_id))
        except InputError as exc:  # says what is missing: no checkpoint saved, or which one is damaged
            why = str(exc)
    return (gr.Button(visible=unfinished and bool(snap.resumable)), gr.Button(visible=unfinished and not snap.resumable),
            gr.Markdown(why, visible=bool(why)))


NO_RESUME = (gr.Button(visible=False), gr.Button(visible=False), gr.Markdown("", visible=False))


def _eval_outputs(snap: view.Snapshot):
    per_type_visible = bool(snap.per_type)
    return (gr.Dataframe(value=snap.evaluation, headers=snap.eval_header),
            gr.Dataframe(value=snap.per_type, visible=per_type_visible),
            _sample_html(snap), *_resume_widgets(snap))


def poll(run_id, seen):
    """Timer tick: the watched run (or, after a reload, the newest active/latest run) -> widgets.

    Charts and tables are only re-sent when the run's files changed (``seen``), so they do not flicker.
    """
    run_id = run_id or view.latest_run(active_only=True) or view.latest_run()
    if not run_id:
        return "", "", "No runs yet: fill in the form and press **Start**.", *[gr.skip()] * 5, *NO_RESUME
    try:
        snap = view.snapshot(run_id)
    except Exception as exc:
        return run_id, "", f"⚠️ {exc}", *[gr.skip()] * 8
    if snap.signature == seen:
        return run_id, seen, snap.headline, *[gr.skip()] * 8
    lr_fig = loss_figure({"learning rate": snap.lr}, title="Learning rate", y_title="learning rate")
    started = any(xs for xs, _ in snap.series.values())
    loss_fig = loss_figure(snap.series, y_title=f"loss ({snap.loss_unit})",
                           title="Loss (lower is better)" if started else "Loss: drawn from the first training step")
    return (run_id, snap.signature, snap.headline, loss_fig, lr_fig,
            *_eval_outputs(snap))


@guard
def cancel(run_id):
    if not run_id:
        raise gr.Error("No run is selected.")
    st = runs.cancel(run_id)
    return f"⏹️ asked to stop: {view.name_of(run_id)} (now {st.get('state')})"


@guard
def resume(run_id):
    """Continue the watched run from its newest checkpoint (a failed or cancelled run)."""
    if not run_id:
        raise gr.Error("No run is selected.")
    runs.resume(run_id)
    return run_id, f"⏳ resuming from its last checkpoint: {view.name_of(run_id)}"


@guard
def start_over(run_id):
    """A new run with the watched run's settings (when it cannot be resumed)."""
    if not run_id:
        raise gr.Error("No run is selected.")
    new_id = runs.restart(run_id)
    return new_id, f"⏳ started again with the same settings: {view.name_of(new_id)}"


@guard
def download(run_id):
    if not run_id:
        raise gr.Error("No run is selected.")
    return view.zip_model(run_id)


@guard
def download_merged(run_id):
    if not run_id:
        raise gr.Error("No run is selected.")
    return view.zip_model(run_id, "merged")


def history_update():
    named = view.run_choices()
    return gr.Dataframe(value=view.history(), headers=view.HISTORY_HEADERS), gr.Dropdown(choices=named), \
        gr.Dropdown(choices=named)


def compare(run_ids):
    return loss_figure(view.compare(run_ids or []), title="Training loss of the selected runs",
                       y_title="loss (bits per token or tagged word)")


# --- the scripting API (typed, so the API page documents it) -------------------------------------


def api_train_start(config: dict) -> str:
    """Start a run from a dict of RunConfig fields (task, base, dataset, learning_rate, ...) and optionally
    "preset": "demo" (the default: about two minutes on a CPU) or "full"; fields not given come from the
    preset's recipe. Returns the run's id."""
    try:
        return view.start(view.with_preset(config))
    except Exception as exc:
        raise gr.Error(str(exc)) from exc


def api_train_status(run_id: str) -> dict:
    """Status of a run: state, step, max_steps, elapsed, eta, tokens_per_s, error, summary, result."""
    try:
        return runs.status(run_id)
    except Exception as exc:
        raise gr.Error(str(exc)) from exc


def api_train_cancel(run_id: str) -> dict:
    """Ask a run to stop; it stops within a few seconds and keeps its files."""
    try:
        return runs.cancel(run_id)
    except Exception as exc:
        raise gr.Error(str(exc)) from exc


def api_train_resume(run_id: str) -> dict:
    """Resume a failed or cancelled run from its newest checkpoint; returns its status."""
    try:
        runs.resume(run_id)
        return runs.status(run_id)
    except Exception as exc:
        raise gr.Error(str(exc)) from exc


def api_runs() -> list[dict]:
    """All runs, newest first: id, state, config, summary."""
    return [{k: st.get(k) for k in ("id", "state", "summary", "error", "created", "config")} for st in runs.list_runs()]


# --- layout ---------------------------------------------------------------------------------------


def build() -> None:
    cfg = view.recipe(runconfig.CAUSAL_LM)
    meta = runconfig.RunConfig.__dataclass_fields__
    watched = gr.State("")
    seen = gr.State("")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=COLUMN_MIN_WIDTH):
            # The form's own words (the field's help names the command line's values: causal-lm, ...).
            task = gr.Radio(TASK_CHOICES, value=cfg.task, label="Task",
                            info="what the model learns: the next token of a text, or a tag (person, place, …) "
                                 "for every word",
                            elem_id="ft-task")
            preset = gr.Radio([(text, key) for key, text in runconfig.PRESETS.items()], value=runconfig.DEMO,
                              label="Recipe", elem_id="ft-preset",
                              info="the demo fits a lesson; the full recipe is the one of the benchmark tables")
            base = gr.Dropdown(base_choices(cfg.task), value=cfg.base, label="Base model", elem_id="ft-base",
                               info=f"{meta['base'].metadata['help']}. {registry.more_models_note()}".strip())
            scratch = gr.Dropdown(["tiny", "small", "medium"], value=cfg.scratch_size, label="Size from scratch",
                                  info=meta["scratch_size"].metadata["help"], elem_id="ft-scratch",
                                  visible=cfg.base == "scratch-gpt2")
            dataset = gr.Dropdown(dataset_choices(cfg.task), value=cfg.dataset, label="Dataset", elem_id="ft-dataset")
            upload = gr.File(label="Your data (.txt or CoNLL)", file_types=[".txt", ".conll", ".tsv", ".iob"],
                             type="filepath", elem_id="ft-upload")
            data_info = gr.Markdown(elem_id="ft-data-info")
            preview = gr.Dataframe(headers=["preview (first training examples)"], label="Preview", wrap=True,
                                   interactive=False, max_height=200)
            with gr.Accordion("Hyper-parameters", open=False):
                numbers = []
                for i in range(0, len(FORM_FIELDS), 2):  # two per row keeps the form short
                    with gr.Row():
                        for name in FORM_FIELDS[i:i + 2]:
                            lo, hi = runconfig.limits(name)
                            numbers.append(gr.Number(value=getattr(cfg, name), label=name.replace("_", " "),
                                                     minimum=lo, maximum=hi, info=meta[name].metadata["help"],
                                                     elem_id=f"ft-{name}"))
                with gr.Row():
                    for name in FLAGS:
                        numbers.append(gr.Checkbox(value=getattr(cfg, name), label=name.replace("_", " "),
                                                   info=meta[name].metadata["help"], elem_id=f"ft-{name}"))
            with gr.Accordion("Full fine-tuning or LoRA", open=False):
                numbers.append(gr.Radio([("full fine-tuning", "full"), ("LoRA adapters", "lora")], value=cfg.method,
                                        label="method", info=meta["method"].metadata["help"], elem_id="ft-method"))
                with gr.Row():
                    for name in LORA_FIELDS[1:4]:
                        lo, hi = runconfig.limits(name)
                        numbers.append(gr.Number(value=getattr(cfg, name), label=name.replace("_", " "), minimum=lo,
                                                 maximum=hi, info=meta[name].metadata["help"], elem_id=f"ft-{name}"))
                numbers.append(gr.Textbox(value=cfg.lora_targets, label="LoRA target modules",
                                          info=meta["lora_targets"].metadata["help"], elem_id="ft-lora_targets"))
            with gr.Row():
                start_btn = gr.Button("Start", variant="primary", elem_id="ft-start")
                cancel_btn = gr.Button("Cancel", variant="stop", elem_id="ft-cancel")
            # Shown by the timer only for a run that did not finish (docs/TABS.md, "Checkpoints and resume").
            resume_note = gr.Markdown(visible=False, elem_id="ft-resume-note")
            with gr.Row():
                resume_btn = gr.Button("Resume this run", elem_id="ft-resume", visible=False)
                restart_btn = gr.Button("Start over with its settings", elem_id="ft-restart", visible=False)
            with gr.Accordion("Run this on a cluster", open=False):
                cmd = gr.Code(label="accelerate launch (same flags, several GPUs or machines)", language="shell",
                              interactive=False, elem_id="ft-command")
        with gr.Column(scale=3, min_width=COLUMN_MIN_WIDTH):
            status = gr.Markdown("No runs yet.", elem_classes=["lmlab-status"], elem_id="ft-status")
            loss_plot = gr.Plot(label="Loss", show_label=False, elem_id="ft-loss")
            lr_plot = gr.Plot(label="Learning rate", show_label=False, elem_id="ft-lr")
            evaluation = gr.Dataframe(headers=["metric (test split)", "before", "after"], label="Evaluation",
                                      interactive=False, elem_id="ft-eval")
            per_type = gr.Dataframe(headers=["type", "support", "P before", "R before", "F1 before", "P after",
                                             "R after", "F1 after"], label="seqeval per entity type",
                                    interactive=False, visible=False)
            sample = gr.HTML(elem_id="ft-sample", padding=False)
            with gr.Row():
                zip_btn = gr.Button("Download the model or LoRA adapter (.zip)", size="sm", elem_id="ft-zip")
                merged_btn = gr.Button("Download base + LoRA merged (.zip)", size="sm", elem_id="ft-zip-merged")
                zip_file = gr.File(label="Model zip", interactive=False)
    with gr.Accordion("Run history and comparison", open=False):
        refresh = gr.Button("Refresh the list of runs", size="sm", elem_id="ft-refresh")
        table = gr.Dataframe(headers=view.HISTORY_HEADERS, label="Runs", interactive=False, elem_id="ft-history")
        with gr.Row():
            watch = gr.Dropdown([], label="Watch run", elem_id="ft-watch")
            pick = gr.Dropdown([], label="Compare runs", multiselect=True, elem_id="ft-compare")
        compare_plot = gr.Plot(label="Loss curves", show_label=False)
    explain("What happens in a fine-tuning run?", EXPLANATION)

    form = [task, base, dataset, upload, scratch, *numbers]
    gr.on([task.change, preset.change], on_task, [task, preset], [base, dataset, scratch, *numbers],
          api_visibility="private")
    method = numbers[len(FORM_FIELDS) + len(FLAGS)]
    base.input(on_base, [base, method], [method, scratch], api_visibility="private", queue=False)
    # triggers=None: on page load and whenever one of the inputs changes.
    gr.on(None, on_dataset, [task, dataset, upload], [data_info, preview], api_visibility="private",
          show_progress_on=[preview])
    gr.on(None, command, form, cmd, api_visibility="private", queue=False)
    # The status line is the run's own (the timer below polls it): no Gradio timer over it.
    start_btn.click(start, form, [watched, status], api_visibility="private", concurrency_id="train_start",
                    concurrency_limit=1, show_progress="hidden").then(history_update, None, [table, watch, pick], api_visibility="private")
    cancel_btn.click(cancel, watched, status, api_visibility="private", queue=False, show_progress="hidden")
    zip_btn.click(download, watched, zip_file, api_visibility="private")
    merged_btn.click(download_merged, watched, zip_file, api_visibility="private")
    resume_btn.click(resume, watched, [watched, status], api_visibility="private", concurrency_id="train_start",
                     concurrency_limit=1, show_progress="hidden")
    restart_btn.click(start_over, watched, [watched, status], api_visibility="private", concurrency_id="train_start",
                      concurrency_limit=1, show_progress="hidden")
    watch.change(lambda run_id: run_id or "", watch, watched, api_visibility="private")
    refresh.click(history_update, None, [table, watch, pick], api_visibility="private")
    pick.change(compare, pick, compare_plot, api_visibility="private")
    timer = gr.Timer(1.5)
    timer.tick(poll, [watched, seen], [watched, seen, status, loss_plot, lr_plot, evaluation, per_type, sample,
                                       resume_btn, restart_btn, resume_note],
               api_visibility="private", queue=False, show_progress="hidden")
    gr.api(api_train_start, api_name="train_start")
    gr.api(api_train_status, api_name="train_status")
    gr.api(api_train_cancel, api_name="train_cancel")
    gr.api(api_train_resume, api_name="train_resume")
    gr.api(api_runs, api_name="runs")

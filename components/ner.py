"""The NER tab: highlighted entities, the word-piece view, batch files and CoNLL-2003 evaluation."""

from __future__ import annotations

import html

import gradio as gr

from components import model_note
from components.common import COLUMN_MIN_WIDTH, WholeNumber, explain, guard
from components.plots import bar_figure
from models.core import registry, zerogpu
from models.engines import engine
from models.ner import evaluation as ner_eval
from models.ner import tagger

COLOURS = {"PER": "#f9a8d4", "ORG": "#93c5fd", "LOC": "#86efac", "MISC": "#fcd34d"}
EXTRA = ["#c4b5fd", "#fdba74", "#5eead4", "#fca5a5", "#a5b4fc", "#bef264"]
MAX_ROWS = 5000  # the table and the word-piece view show this many; the CSV download has everything
MAX_PIECES = 3000

EXAMPLES = [
    ["Chancellor Angela Merkel met French President Emmanuel Macron in Paris on Tuesday to discuss the "
     "European Union budget, Reuters reported."],
    ["Apple shares rose 3 percent in New York after Tim Cook said the iPhone maker would open a research "
     "centre in Munich with Siemens."],
    ["Brazilian striker Ronaldo scored twice as Inter Milan beat Juventus 3-1 at the San Siro, while the "
     "Italian Football Federation opened an inquiry."],
    ["The World Health Organization warned on Friday that cholera cases in Yemen had doubled since March, "
     "according to a statement issued in Geneva."],
]

EXPLANATION = """
A token classifier gives **every word piece a tag**: `B-PER` begins a person's name, `I-PER` continues it,
`O` is outside any entity (BIO tagging; types here are PER, ORG, LOC, MISC as in CoNLL-2003).
BERT splits rare words into sub-words (`Kwiatkowski` → `kw ##ia ##t ##kowski`), and each sub-word gets its
own tag, so the pieces have to be put back together into entities — that is the **aggregation**:

- **none**: every tagged sub-word is shown alone; **simple**: consecutive pieces with the same type are joined,
  even if that splits a word in two;
- **first / average / max**: a word takes one label: its first piece's, the average of its pieces'
  probabilities, or the label of the piece the model is surest about.

The **score** of an entity is the model's probability for its label, averaged over its words; the threshold hides
entities below it. Long texts are cut into overlapping windows of at most 512 tokens and merged back.
The **spaCy fallback** is a different kind of model (OntoNotes types, mapped to CoNLL's); it has no scores.
"""


def model_choices() -> list[tuple[str, str]]:
    return registry.choices(registry.TOKEN_CLASSIFICATION)


def default_model(choices: list[tuple[str, str]]) -> str:
    """The CoNLL BERT when it can load; otherwise the embedded spaCy fallback."""
    keys = [key for _, key in choices]
    hub = "dslim/bert-base-NER"
    if hub in keys and registry.availability(registry.get(hub, registry.TOKEN_CLASSIFICATION))[0]:
        return hub
    return tagger.SPACY_KEY if tagger.SPACY_KEY in keys else keys[0]


def colour_map(labels) -> dict[str, str]:
    extra = sorted(set(labels) - set(COLOURS))
    return {**COLOURS, **{label: EXTRA[i % len(EXTRA)] for i, label in enumerate(extra)}}


def _reporter(progress: gr.Progress):
    return lambda fraction, message: progress(fraction, desc=message)


def _compressed(model_key: str) -> str:
    """' · loaded from FILE.lmhz: sizes…' for a model run from a compressed checkpoint, else ''."""
    note = registry.compressed_note(model_key, registry.TOKEN_CLASSIFICATION, loaded=True)
    return f" · {note}" if note else ""


def _score(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def pieces_html(pieces, colours: dict[str, str]) -> str:
    shown = pieces[:MAX_PIECES]
    chips = []
    for p in shown:
        bi, kind = tagger.split_tag(p.tag)
        colour = colours.get(kind, "#e5e7eb") if kind else "#f3f4f6"
        border = "2px solid #111827" if bi == "B" else "1px solid #d1d5db"
        score = "" if p.score is None else f"{p.score:.2f}"
        tip = html.escape(f"{p.token}  {p.tag}  {score}  chars {p.start}-{p.end}", quote=True)
        chips.append(
            f"<span title=\"{tip}\" style='display:inline-flex;flex-direction:column;align-items:center;margin:2px;"
            f"padding:2px 5px;border-radius:6px;background:{colour};border:{border};font-size:14px;line-height:1.2'>"
            f"<b>{html.escape(p.token)}</b><small>{html.escape(p.tag)}</small><small>{score}</small></span>")
    more = f"<p>… {len(pieces) - MAX_PIECES:,} more pieces not shown</p>" if len(pieces) > MAX_PIECES else ""
    # A spaCy pipeline tags whole words and gives no probabilities: the caption says what the chips show.
    if any(p.score is not None for p in shown):
        what = ("each word piece with its tag; a dark border marks B- (an entity begins), the number is the "
                "model's probability for that tag")
    else:
        what = ("each word with its tag; a dark border marks B- (an entity begins); this tagger (a spaCy "
                "pipeline) gives no probabilities, so no number is shown")
    caption = f"<p style='font-size:13px'>{what}</p>"
    return f"<div class='ner-pieces'>{''.join(chips)}</div>{more}{caption}"


@guard
def tag_text(text, model_key, aggregation, threshold, progress=gr.Progress()):
    """Tag one text: (highlighted text, entity table, word-piece view, status)."""
    out = tagger.tag(model_key, text, aggregation, float(threshold), _reporter(progress))
    colours = colour_map(out.labels)
    highlighted = {"text": out.text,
                   "entities": [{"entity": e.label, "start": e.start, "end": e.end} for e in out.entities]}
    rows = [[e.text, e.label, _score(e.score), e.start, e.end] for e in out.entities[:MAX_ROWS]]
    counts = {}
    for e in out.entities:
        counts[e.label] = counts.get(e.label, 0) + 1
    found = ", ".join(f"{n} {label}" for label, n in sorted(counts.items())) or "no entities"
    status = f"**Found {found}**"
    if out.shared_with:
        others = "1 other user's text" if out.shared_with == 1 else f"{out.shared_with} other users' texts"
        status += f" · tagged in one model call with {others}"
    if len(out.entities) > MAX_ROWS:
        status += f" · the table shows the first {MAX_ROWS:,} entities; use Batch for a full CSV"
    if out.entities and not tagger.gives_scores(model_key):
        status += (" · this tagger (a spaCy pipeline) gives no confidence scores, so the score column is empty; "
                   "the BERT-family models give one for each entity")
    status += _compressed(model_key)
    # The value alone (not a component update) keeps the API output plain; types beyond CoNLL's four get
    # Gradio's automatic colours in the highlight and ours in the word-piece view.
    return highlighted, rows, pieces_html(out.pieces, colours), status


@guard
def tag_batch(file, model_key, aggregation, threshold, progress=gr.Progress()):
    """Tag an uploaded .txt (one document per line) or CoNLL file: (CSV, CoNLL, preview, status)."""
    if not file:
        raise gr.Error("Choose a .txt file (one document per line) or a CoNLL file first.")
    result = tagger.tag_file(model_key, file, aggregation, float(threshold), _reporter(progress))
    what = "documents (one per line)" if result.kind == "text" else "CoNLL sentences"
    status = (f"Done: {result.documents:,} {what} · {result.entities:,} entities · {result.seconds:.1f} s · "
              f"downloads below: entities as CSV, and the tokens with their tags as CoNLL" + _compressed(model_key))
    preview = [[r[0], r[1], r[2], r[3], r[4], r[5]] for r in result.rows[:MAX_ROWS]]
    return str(result.csv_path), str(result.conll_path), preview, status


def mistakes_html(report: ner_eval.Report) -> str:
    if not report.mistakes:
        return "<p>No mistakes in this set.</p>"
    blocks = []
    for m in report.mistakes:
        cells = []
        for tok, g, p in zip(m.tokens, m.gold, m.predicted, strict=True):
            bad = " style='background:#fecaca'" if g != p else ""
            cells.append(f"<td{bad}>{html.escape(tok)}<br><small>gold {g}</small><br><small>model {p}</small></td>")
        blocks.append(f"<p><b>sentence {m.index + 1}</b></p><div style='overflow-x:auto'><table "
                      f"style='font-size:13px;border-collapse:collapse'><tr>{''.join(cells)}</tr></table></div>")
    return "".join(blocks)


@guard
def evaluate(dataset, upload, model_key, limit, progress=gr.Progress()):
    """seqeval scores on CoNLL-2003 or an uploaded file: (metrics table, per-type chart, mistakes, status).

    The table is conlleval-compatible (seqeval's default mode), with the strict IOB2 F1 in its last column."""
    report = ner_eval.evaluate(model_key, dataset, upload, int(limit or 0), _reporter(progress))
    s, strict = report.scores, report.strict

    def strict_f1(row: dict | None) -> float | None:
        return None if row is None else round(row["f1-score"], 4)

    rows = [[t, round(v["precision"], 4), round(v["recall"], 4), round(v["f1-score"], 4), int(v["support"]),
             strict_f1(strict.per_type.get(t) if strict else None)] for t, v in sorted(s.per_type.items())]
    for name, avg, strict_avg in (("micro avg", s.micro, strict.micro if strict else None),
                                  ("macro avg", s.macro, strict.macro if strict else None)):
        rows.append([name, round(avg["precision"], 4), round(avg["recall"], 4), round(avg["f1-score"], 4),
                     int(avg["support"]), strict_f1(strict_avg)])
    types = sorted(s.per_type)
    figure = bar_figure(types, [s.per_type[t]["f1-score"] for t in types],
                        f"F1 per entity type (conlleval-compatible) · micro F1 {s.micro['f1-score']:.3f}", "F1",
                        colors=[colour_map(types)[t] for t in types],
                        text=[f"{s.per_type[t]['f1-score']:.3f}" for t in types])
    status = (f"{report.model} on {report.source}: **micro F1 {s.micro['f1-score']:.4f}** ({s.mode}), macro F1 "
              f"{s.macro['f1-score']:.4f}"
              + (f" · {strict.mode}: micro F1 {strict.micro['f1-score']:.4f}" if strict else "")
              + f" · {report.sentences:,} sentences, {report.tokens:,} tokens in "
              f"{report.seconds:.1f} s ({report.sentences_per_second:.0f} sentences/s)")
    if report.unknown_types:
        status += f" · note: the model cannot predict {', '.join(report.unknown_types)}, so those count as missed"
    status += _compressed(model_key)
    return rows, figure, mistakes_html(report), status


def build() -> None:
    choices = model_choices()
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=COLUMN_MIN_WIDTH):
            text = gr.Textbox(label="Text", lines=5, value=EXAMPLES[0][0], elem_id="ner-text",
                              placeholder="Paste news text to find people, organisations, places…")
            go = gr.Button("Tag entities", variant="primary", elem_id="ner-go")
        with gr.Column(scale=2, min_width=COLUMN_MIN_WIDTH):
            # Models appear while the app runs (a compressed checkpoint used as a model, a finished run):
            # the list refreshes when opened, and a key the list has not shown yet is checked by the registry.
            model = gr.Dropdown(choices=choices, value=default_model(choices), label="Model", elem_id="ner-model",
                                info=registry.more_models_note(), allow_custom_value=True)
            refresh = gr.Button("Refresh the model list", size="sm")
            # A spaCy pipeline gives no probabilities: its aggregation and threshold would do nothing, so they hide.
            scored = tagger.gives_scores(default_model(choices))
            aggregation = gr.Radio(list(tagger.AGGREGATIONS), value="first", label="Aggregation", visible=scored,
                                   info="how word pieces become entities (see the explanation below)",
                                   elem_id="ner-aggregation")
            threshold = gr.Slider(0, 1, value=0.3, step=0.01, label="Confidence threshold", visible=scored,
                                  info="hide entities whose score is below this", elem_id="ner-threshold")
    status = gr.Markdown("Press **Tag entities**.", elem_classes=["lmlab-status"], elem_id="ner-status")
    highlighted = gr.HighlightedText(label="Entities", show_legend=True, color_map=COLOURS, elem_id="ner-highlighted")
    table = gr.Dataframe(headers=["text", "type", "score", "start", "end"], label="Entity table", interactive=False,
                         wrap=True, elem_id="ner-table")
    with gr.Accordion("Word-piece view: the B-/I-/O tag of every sub-word", open=False):
        pieces = gr.HTML(elem_id="ner-pieces")
    gr.Examples(EXAMPLES, inputs=[text], label="Examples")
    explain("What is BIO tagging?", EXPLANATION)

    with gr.Accordion("Batch: tag a file", open=False):
        with gr.Row():
            batch_file = gr.File(label=".txt (one document per line) or CoNLL file", file_types=[".txt", ".conll", ".iob", ".bio", ".tsv"],
                                 type="filepath", elem_id="ner-batch-file")
            with gr.Column():
                batch_go = gr.Button("Tag the file", elem_id="ner-batch-go")
                batch_status = gr.Markdown()
        with gr.Row():
            csv_out = gr.File(label="Entities (CSV)", interactive=False)
            conll_out = gr.File(label="Tags (CoNLL)", interactive=False)
        batch_table = gr.Dataframe(headers=["document", "text", "type", "score", "start", "end"],
                                   label="Entities found", interactive=False, wrap=True)

    with gr.Accordion("Evaluate on CoNLL-2003", open=False):
        splits, missing = ner_eval.available_splits(), ner_eval.missing_note()
        with gr.Row():
            dataset = gr.Radio([(f"CoNLL-2003 {split}", split) for split in splits] + [("uploaded CoNLL file", "upload")],
                               value=splits[0] if splits else "upload", label="Data", elem_id="ner-eval-data",
                               info=missing or "the hub's eriktks/conll2003 when reachable, else the local data folder")
            eval_file = gr.File(label="CoNLL file (token … tag per line)", type="filepath",
                                file_types=[".txt", ".conll", ".iob", ".bio", ".tsv"])
            limit = WholeNumber(value=0, minimum=0, label="Sentences (0 = all)")
        eval_go = gr.Button("Evaluate", elem_id="ner-eval-go")
        eval_status = gr.Markdown(elem_id="ner-eval-status")
        with gr.Row():
            metrics = gr.Dataframe(headers=["type", "precision", "recall", "F1", "support", "F1 strict IOB2"],
                                   label="seqeval report, conlleval-compatible mode (an I- tag may start an entity); "
                                         "last column: seqeval's strict IOB2 mode",
                                   interactive=False)
            chart = gr.Plot(label="F1 per type", show_label=False)
        mistakes = gr.HTML(label="Some of the model's mistakes")

    tag_inputs = [text, model, aggregation, threshold]
    tag_outputs = [highlighted, table, pieces, status]
    # Where the engine shares work, texts tagged at the same moment share one tag_many call
    # (models.ner.tagger), so Gradio lets them through together; otherwise one at a time.
    local = engine.local().capabilities
    tagging = (dict(concurrency_id="ner", concurrency_limit=local.open_streams) if local.shares_steps
               else dict(concurrency_id="model", concurrency_limit=2))
    go.click(zerogpu.gpu(tag_text), tag_inputs, tag_outputs, api_name="ner", **tagging, show_progress_on=[highlighted])
    text.submit(zerogpu.gpu(tag_text), tag_inputs, tag_outputs, api_visibility="private",
                concurrency_id=tagging["concurrency_id"], show_progress_on=[highlighted])
    # A whole file (up to 200 MiB) or data set is tagged in its own lane: the shared model queue never waits on it.
    batch_go.click(zerogpu.gpu(tag_batch), [batch_file, model, aggregation, threshold], [csv_out, conll_out, batch_table,
                   batch_status], api_name="ner_batch", concurrency_id="ner_files", concurrency_limit=1,
                   show_progress_on=[batch_table])
    eval_go.click(zerogpu.gpu(evaluate, duration=300), [dataset, eval_file, model, limit],
                  [metrics, chart, mistakes, eval_status], api_name="ner_evaluate", concurrency_id="ner_files",
                  show_progress_on=[metrics])
    refresh.click(lambda: gr.Dropdown(choices=model_choices()), None, model, api_visibility="private")
    model.focus(lambda: gr.Dropdown(choices=model_choices()), None, model, api_visibility="private", queue=False,
                show_progress="hidden")
    model_note.attach(model, registry.TOKEN_CLASSIFICATION)
    model.change(_scored_controls, model, [aggregation, threshold], api_visibility="private", queue=False)


def _scored_controls(model_key):
    visible = tagger.gives_scores(model_key or "")
    return gr.Radio(visible=visible), gr.Slider(visible=visible)

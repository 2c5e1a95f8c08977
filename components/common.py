"""Shared glue for tab modules: typed errors become clear UI messages, never tracebacks."""

from __future__ import annotations

import functools
import html
import inspect
import json
import logging

import gradio as gr

from models.core.errors import LMLabError

log = logging.getLogger("lmlab")

# Side-by-side columns (a form beside its results, two charts) narrower than this stack instead (Gradio's rows
# wrap): at 800 px a picker squeezed into a 300 px column cut its own value.
COLUMN_MIN_WIDTH = 440


def _to_gr_error(exc: Exception) -> gr.Error:
    """The message a user reads. It stays until closed (``duration=None``): Gradio's default of 10 s left a
    projector audience with only a red "Error" on the output once the notice had gone. A refused input is
    an answer, not a fault: it is logged as one line, since a traceback per refusal buries the real faults in the
    host's log; an unexpected error is logged once, with its traceback."""
    if isinstance(exc, gr.Error):
        exc.duration = None
        exc.print_exception = False
        log.info("refused: %s", exc.message)
        return exc
    if isinstance(exc, LMLabError):
        log.info("refused (%s): %s", type(exc).__name__, exc)
        return gr.Error(str(exc), title=type(exc).__name__.replace("Error", " error").strip(),
                        duration=None, print_exception=False)
    log.exception("unexpected error")
    return gr.Error(f"Something went wrong ({type(exc).__name__}: {exc}). The app is still running; please try again.",
                    duration=None, print_exception=False)


def guard(fn):
    """Wrap an event handler (function or generator) so errors reach the user as gr.Error."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:
                raise _to_gr_error(exc) from exc

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise _to_gr_error(exc) from exc

    return wrapper


def explain(title: str, markdown: str) -> None:
    """A short collapsible explanation, the same look on every tab."""
    with gr.Accordion(title, open=False, elem_classes=["lmlab-explain"]):
        gr.Markdown(markdown)



def _refuse_fractions(component: gr.components.Component) -> gr.components.Component:
    """Make ``component`` (precision 0) refuse a fractional value before Gradio rounds it (2.5 tokens would
    quietly become 2). Done on the instance: a subclass of a Gradio component makes Gradio write a .pyi file
    beside this module at import."""
    rounding = component.preprocess
    name = component.label or "this setting"

    def preprocess(payload):
        if payload is not None and not isinstance(payload, bool):
            try:
                whole = float(payload).is_integer()
            except (TypeError, ValueError):
                whole = False
            if not whole:
                raise gr.Error(f"{name} must be a whole number, not {payload!r}")
        return rounding(payload)

    component.preprocess = preprocess
    return component


def WholeSlider(*args, **kwargs) -> gr.Slider:  # noqa: N802 (used like the widget class it makes)
    """A slider for counts (tokens, steps, layers): step 1, the API says "integer" and refuses 2.5."""
    kwargs.setdefault("step", 1)
    return _refuse_fractions(gr.Slider(*args, precision=0, **kwargs))


def WholeNumber(*args, **kwargs) -> gr.Number:  # noqa: N802
    """A number box for counts and seeds: the API says "integer" and refuses 2.5 instead of rounding it."""
    return _refuse_fractions(gr.Number(*args, precision=0, **kwargs))


def context_html(text: str, what: str = "This picture reads", model: str | None = None) -> str:
    """The exact text an analysis view read, printed above the view (whitespace kept, long texts scroll).

    The text (and the model, when given) also ride along as data attributes: the browser compares them with
    the current text and model to say whether the picture is stale (``stale_js(..., reads_prefix=True)``)."""
    shown = html.escape(text) if text else "<i>(nothing: the text is empty)</i>"
    drawn = f" data-read=\"{html.escape(text, quote=True)}\""
    if model is not None:
        drawn += f" data-model=\"{html.escape(model, quote=True)}\""
    return (f"<div class='lmlab-context'{drawn}><b>{html.escape(what)}</b> ({len(text):,} characters):"
            f"<div class='lmlab-context-text'>{shown}</div></div>")


def _stale_note(button: str, what: str = "text") -> str:
    return (f"<div class='lmlab-context lmlab-stale'><b>The {what} changed since this picture was drawn.</b> "
            f"Press <b>{html.escape(button)}</b> to look at the new {what}.</div>")


def stale_js(button: str, plots: int = 0, texts: int = 0, reads_prefix: bool = False, prompt_only: bool = False,
             tables: tuple[tuple[str, ...], ...] = ()) -> str:
    """Browser-side handler for "the text changed": the context line says so and the pictures are cleared,
    so no picture is ever shown under a text it did not read (no server call: it fires as you type).
    Its outputs: the context line, then ``plots`` pictures (cleared), then ``texts`` text outputs (emptied), then
    one table per entry of ``tables`` (its column headers: emptied to them).

    With ``reads_prefix`` its inputs are the context line, the prompt, the generated text, the Read choice and
    the model, and it speaks only when a picture exists and its text (prompt, plus the generated text unless
    Read is "prompt") or model differs from the current one: a first Generate, or the page's own start-up
    events, fired it before anything was drawn and the note sat above an empty chart. Returning ``[]`` leaves
    every output as it is (Gradio skips outputs a browser handler leaves undefined). With ``prompt_only`` (a view
    that reads the prompt alone, as beam search does) the inputs are the context line, the prompt and the model."""
    cleared = (["null"] * plots + ['""'] * texts
               + [json.dumps({"headers": list(h), "data": [], "metadata": None}) for h in tables])
    if not reads_prefix:
        return "() => [" + ", ".join([json.dumps(_stale_note(button))] + cleared) + "]"
    signature = "(context, prompt, model)" if prompt_only else "(context, prompt, output, read, model)"
    current = "(prompt || '')" if prompt_only else "(prompt || '') + (read === 'prompt' ? '' : (output || ''))"
    return (f"{signature} => {{"
            " const drawn = new DOMParser().parseFromString(context || '', 'text/html').querySelector('[data-read]');"
            # no picture yet, or already marked stale (its picture cleared): nothing to say
            " if (!drawn) return [];"
            f" const text = {current};"
            " const other = drawn.dataset.model !== undefined && drawn.dataset.model !== model;"
            " if (!other && drawn.dataset.read === text) return [];"
            f" return [other ? {json.dumps(_stale_note(button, 'model'))} : {json.dumps(_stale_note(button))},"
            f" {', '.join(cleared)}]; }}")


def md_literal(text: str) -> str:
    """``text`` shown as it is inside Markdown: line breaks drawn as ↵, markup characters escaped (a decoded
    text holding '*' or a line break printed literal '**' around it). Quotes stay as they are: html.escape
    wrote ' as "&#x27;", and the escaped '#' below then printed "&#x27;" on the page instead of the apostrophe."""
    escaped = html.escape(text.replace("\r", "").replace("\n", "↵ "), quote=False)
    return "".join("\\" + c if c in "\\`*_{}[]()#+-.!|~>" else c for c in escaped)

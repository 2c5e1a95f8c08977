"""Shared glue for tab modules: typed errors become clear UI messages, never tracebacks."""

from __future__ import annotations

import functools
import inspect
import logging

import gradio as gr

from models.core.errors import LMLabError

log = logging.getLogger("lmlab")


def _to_gr_error(exc: Exception) -> gr.Error:
    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, LMLabError):
        return gr.Error(str(exc), title=type(exc).__name__.replace("Error", " error").strip())
    log.exception("unexpected error")
    return gr.Error(f"Something went wrong ({type(exc).__name__}: {exc}). The app is still running; please try again.")


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

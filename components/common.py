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

"""Errors reach the user as a notice that stays until closed: a projector audience must be able to read why
an action failed after the first ten seconds, not only the red "Error" Gradio leaves on the output."""

from __future__ import annotations

import gradio as gr
import pytest

from components.common import guard
from models.core.errors import InputError


def _raises(exc: Exception):
    def handler():
        raise exc
    return guard(handler)


def _raises_in_generator(exc: Exception):
    def handler():
        yield "first"
        raise exc
    return guard(handler)


@pytest.mark.parametrize("exc", [InputError("the prompt is empty"), gr.Error("Choose a file first."),
                                 RuntimeError("boom")])
def test_every_error_stays_until_closed(exc):
    with pytest.raises(gr.Error) as raised:
        _raises(exc)()
    assert raised.value.duration is None
    with pytest.raises(gr.Error) as raised:
        list(_raises_in_generator(exc)())
    assert raised.value.duration is None


def test_the_message_is_the_errors_own_words():
    with pytest.raises(gr.Error) as raised:
        _raises(InputError("there is nothing to compress"))()
    assert "there is nothing to compress" in raised.value.message


@pytest.mark.parametrize("exc", [InputError("the prompt is empty"), gr.Error("Choose a file first.")])
def test_a_refused_input_is_one_log_line_not_a_traceback(exc, caplog):
    """Gradio prints a traceback for every gr.Error unless told not to; a refusal is an answer, and the host's
    log should show the real faults."""
    with caplog.at_level("INFO", logger="lmlab"), pytest.raises(gr.Error) as raised:
        _raises(exc)()
    assert raised.value.print_exception is False
    assert [r.levelname for r in caplog.records] == ["INFO"] and "refused" in caplog.records[0].getMessage()
    assert caplog.records[0].exc_info is None


def test_an_unexpected_error_is_logged_once_with_its_traceback(caplog):
    with caplog.at_level("INFO", logger="lmlab"), pytest.raises(gr.Error) as raised:
        _raises(RuntimeError("boom"))()
    assert raised.value.print_exception is False  # the log below has it; Gradio would print it a second time
    assert [r.levelname for r in caplog.records] == ["ERROR"] and caplog.records[0].exc_info is not None

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

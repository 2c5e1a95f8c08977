"""Which engine serves a model of the Generate picker: the one place that knows.

Models in LM Lab's catalogue run on the local engine (``engine.local()``: classroom or reference); a
model server named with ``--engine-url`` adds its model (key ``remote:<name>``), which the remote engine
serves. Callers pass the picker's key and get events, candidates and capabilities back.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from models.core import registry
from models.engines import engine, remote
from models.generation import generator


def _remote_for(model_key: str) -> remote.RemoteEngine | None:
    server = engine.remote()
    return server if server is not None and model_key == server.key else None


def choices() -> list[tuple[str, str]]:
    """(label, key) for the Generate picker: the model server's model first (a school that set one up
    means it), then the causal LMs of the catalogue."""
    server = engine.remote()
    served = [(server.label, server.key)] if server is not None else []
    return served + registry.choices(registry.CAUSAL_LM)


def capabilities(model_key: str) -> engine.Capabilities:
    """What the engine serving ``model_key`` can show (alternatives, insides, temperature)."""
    server = _remote_for(model_key)
    return server.capabilities if server is not None else engine.local().capabilities


def stream(model_key: str, prompt: str, s: generator.SamplingSettings,
           cancel: threading.Event | None = None) -> Iterator[generator.StreamEvent]:
    """``generator.stream`` for a picker key: StreamEvents as tokens arrive, then done=True.

    Raises InputError, ModelUnavailable (a local model that cannot load) and ServerError (a model server
    that is down, silent or refuses)."""
    server = _remote_for(model_key)
    if server is not None:
        return server.stream(prompt, s, cancel)
    return generator.stream(registry.load_causal_lm(model_key), prompt, s, cancel)


def next_token(model_key: str, prefix: str, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
               show: int = 20, repetition_penalty: float = 1.0) -> tuple[list[generator.Candidate], str]:
    """``generator.next_token`` for a picker key. From a model server: its top ``show`` tokens with the
    model's probabilities only (``prob``; the other stages are NaN: the server does not send what the
    sliders do to the whole distribution) and a notice saying what is not shown."""
    server = _remote_for(model_key)
    if server is None:
        return generator.next_token(registry.load_causal_lm(model_key), prefix, temperature, top_p, top_k,
                                    show=show, repetition_penalty=repetition_penalty)
    generator.SamplingSettings(temperature=temperature, top_p=top_p, top_k=top_k,
                               repetition_penalty=repetition_penalty).validate()
    rows, notice = server.next_token(prefix, show)
    nan = float("nan")
    return [generator.Candidate(token, -1, p, nan, True, nan) for token, p in rows], notice

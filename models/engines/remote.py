"""The remote engine: a model served by an OpenAI-compatible server (vLLM first), over ``/v1/completions``.

For a school that outgrows one machine: a serving engine on GPUs streams the tokens, LM Lab shows them.
One request is one ``POST /v1/completions`` with ``stream: true`` and ``logprobs: 5``: the server sends
one server-sent event per token with its text, its log-probability and the top alternatives. Those
log-probabilities are the model's own, before temperature and the repetition penalty (vLLM's default
``logprobs_mode``), as the local engines report them. Stop (or a closed tab) closes the connection;
vLLM aborts a request whose client went away, so the server stops computing it.

The server sends no hidden states, attention or full distributions: views that need the model's insides
(logit lens, attention, beam tree, the LM coder) run on local models only; the next-token chart shows the
server's top 20 (its maximum) and says that the rest is not shown.

Errors become ``ServerError`` messages a teacher can act on: the server is down, has sent nothing for
``READ_TIMEOUT_S``, refused a setting (its own message is shown), or dropped the stream (the text
received so far is kept). Each request has its own connection, so one student's failure is theirs alone.
"""

from __future__ import annotations

import json
import math
import os
import queue
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx

from models.core.errors import InputError, ServerError
from models.core.registry import SERVED_PREFIX
from models.engines.requests import (
    MAX_OPEN_STREAMS,
    MAX_PROMPT_CHARS,
    Capabilities,
    SamplingSettings,
    StreamEvent,
    TokenInfo,
)

STREAM_ALTERNATIVES = 5  # per generated token: the hover's top-5
VIEW_ALTERNATIVES = 20  # the next-token chart: vLLM's default maximum (max_logprobs)
CONNECT_TIMEOUT_S = 5.0
# Silence this long means trouble, unless the request has not started yet and the server still answers:
# then it is waiting its turn in the server's queue (vLLM runs a fixed number of sequences at once and
# queues the rest, sending nothing meanwhile), and it keeps its place for up to QUEUE_LIMIT_S.
READ_TIMEOUT_S = float(os.environ.get("LMLAB_ENGINE_TIMEOUT_S", 60))
QUEUE_LIMIT_S = float(os.environ.get("LMLAB_ENGINE_QUEUE_S", 600))
POLL_S = 0.25  # how often a waiting stream looks at its cancel event


class RemoteEngine:
    """One model on one OpenAI-compatible server. ``url``: the API root, e.g. ``http://gpu-box:8000/v1``."""

    name = "remote"

    def __init__(self, url: str, model: str, read_timeout_s: float = READ_TIMEOUT_S,
                 queue_limit_s: float = QUEUE_LIMIT_S) -> None:
        self.url, self.model = url.rstrip("/"), model
        if not self.url.endswith("/v1"):
            self.url += "/v1"
        self.host = urlparse(self.url).netloc or self.url
        self.read_timeout_s, self.queue_limit_s = read_timeout_s, max(queue_limit_s, read_timeout_s)
        self.capabilities = Capabilities(alternatives=VIEW_ALTERNATIVES, after_temperature=False, internals=False,
                                         shares_steps=True, open_streams=MAX_OPEN_STREAMS,
                                         label=f"served by {self.host}")
        limits = httpx.Limits(max_connections=MAX_OPEN_STREAMS, max_keepalive_connections=32)
        self._client = httpx.Client(timeout=httpx.Timeout(read_timeout_s, connect=CONNECT_TIMEOUT_S), limits=limits)

    @property
    def key(self) -> str:
        """The model's id in the pickers and the API."""
        return SERVED_PREFIX + self.model

    @property
    def label(self) -> str:
        return f"{self.model or 'the model'} — on the model server {self.host}"

    # -- requests ---------------------------------------------------------------------------------

    def _body(self, prompt: str, s, max_tokens: int, logprobs: int, stream: bool) -> dict:
        body = dict(prompt=prompt, max_tokens=max_tokens, logprobs=logprobs, stream=stream,
                    temperature=float(s.temperature), seed=int(s.seed))
        if s.temperature:  # greedy needs no nucleus; vLLM checks top_p even then
            body["top_p"] = float(s.top_p)
            if s.top_k:
                body["top_k"] = int(s.top_k)
        if s.repetition_penalty != 1.0:
            body["repetition_penalty"] = float(s.repetition_penalty)
        if self.model:
            body["model"] = self.model
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def _refused(self, response: httpx.Response) -> ServerError:
        try:
            detail = response.json()
            detail = detail.get("error", detail)
            detail = detail.get("message", detail) if isinstance(detail, dict) else detail
        except (ValueError, AttributeError):
            detail = response.text[:300]
        return ServerError(f"The model server at {self.host} refused the request (HTTP {response.status_code}): "
                           f"{detail}")

    def _silent(self) -> ServerError:
        return ServerError(f"The model server at {self.host} has sent nothing for {self.read_timeout_s:.0f} s; "
                           "it may be overloaded. Try again in a moment, or pick a model that runs here.")

    def _down(self, exc: Exception) -> ServerError:
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            return self._silent()
        return ServerError(f"The model server at {self.host} is not answering ({type(exc).__name__}); is it "
                           "running? Models that run here still work: pick one in the Model list.")

    def _busy(self, waited_s: float) -> ServerError:
        return ServerError(f"The model server at {self.host} is busy: this request waited {waited_s:.0f} s for its "
                           "turn and did not start. Try again in a moment, or pick a model that runs here.")

    def _answers(self) -> bool:
        """Whether the server answers a small request (``GET /models``) within ``CONNECT_TIMEOUT_S``: a
        silent stream on a server that answers is queued, not lost."""
        try:
            return self._client.get(f"{self.url}/models", timeout=CONNECT_TIMEOUT_S).status_code == 200
        except httpx.HTTPError:
            return False

    def _events(self, body: dict, cancel: threading.Event) -> Iterator[dict]:
        """The server's streamed JSON events; returns when it sends ``[DONE]`` or ``cancel`` is set.

        A thread reads the connection, so Stop takes effect within ``POLL_S`` even while the server is
        silent; the thread closes the connection at its next event (or its read timeout), which makes
        vLLM abort the request. After ``read_timeout_s`` of silence the request fails, unless nothing has
        arrived yet and the server still answers (the request is queued there): then it waits on, up to
        ``queue_limit_s`` in all. Raises ServerError (down, silent, busy, refused, dropped: ``_Dropped``).
        """
        items: queue.Queue = queue.Queue()
        # The loop below decides when waiting is over; the reader's own limit only backs it up.
        timeout = httpx.Timeout(self.queue_limit_s + self.read_timeout_s + CONNECT_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)

        def read() -> None:
            try:
                with self._client.stream("POST", f"{self.url}/completions", json=body, timeout=timeout) as response:
                    if response.status_code != 200:
                        response.read()
                        items.put(("error", self._refused(response)))
                        return
                    for line in response.iter_lines():
                        if cancel.is_set():
                            return  # leaving the block closes the connection: the server aborts
                        if line.startswith("data:"):
                            items.put(("data", line[5:].strip()))
                items.put(("end", None))
            except httpx.HTTPError as exc:
                items.put(("failed", exc))

        threading.Thread(target=read, daemon=True, name="lmlab-remote").start()
        sent = last = time.monotonic()
        started = False
        while True:
            try:
                kind, value = items.get(timeout=POLL_S)
            except queue.Empty:
                if cancel.is_set():
                    return
                now = time.monotonic()
                if now - last >= self.read_timeout_s:
                    if not started and now - sent < self.queue_limit_s and self._answers():
                        last = now  # queued behind other requests: keep the place
                        continue
                    cancel.set()  # the reader closes the connection when it wakes
                    raise self._busy(now - sent) if not started and self._answers() else self._silent() from None
                continue
            last, started = time.monotonic(), True
            if kind == "error":
                raise value
            if kind == "failed":
                raise self._down(value) if isinstance(value, (httpx.ConnectError, httpx.TimeoutException)) \
                    else _Dropped(f"{type(value).__name__}: {value}")
            if kind == "end":
                raise _Dropped("the stream ended before the server said it was done")
            if value == "[DONE]":
                return
            try:
                event = json.loads(value)
            except ValueError as exc:
                raise _Dropped(f"unreadable event {value[:80]!r}") from exc
            if "error" in event and not event.get("choices"):
                error = event["error"]
                raise ServerError(f"The model server at {self.host} failed the request: "
                                  f"{error.get('message', error) if isinstance(error, dict) else error}")
            yield event

    def stream(self, prompt: str, s, cancel: threading.Event | None = None) -> Iterator:
        """Yield ``generator.StreamEvent``s as the server sends tokens, then a final one with done=True.

        Raises InputError (empty prompt, settings out of range, the chat template) and ServerError (down,
        silent, refused). A stream the server drops after some tokens ends with ``finish_reason``
        "dropped" and a notice; the text so far is kept.
        """
        s.validate()
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError("the prompt is empty: type a few words for the model to continue")
        if s.chat_template:
            raise InputError("the chat template is applied by models that run here; untick 'Use chat template' "
                             "for the model server's model")
        notice = ""
        if len(prompt) > MAX_PROMPT_CHARS:
            prompt = prompt[-MAX_PROMPT_CHARS:]
            notice = f"The prompt was cut to its last {MAX_PROMPT_CHARS:,} characters."
        cancel = cancel or threading.Event()
        body = self._body(prompt, s, s.max_new_tokens, STREAM_ALTERNATIVES, stream=True)
        started = time.perf_counter()
        tokens: list[TokenInfo] = []
        text: list[str] = []
        first = None
        prompt_tokens = 0
        reason = ""

        def event(**kw) -> StreamEvent:
            return StreamEvent("".join(text), tokens, notice=notice, prompt_tokens=prompt_tokens,
                               seconds=time.perf_counter() - started, first_token_seconds=first,
                               engine=self.capabilities.label, **kw)

        try:
            for data in self._events(body, cancel):
                usage = data.get("usage") or {}
                prompt_tokens = usage.get("prompt_tokens", prompt_tokens)
                for choice in data.get("choices") or []:
                    added = _tokens(choice.get("logprobs"), TokenInfo)
                    if added or choice.get("text"):
                        first = first if first is not None else time.perf_counter() - started
                        tokens.extend(added)
                        text.append(choice.get("text") or "")
                        reason = choice.get("finish_reason") or reason
                        yield event()
                    else:
                        reason = choice.get("finish_reason") or reason
        except _Dropped as exc:
            if not tokens:
                raise ServerError(f"The model server at {self.host} closed the stream before the first token "
                                  f"({exc}). Try again, or pick a model that runs here.") from None
            notice = " ".join(x for x in (notice, f"The model server at {self.host} closed the stream after "
                                                  f"{len(tokens)} tokens ({exc}); the text so far is kept.") if x)
            yield event(done=True, finish_reason="dropped")
            return
        finally:
            cancel.set()  # a closed consumer (Stop, a closed tab) makes the reader drop the connection
        if not reason:
            reason = "stopped"
        yield event(done=True, finish_reason={"stop": "eos", "abort": "stopped"}.get(reason, reason))

    def next_token(self, prefix: str, show: int = VIEW_ALTERNATIVES) -> tuple[list[tuple[str, float]], str]:
        """The server's ``show`` most likely next tokens after ``prefix`` with the model's probabilities
        (before temperature), most likely first, and a sentence saying what is not shown.

        Raises InputError (empty prefix) and ServerError.
        """
        if not isinstance(prefix, str) or not prefix.strip():
            raise InputError("the prompt is empty: type a few words for the model to continue")
        body = self._body(prefix, SamplingSettings(temperature=0), 1, min(show, VIEW_ALTERNATIVES), stream=False)
        try:
            response = self._client.post(f"{self.url}/completions", json=body)
        except httpx.HTTPError as exc:
            raise self._down(exc) from None
        if response.status_code != 200:
            raise self._refused(response)
        try:
            top = response.json()["choices"][0]["logprobs"]["top_logprobs"][0]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ServerError(f"The model server at {self.host} sent no probabilities ({exc!r}); is it an "
                              "OpenAI-compatible completions server?") from None
        rows = sorted(((t, math.exp(lp)) for t, lp in top.items()), key=lambda r: -r[1])[:show]
        rest = max(0.0, 1.0 - sum(p for _, p in rows))
        note = (f"The server sends its {len(rows)} most likely tokens: the other {rest:.1%} of the probability, "
                "over the rest of the vocabulary, is not shown. These are the model's probabilities before "
                "temperature; the server applies temperature, top-k and top-p itself when it samples.")
        return rows, note

    def close(self) -> None:
        self._client.close()


class _Dropped(Exception):
    """The server's stream broke off (connection lost, truncated or unreadable event)."""


def _tokens(logprobs: dict | None, token_info) -> list:
    """TokenInfo per token of one completions chunk's ``logprobs`` (tokens, token_logprobs, top_logprobs)."""
    if not logprobs:
        return []
    out = []
    tops = logprobs.get("top_logprobs") or []
    for i, (text, lp) in enumerate(zip(logprobs.get("tokens") or [], logprobs.get("token_logprobs") or [],
                                       strict=False)):
        top = tops[i] if i < len(tops) and tops[i] else {}
        alternatives = sorted(((t, math.exp(v)) for t, v in top.items()), key=lambda a: -a[1])[:STREAM_ALTERNATIVES]
        out.append(token_info(-1, text, float(lp if lp is not None else -math.inf), alternatives))
    return out


_configured: dict[tuple[str, str], RemoteEngine] = {}
_guard = threading.Lock()


def configured() -> RemoteEngine | None:
    """The engine for ``LMLAB_ENGINE_URL`` and ``LMLAB_ENGINE_MODEL`` (``--engine-url``, ``--engine-model``), or None.

    Without a model name the server's first model (``GET /models``) is named; a server that cannot be
    asked then leaves the name out of the requests, and vLLM serves its one model.
    """
    url = os.environ.get("LMLAB_ENGINE_URL", "").strip()
    if not url:
        return None
    model = os.environ.get("LMLAB_ENGINE_MODEL", "").strip()
    with _guard:
        engine = _configured.get((url, model))
        if engine is None:
            engine = _configured[(url, model)] = RemoteEngine(url, model or _first_model(url))
        return engine


def _first_model(url: str) -> str:
    """The id of the first model the server lists, or "" when it cannot say (down, not OpenAI-compatible)."""
    root = url.rstrip("/") + ("" if url.rstrip("/").endswith("/v1") else "/v1")
    try:
        response = httpx.get(f"{root}/models", timeout=CONNECT_TIMEOUT_S)
        return str(response.json()["data"][0]["id"])
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
        return ""

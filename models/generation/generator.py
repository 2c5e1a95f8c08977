"""Causal-LM handler: streamed sampling with per-token log-probs, and the next-token view.

A request is handed to the local engine (``models.engines.engine.local()``: the classroom engine, which
batches every user's decode steps into shared forward passes, or with ``--no-batching`` the reference
engine, ``model.generate`` alone). Both give the same tokens for the same seed (tests compare them); this
module reads the tokens they stream and turns them into the events the UI shows.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import torch

from models.core import text_start
from models.core.errors import InputError
from models.core.registry import Loaded
from models.engines import engine as engines
from models.engines.requests import (  # noqa: F401  (the seam's types; callers know them as generator.X)
    MAX_PROMPT_CHARS,
    Candidate,
    SamplingSettings,
    StreamEvent,
    TokenInfo,
)
from models.engines.scheduler import Request
from models.generation import sampling


def context_limit(loaded: Loaded) -> int:
    config = loaded.model.config
    return int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 1024))


def encode_prompt(loaded: Loaded, prompt: str, chat_template: bool = False, reserve: int = 0) -> tuple[torch.Tensor, str]:
    """Token ids (1, n) of the prompt, cut to fit the context (the end is kept). Returns (ids, notice).

    Plain text follows the start token (``text_start``), as in the text coder, so a token's probability
    here is the one Compress codes it with; the chat template brings its own start.

    ``reserve`` positions are kept free for the tokens to generate; at most ``context - 1`` are
    reserved, so the prompt always keeps at least one token. Raises InputError for an empty prompt.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("the prompt is empty: type a few words for the model to continue")
    if len(prompt) > MAX_PROMPT_CHARS:
        prompt = prompt[-MAX_PROMPT_CHARS:]
    tok = loaded.tokenizer
    notices = []
    plain = not (chat_template and getattr(tok, "chat_template", None))
    if not plain:
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, return_dict=False)
        ids = list(ids["input_ids"]) if isinstance(ids, dict) else list(ids)
    else:
        if chat_template:  # the switch cannot apply: say so rather than ignore it
            notices.append(f"{loaded.spec.label} has no chat template (it is not an instruct model), so the prompt "
                           f"was given as plain text; untick \"Use chat template\" for this model.")
        ids = text_start.with_start(tok, tok(prompt)["input_ids"])
    room = context_limit(loaded) - min(reserve, context_limit(loaded) - 1)
    if len(ids) > room:
        notices.append(f"The prompt has {len(ids):,} tokens; the model sees {room:,} at most, so only the last {room:,} were kept.")
        ids = ids[:1] + ids[-(room - 1):] if plain and room > 1 else ids[-room:]  # the start token stays
    return torch.tensor([ids], dtype=torch.long, device=loaded.device.device), " ".join(notices)


def fit_request(loaded: Loaded, prompt: str, s: SamplingSettings) -> tuple[torch.Tensor, int, str]:
    """Prompt ids (1, n) and the number of new tokens that fit the model's context, with a notice.

    A model with fewer positions than prompt + max new tokens keeps the end of the prompt (at least
    half the context) and caps max new tokens at what is left, saying so: generating past the last
    position would index outside the position table.
    """
    limit = context_limit(loaded)
    max_new = s.max_new_tokens
    capped = ""
    if max_new > limit // 2:
        ids_full, _ = encode_prompt(loaded, prompt, s.chat_template)
        allowed = limit - min(ids_full.shape[1], limit - limit // 2)
        if max_new > allowed:
            capped = (f"This model sees {limit:,} tokens at most, so max new tokens was capped from {max_new:,} "
                      f"to {allowed:,}.")
            max_new = allowed
    ids, notice = encode_prompt(loaded, prompt, s.chat_template, reserve=max_new)
    return ids, max_new, " ".join(x for x in (notice, capped) if x)


def generate_kwargs(s: SamplingSettings, loaded: Loaded) -> dict:
    tok = loaded.tokenizer
    kwargs = dict(max_new_tokens=s.max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    if s.temperature == 0:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k or None)
    if s.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = s.repetition_penalty
    return kwargs


def processors(s: SamplingSettings) -> sampling.Processors:
    return sampling.Processors(s.temperature, s.top_p, s.top_k, s.repetition_penalty)


HEARTBEAT_S = 0.5  # while waiting for a place, the stream looks at its queue position this often
# ... and reports it when it changes, or after this long without a report (a closed tab is noticed at a
# report). Reporting every look made 70 waiting students cost the web server ~140 updates a second and
# its answers to new students took over 5 s (benchmarks/classroom.py --clients 100).
QUIET_WAIT_S = 5.0
# While N requests share the model, a stream reports at most every min(MAX_UPDATE_S, (N-1) x
# UPDATE_S_PER_SHARER) seconds, with every token that arrived meanwhile (alone: every token): each report
# holds the GIL the shared forward pass needs. Why these values: docs/CLASSROOM.md.
UPDATE_S_PER_SHARER = 0.04
MAX_UPDATE_S = 1.0


def stream(loaded: Loaded, prompt: str, s: SamplingSettings, cancel: threading.Event | None = None,
           engine=None) -> Iterator[StreamEvent]:
    """Yield a StreamEvent as tokens arrive, then a final one with done=True.

    Alone, every token is reported; while the model is shared, at most every ``UPDATE_S_PER_SHARER``
    seconds per sharer (``MAX_UPDATE_S`` at most), with every token that arrived meanwhile. While the
    request waits for room in the batch, events with no new tokens carry its ``queue_position`` when
    it changes (looked at every ``HEARTBEAT_S``), and at least every ``QUIET_WAIT_S``. ``engine`` (default:
    the local engine chosen at start, ``models.engines.engine.local()``) runs the model. Closing the iterator
    early (a closed browser tab) sets the cancel event, so the model drops the request at its next step.
    Raises InputError for an empty prompt or out-of-range settings.
    """
    s.validate()
    cancel = cancel or threading.Event()
    input_ids, max_new, notice = fit_request(loaded, prompt, s)
    tok = loaded.tokenizer
    eos = tok.eos_token_id
    started = time.perf_counter()
    request = Request(input_ids[0].tolist(), processors(s), max_new, s.seed, eos, cancel=cancel)
    (engine or engines.local()).submit(loaded, request)
    out = request.out
    tokens: list[TokenInfo] = []
    ids: list[int] = []
    first = None
    n_prompt = input_ids.shape[1]

    def event(**kw) -> StreamEvent:
        return StreamEvent(tok.decode(ids, skip_special_tokens=True), tokens, notice=notice, prompt_tokens=n_prompt,
                           seconds=time.perf_counter() - started, first_token_seconds=first,
                           sharing=request.sharing, queue_position=request.queue_position,
                           model_note=getattr(loaded, "note", ""), **kw)

    def take(item) -> None:
        token_id, logprob, top_p, top_i = item
        ids.append(token_id)
        alts = [(tok.decode([i]), p) for i, p in zip(top_i, top_p, strict=True)]
        tokens.append(TokenInfo(token_id, tok.decode([token_id]), logprob, alts))

    ended = False
    reported = [0, started]  # the queue position last reported, and when
    try:
        while not ended:
            try:
                item = out.get(timeout=HEARTBEAT_S)
            except queue.Empty:
                if not ids:
                    now = time.perf_counter()
                    if request.queue_position != reported[0] or now - reported[1] >= QUIET_WAIT_S:
                        reported[:] = [request.queue_position, now]
                        yield event()  # still waiting: the position in the queue, and a chance to notice a closed tab
                continue
            if item is None:
                break
            first = first if first is not None else time.perf_counter() - started
            take(item)
            # Every token that is already there joins this report (a slow reader catches up at once).
            while True:
                try:
                    item = out.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    ended = True
                    break
                take(item)
            if not ended:
                yield event()
                sharing = request.sharing
                if len(ids) > 1 and sharing > 1:
                    # The wait happens after the report, so the first token is shown at once. It ends
                    # when the request finishes (its last tokens, Stop included, go out at once):
                    # waiting out the interval instead delivered a class's texts ~0.5 s late on
                    # average, up to MAX_UPDATE_S.
                    request.finished.wait(min(MAX_UPDATE_S, (sharing - 1) * UPDATE_S_PER_SHARER))
        if request.error is not None:
            raise request.error
        yield event(done=True, finish_reason=request.finish_reason)
    finally:
        cancel.set()  # a closed consumer stops the worker (or frees its row) at the next step


def generate_text(loaded: Loaded, prompt: str, s: SamplingSettings) -> StreamEvent:
    """The whole generation at once (the last event of ``stream``)."""
    events = stream(loaded, prompt, s)
    last = next(events)
    for last in events:  # noqa: B007 - only the final event is wanted
        continue
    return last


def next_token(loaded: Loaded, prefix: str, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
               show: int = 20, repetition_penalty: float = 1.0) -> tuple[list[Candidate], str]:
    """The model's distribution for the next token and what the sliders do to it.

    Applies exactly what generation applies, in its order (``models.generation.sampling``: repetition penalty
    over the prefix's tokens, temperature, top-k, top-p), so ``prob_final`` is the distribution the
    next token is drawn from. Rows are the ``show`` most likely tokens after penalty and temperature;
    with temperature 0 they follow the model's probabilities and only the greedy choice is kept.
    Raises InputError for an empty prefix or out-of-range settings.
    """
    SamplingSettings(temperature=temperature, top_p=top_p, top_k=top_k, repetition_penalty=repetition_penalty).validate()
    ids, notice = encode_prompt(loaded, prefix, reserve=1)
    history = ids[0].cpu()
    logits = engines.local().next_logits(loaded, history.tolist())
    p = sampling.Processors(temperature, top_p, int(top_k), repetition_penalty)
    probs = torch.softmax(logits, -1)
    penalised = sampling.penalised(logits, history, repetition_penalty)
    tempered = torch.softmax(penalised / (temperature or 1.0), -1)
    final = sampling.distribution(logits, history, p)
    order = torch.argsort(tempered, descending=True)[:show]
    tok = loaded.tokenizer
    cands = [Candidate(tok.decode([int(i)]), int(i), float(probs[i]), float(tempered[i]), bool(final[i] > 0),
                       float(final[i])) for i in order]
    return cands, notice

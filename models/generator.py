"""Causal-LM handler: streamed sampling with per-token log-probs, and the next-token view.

Streaming runs ``model.generate`` in a worker thread. Two small hooks give the UI
what it teaches with, at the cost of one log-softmax per step:
- ``_Recorder`` (a LogitsProcessor placed first) keeps the model's raw distribution,
  so every token can be shown with its probability and surprisal under the model;
- ``_Cancel`` (a StoppingCriteria) checks a ``threading.Event``: Stop (or a closed tab)
  stops the model itself between two steps, not only the UI.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from models.errors import InputError
from models.registry import Loaded

MAX_PROMPT_CHARS = 200_000


@dataclass
class SamplingSettings:
    temperature: float = field(default=0.8, metadata={"help": "0 = greedy (always the most likely token); higher = more random", "min": 0.0, "max": 2.0})
    top_p: float = field(default=0.95, metadata={"help": "keep the smallest set of tokens whose probabilities add up to p", "min": 0.01, "max": 1.0})
    top_k: int = field(default=50, metadata={"help": "keep only the k most likely tokens (0 = no limit)", "min": 0, "max": 1000})
    max_new_tokens: int = field(default=80, metadata={"help": "how many tokens to generate at most", "min": 1, "max": 1024})
    repetition_penalty: float = field(default=1.0, metadata={"help": "> 1 discourages repeating tokens already in the text", "min": 1.0, "max": 2.0})
    seed: int = field(default=0, metadata={"help": "same seed, same settings -> same text", "min": 0, "max": 2**31 - 1})
    chat_template: bool = field(default=False, metadata={"help": "wrap the prompt in the model's chat template (instruct models)"})

    def validate(self) -> SamplingSettings:
        """Clamp nothing silently: out-of-range values (from the API) are an InputError."""
        for name, f in self.__dataclass_fields__.items():
            value = getattr(self, name)
            lo, hi = f.metadata.get("min"), f.metadata.get("max")
            if isinstance(value, bool) or lo is None:
                continue
            if value is None or not isinstance(value, (int, float)) or math.isnan(value) or not lo <= value <= hi:
                raise InputError(f"{name} must be between {lo} and {hi} (got {value!r})")
        self.top_k, self.max_new_tokens, self.seed = int(self.top_k), int(self.max_new_tokens), int(self.seed)
        return self


@dataclass
class TokenInfo:
    token_id: int
    text: str
    logprob: float  # natural log of p(token | prefix) under the model (temperature 1)
    alternatives: list[tuple[str, float]]  # top-5 (text, probability) under the model

    @property
    def prob(self) -> float:
        return math.exp(self.logprob)

    @property
    def bits(self) -> float:
        return -self.logprob / math.log(2)


@dataclass
class StreamEvent:
    text: str  # all generated text so far
    tokens: list[TokenInfo]
    done: bool = False
    finish_reason: str = ""  # length | eos | stopped
    notice: str = ""  # e.g. prompt truncation
    prompt_tokens: int = 0
    seconds: float = 0.0
    first_token_seconds: float | None = None

    @property
    def total_bits(self) -> float:
        return sum(t.bits for t in self.tokens)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["total_bits"] = self.total_bits
        return data


class _Recorder(LogitsProcessor):
    """Keeps log p(. | prefix) of the raw model for the step being sampled."""

    def __init__(self) -> None:
        self.logprobs: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.logprobs = torch.log_softmax(scores[0].float(), dim=-1)  # (vocab,)
        return scores


class _Cancel(StoppingCriteria):
    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _Streamer:
    """The ``streamer`` protocol of generate(): put() gets each new token id, end() once."""

    def __init__(self, recorder: _Recorder, out: queue.Queue) -> None:
        self.recorder, self.out, self.prompt_seen = recorder, out, False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first sends the prompt itself
            self.prompt_seen = True
            return
        token_id = int(value.reshape(-1)[0])
        logprobs = self.recorder.logprobs
        top = torch.topk(logprobs, 5)
        self.out.put((token_id, float(logprobs[token_id]), top.values.exp().tolist(), top.indices.tolist()))

    def end(self) -> None:
        self.out.put(None)


def context_limit(loaded: Loaded) -> int:
    config = loaded.model.config
    return int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 1024))


def encode_prompt(loaded: Loaded, prompt: str, chat_template: bool = False, reserve: int = 0) -> tuple[torch.Tensor, str]:
    """Token ids (1, n) of the prompt, cut to fit the context (the end is kept). Returns (ids, notice)."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("the prompt is empty: type a few words for the model to continue")
    if len(prompt) > MAX_PROMPT_CHARS:
        prompt = prompt[-MAX_PROMPT_CHARS:]
    tok = loaded.tokenizer
    if chat_template and getattr(tok, "chat_template", None):
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, return_dict=False)
        ids = list(ids["input_ids"]) if isinstance(ids, dict) else list(ids)
    else:
        ids = tok(prompt)["input_ids"]
    room = max(1, context_limit(loaded) - reserve)
    notice = ""
    if len(ids) > room:
        notice = f"The prompt has {len(ids):,} tokens; the model sees {room:,} at most, so only the last {room:,} were kept."
        ids = ids[-room:]
    return torch.tensor([ids], dtype=torch.long, device=loaded.device.device), notice


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


# One generation at a time per model: the global torch RNG makes "same seed, same text"
# true only if no other sampling interleaves. Other users queue (the UI shows the queue).
_model_locks: dict[int, threading.Lock] = {}
_locks_guard = threading.Lock()


def _model_lock(loaded: Loaded) -> threading.Lock:
    with _locks_guard:
        return _model_locks.setdefault(id(loaded.model), threading.Lock())


def stream(loaded: Loaded, prompt: str, s: SamplingSettings, cancel: threading.Event | None = None) -> Iterator[StreamEvent]:
    """Yield a StreamEvent after every generated token, then a final one with done=True.

    Closing the iterator early (a closed browser tab) sets the cancel event, so the
    worker thread stops at its next step instead of running to max_new_tokens.
    """
    s.validate()
    cancel = cancel or threading.Event()
    input_ids, notice = encode_prompt(loaded, prompt, s.chat_template, reserve=s.max_new_tokens)
    recorder, out = _Recorder(), queue.Queue()
    streamer = _Streamer(recorder, out)
    errors: list[BaseException] = []
    lock = _model_lock(loaded)

    def work() -> None:
        try:
            with lock, torch.inference_mode():
                torch.manual_seed(s.seed)
                loaded.model.generate(
                    input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    logits_processor=LogitsProcessorList([recorder]),
                    stopping_criteria=StoppingCriteriaList([_Cancel(cancel)]),
                    streamer=streamer,
                    **generate_kwargs(s, loaded),
                )
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)
            out.put(None)

    started = time.perf_counter()
    thread = threading.Thread(target=work, daemon=True, name="lmlab-generate")
    thread.start()
    tok = loaded.tokenizer
    tokens: list[TokenInfo] = []
    ids: list[int] = []
    first = None
    eos = tok.eos_token_id
    try:
        while True:
            item = out.get()
            if item is None:
                break
            token_id, logprob, top_p, top_i = item
            first = first if first is not None else time.perf_counter() - started
            ids.append(token_id)
            text_piece = tok.decode([token_id])
            alts = [(tok.decode([i]), p) for i, p in zip(top_i, top_p, strict=True)]
            tokens.append(TokenInfo(token_id, text_piece, logprob, alts))
            yield StreamEvent(tok.decode(ids, skip_special_tokens=True), tokens, notice=notice,
                              prompt_tokens=input_ids.shape[1], seconds=time.perf_counter() - started,
                              first_token_seconds=first)
        thread.join()
        if errors:
            raise errors[0]
        if cancel.is_set():
            reason = "stopped"
        elif ids and ids[-1] == eos:
            reason = "eos"
        else:
            reason = "length"
        yield StreamEvent(tok.decode(ids, skip_special_tokens=True), tokens, done=True, finish_reason=reason,
                          notice=notice, prompt_tokens=input_ids.shape[1], seconds=time.perf_counter() - started,
                          first_token_seconds=first)
    finally:
        cancel.set()  # a closed consumer stops the worker at its next step


def generate_text(loaded: Loaded, prompt: str, s: SamplingSettings) -> StreamEvent:
    """The whole generation at once (the last event of ``stream``)."""
    events = stream(loaded, prompt, s)
    last = next(events)
    for last in events:  # noqa: B007 - only the final event is wanted
        continue
    return last


@dataclass
class Candidate:
    token: str
    token_id: int
    prob: float  # under the model (temperature 1)
    prob_tempered: float  # after temperature
    kept: bool  # survives top-k and top-p
    prob_final: float  # what sampling uses: renormalised over the kept tokens (0 if cut)


def next_token(loaded: Loaded, prefix: str, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
               show: int = 20) -> tuple[list[Candidate], str]:
    """The model's distribution for the next token and what the sliders do to it.

    Follows transformers' order (temperature -> top-k -> top-p) and its top-p rule:
    sort ascending, drop tokens whose cumulative probability is <= 1 - top_p, keep >= 1.
    Temperature 0 means greedy: only the most likely token is kept.
    """
    SamplingSettings(temperature=temperature, top_p=top_p, top_k=top_k).validate()
    ids, notice = encode_prompt(loaded, prefix, reserve=1)
    with _model_lock(loaded), torch.inference_mode():
        logits = loaded.model(ids).logits[0, -1].float()  # (vocab,)
    probs = torch.softmax(logits, -1)
    if temperature == 0:
        tempered = torch.zeros_like(probs)
        tempered[probs.argmax()] = 1.0
        keep = tempered > 0
    else:
        tempered = torch.softmax(logits / temperature, -1)
        keep = torch.ones_like(tempered, dtype=torch.bool)
        if top_k and top_k < keep.numel():
            kth = torch.topk(tempered, int(top_k)).values[-1]
            keep &= tempered >= kth
        if top_p < 1.0:
            masked = torch.where(keep, tempered, torch.zeros_like(tempered))
            masked = masked / masked.sum()
            sorted_p, order = torch.sort(masked)  # ascending
            drop_sorted = torch.cumsum(sorted_p, 0) <= 1 - top_p
            drop_sorted[-1] = False  # always keep the most likely token
            drop = torch.zeros_like(keep)
            drop[order] = drop_sorted
            keep &= ~drop
    final = torch.where(keep, tempered, torch.zeros_like(tempered))
    final = final / final.sum()
    order = torch.argsort(tempered, descending=True)[:show]
    tok = loaded.tokenizer
    cands = [Candidate(tok.decode([int(i)]), int(i), float(probs[i]), float(tempered[i]), bool(keep[i]), float(final[i]))
             for i in order]
    return cands, notice

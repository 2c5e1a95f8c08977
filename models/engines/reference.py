"""The reference engine: one request alone through transformers' ``generate``, one after another.

The plain path a student can read (``--no-batching``): ``model.generate`` runs in a worker thread with
two small hooks that give the UI what it teaches with, at the cost of one log-softmax per step:
- ``_Recorder`` (a LogitsProcessor placed first) keeps the model's raw distribution, so every token
  can be shown with its probability and surprisal under the model;
- ``_Cancel`` (a StoppingCriteria) checks a ``threading.Event``: Stop (or a closed tab) stops the model
  itself between two steps, not only the UI.
Tokens are drawn by ``models.generation.sampling`` (the classroom engine's code) with the request's own
seeded generator, so both engines give the same text for a seed (tests compare them).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from models.engines.requests import Capabilities
from models.engines.scheduler import TOP_ALTERNATIVES, Request
from models.generation import sampling

T = TypeVar("T")


class _Recorder(LogitsProcessor):
    """Keeps log p(. | prefix) of the raw model for the step being sampled."""

    def __init__(self) -> None:
        self.logprobs: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.logprobs = torch.log_softmax(scores[0].float(), dim=-1)  # (vocab,)
        return scores


class _Sampler(LogitsProcessor):
    """Picks the next token with ``models.generation.sampling`` and the request's own seeded generator.

    Placed after ``_Recorder`` in a greedy ``generate()``: the chosen token keeps its score and every
    other token gets -inf, so greedy search takes exactly the token this request's sampler drew.
    """

    def __init__(self, p: sampling.Processors, seed: int) -> None:
        self.p, self.rng = p, torch.Generator(device="cpu").manual_seed(seed)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        token = sampling.choose(scores[0].float().cpu(), input_ids[0].cpu(), self.p, self.rng)
        out = torch.full_like(scores, -float("inf"))
        out[0, token] = 0.0
        return out


class _Cancel(StoppingCriteria):
    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _Streamer:
    """The ``streamer`` protocol of generate(): put() gets each new token id, end() once."""

    def __init__(self, recorder: _Recorder, request: Request) -> None:
        self.recorder, self.request, self.prompt_seen = recorder, request, False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first sends the prompt itself
            self.prompt_seen = True
            return
        token_id = int(value.reshape(-1)[0])
        logprobs = self.recorder.logprobs
        top = torch.topk(logprobs, TOP_ALTERNATIVES)
        self.request.generated.append(token_id)
        self.request.out.put((token_id, float(logprobs[token_id]), top.values.exp().tolist(), top.indices.tolist()))

    def end(self) -> None:
        pass


# One generation at a time per model: other users queue (the UI shows the queue).
_model_locks: dict[int, threading.Lock] = {}
_locks_guard = threading.Lock()


def model_lock(loaded) -> threading.Lock:
    """The lock that one-at-a-time work on ``loaded``'s model holds."""
    with _locks_guard:
        return _model_locks.setdefault(id(loaded.model), threading.Lock())


def last_logits(loaded, rows: list[list[int]]) -> torch.Tensor:
    """Raw next-token logits (n, vocab) for each token list, in one right-padded forward pass."""
    n, longest = len(rows), max(len(r) for r in rows)
    ids = torch.zeros((n, longest), dtype=torch.long)
    mask = torch.zeros((n, longest), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    device = loaded.device.device
    with torch.inference_mode():
        hidden = loaded.model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        last = hidden[torch.arange(n), torch.tensor([len(r) - 1 for r in rows])]
        return loaded.model.get_output_embeddings()(last).float().cpu()


class ReferenceEngine:
    """Each request alone, in arrival order, through ``model.generate`` (see the module docstring)."""

    name = "reference"
    capabilities = Capabilities(alternatives=TOP_ALTERNATIVES, after_temperature=False, internals=True,
                                shares_steps=False, open_streams=2,
                                label="one request at a time (batching off)")

    def submit(self, loaded, request: Request) -> Request:
        """Start ``request`` in a worker thread; its tokens arrive on ``request.out`` as with the scheduler."""
        ids = torch.tensor([request.prompt_ids], dtype=torch.long, device=loaded.device.device)
        recorder = _Recorder()
        streamer = _Streamer(recorder, request)
        tok = loaded.tokenizer
        lock = model_lock(loaded)

        def work() -> None:
            try:
                with lock, torch.inference_mode():
                    loaded.model.generate(
                        ids,
                        attention_mask=torch.ones_like(ids),
                        logits_processor=LogitsProcessorList([recorder, _Sampler(request.processors, request.seed)]),
                        stopping_criteria=StoppingCriteriaList([_Cancel(request.cancel)]),
                        streamer=streamer,
                        max_new_tokens=request.max_new_tokens, pad_token_id=tok.pad_token_id,
                        eos_token_id=request.eos_token_id,
                        do_sample=False, temperature=None, top_p=None, top_k=None, repetition_penalty=None,
                    )
                if request.cancel.is_set():
                    reason = "stopped"
                elif request.generated and request.generated[-1] == request.eos_token_id:
                    reason = "eos"
                else:
                    reason = "length"
            except BaseException as exc:  # re-raised in the reader's thread
                request.error, reason = exc, "error"
            request.finish_reason = reason
            request.out.put(None)
            request.finished.set()

        threading.Thread(target=work, daemon=True, name="lmlab-generate").start()
        return request

    def call(self, loaded, fn: Callable[[], T]) -> T:
        """``fn()`` under the model's lock, so it never races a generation."""
        with model_lock(loaded):
            return fn()

    def next_logits(self, loaded, ids: list[int]) -> torch.Tensor:
        """Raw logits (vocab,) after ``ids``: one forward pass alone under the model's lock."""
        with model_lock(loaded):
            return last_logits(loaded, [ids])[0]

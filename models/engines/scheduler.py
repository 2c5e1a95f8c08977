"""One scheduler per loaded causal LM: every user's decode steps share forward passes.

Iteration-level ("continuous") batching as text-generation servers do it (Orca, Yu et al., OSDI
2022; vLLM; TGI): a single thread owns the model and loops

    1. run queued jobs (e.g. a gathered batch of next-token views), drop stopped requests;
    2. admit waiting requests while the batch and the key/value memory have room (first come,
       first served; the others see their queue position);
    3. prefill admitted prompts, at most ``PREFILL_CHUNK`` positions per step, groups with the fewest
       positions left first, so a long prompt never freezes the other streams;
    4. run one decode step: one forward pass for every decoding sequence, each at its own length
       (``models.engines.slot_cache``; on a CPU with a packed copy of the matrices, ``models.engines.packed_linear``),
       then each request's own processors and random generator pick its token.

A request's text does not depend on who else shares the step: its processors see only its own row,
its generator is seeded from its own seed, and the forward pass computes each row independently
(tests compare outputs alone and inside mixed batches).

Why not transformers' own continuous batching, and why a thread rather than a process of its own:
docs/CLASSROOM.md.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import psutil
import torch

from models.core import libc
from models.engines import kv_cache, packed_linear
from models.engines.slot_cache import SlotCache
from models.generation import sampling

log = logging.getLogger("lmlab.scheduler")

PREFILL_CHUNK = 256  # prompt positions per prefill forward: a long prompt is spread over several steps
# A scheduler idle this long ends its thread and lets go of its model, so a model the registry evicted
# can be freed; the next request starts a new one.
IDLE_EXIT_S = 60.0
SHRINK_ABOVE = 1024  # cache positions per row above which a shorter batch reallocates to fit
TOP_ALTERNATIVES = 5
# Without a measured reason to go higher, a CPU batch stops at 32 (one decode step of SmolLM2 on
# 2 cores: 56 ms alone, 129 ms at 32) and a GPU batch at 256; memory may lower both.
DEFAULT_MAX_BATCH = {"cpu": 32, "mps": 64, "cuda": 256}
# Share of the free memory the key/value cache may take (the rest stays for activations and other tabs).
MEMORY_SHARE = 0.25


class Closed(RuntimeError):
    """The scheduler has ended (idle too long, or closed); ask ``for_model`` for a fresh one."""


@dataclass
class Limits:
    """How many sequences may decode together and how many cached positions they may hold."""

    max_batch: int
    max_tokens: int
    bytes_per_token: int

    def describe(self) -> str:
        return (f"up to {self.max_batch} sequences, {self.max_tokens:,} cached positions "
                f"({self.bytes_per_token / 1024:.0f} KiB each)")


def kv_bytes_per_token(config, dtype: torch.dtype) -> int:
    """Bytes of keys and values one position costs: 2 x layers x key/value heads x head size x dtype size."""
    text = config.get_text_config(decoder=True)
    layers = int(text.num_hidden_layers)
    heads = int(getattr(text, "num_key_value_heads", None) or text.num_attention_heads)
    head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads)
    return 2 * layers * heads * head_dim * torch.tensor([], dtype=dtype).element_size()


def free_memory(device: torch.device) -> int:
    """Bytes free for new tensors on ``device`` (GPU: the driver's figure; CPU: available RAM)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return int(psutil.virtual_memory().available)


def limits_for(model, device: torch.device) -> Limits:
    """Batch and cache limits from the model's key/value size and the free memory.

    Overrides: ``LMLAB_MAX_BATCH`` (sequences) and ``LMLAB_KV_CACHE_MB`` (key/value memory in MiB).
    """
    per_token = kv_bytes_per_token(model.config, next(model.parameters()).dtype)
    budget = int(float(os.environ.get("LMLAB_KV_CACHE_MB", 0)) * 2**20) or int(free_memory(device) * MEMORY_SHARE)
    max_tokens = max(1, budget // per_token)
    max_batch = int(os.environ.get("LMLAB_MAX_BATCH", 0)) or DEFAULT_MAX_BATCH.get(device.type, 32)
    return Limits(max(1, max_batch), max_tokens, per_token)


def context_of(model) -> int:
    """Positions the model can attend over (``max_position_embeddings``, or GPT-2's ``n_positions``)."""
    config = model.config.get_text_config(decoder=True)
    return int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 1024))


@dataclass
class Request:
    """One generation: its prompt, its settings, and the queue its tokens stream into.

    ``out`` receives ``(token_id, logprob, top_probs, top_ids)`` per token (log-prob and top
    alternatives under the raw model, temperature 1), then ``None`` once ``finish_reason`` is set.
    """

    prompt_ids: list[int]
    processors: sampling.Processors
    max_new_tokens: int
    seed: int
    eos_token_id: int | None
    cancel: threading.Event = field(default_factory=threading.Event)
    out: queue.Queue = field(default_factory=queue.Queue)
    # Set with ``finish_reason``: a stream waiting between two reports wakes for the last tokens at once.
    finished: threading.Event = field(default_factory=threading.Event)
    queue_position: int = 0  # 1-based while waiting for a place in the batch, 0 once admitted
    sharing: int = 0  # sequences in this request's latest decode step
    finish_reason: str = ""  # eos | length | context | stopped | error
    error: BaseException | None = None
    generated: list[int] = field(default_factory=list)
    rng: torch.Generator | None = None
    history: torch.Tensor | None = None  # prompt + generated ids, for the repetition penalty

    @property
    def need(self) -> int:
        """Cache positions this request may occupy: its prompt plus every token it may generate."""
        return len(self.prompt_ids) + self.max_new_tokens

    @property
    def done(self) -> bool:
        return bool(self.finish_reason)


@dataclass
class _Group:
    """Requests admitted together, prefilled together through one staging cache, chunk by chunk.

    Identical prompts are read once (a class pressing Generate on the tab's default prompt is thirty
    copies of one prompt): ``prompts`` holds each distinct prompt, one row of the staging cache each, and
    ``lanes[i]`` is the row of ``requests[i]``. The rows are the same numbers whoever else shares the
    forward pass (tests compare texts alone and in mixed batches), so sharing a row changes no text.
    This is prefix caching (vLLM's automatic prefix caching) limited to whole prompts arriving together.
    """

    requests: list[Request]
    cache: object
    prompts: list[list[int]]
    lanes: list[int]
    done_positions: int = 0

    @classmethod
    def of(cls, requests: list[Request], cache: object) -> _Group:
        rows: dict[tuple[int, ...], int] = {}
        lanes = [rows.setdefault(tuple(r.prompt_ids), len(rows)) for r in requests]
        return cls(requests, cache, [list(p) for p in rows], lanes)

    @property
    def length(self) -> int:
        return max(len(p) for p in self.prompts)

    @property
    def remaining(self) -> int:
        return self.length - self.done_positions


class Scheduler:
    """Owns a causal LM's forward passes on one device; see the module docstring."""

    def __init__(self, model, device: torch.device, limits: Limits | None = None, context: int | None = None) -> None:
        self.model, self.device = model, device
        self.limits = limits or limits_for(model, device)
        config = model.config.get_text_config(decoder=True)
        self.context = context or context_of(model)
        self.slots = SlotCache(int(config.num_hidden_layers), device)
        self.waiting: deque[Request] = deque()
        self.prefilling: list[_Group] = []
        self.active: list[Request] = []  # row i of the slot cache holds active[i]
        self.jobs: deque[tuple[Callable, Future]] = deque()
        self.cond = threading.Condition()
        self.steps = 0
        self._closed = False
        self._forward: tuple | None = None  # (body, output layer) of the forward passes, set on the first step
        self._thread = threading.Thread(target=self._loop, daemon=True, name="lmlab-scheduler")
        self._thread.start()

    # -- what other threads call -------------------------------------------------------------

    def submit(self, request: Request) -> Request:
        """Queue a request; its tokens arrive on ``request.out``. Never blocks, never drops.

        Raises ValueError if prompt + max new tokens exceed the context, ``Closed`` if this scheduler
        has ended (``submit`` at module level retries on a fresh one).
        """
        if request.need > self.context:
            raise ValueError(f"{request.need} positions do not fit the model's context of {self.context}")
        request.rng = torch.Generator(device="cpu").manual_seed(request.seed)
        request.history = torch.tensor(request.prompt_ids, dtype=torch.long)
        with self.cond:
            if self._closed:
                raise Closed()
            # No queue position yet: a request waits only if the next admission finds no room for it
            # (``_admit`` numbers those), not merely because it arrived during a step.
            self.waiting.append(request)
            self.cond.notify()
        return request

    def call(self, fn: Callable[[], object]) -> object:
        """Run ``fn()`` on the scheduler's thread between two steps and return its result (or raise)."""
        future: Future = Future()
        with self.cond:
            if self._closed:
                raise Closed()
            self.jobs.append((fn, future))
            self.cond.notify()
        return future.result()

    def load(self) -> dict:
        """What the model is doing now: decoding sequences, prompts being read, requests waiting."""
        with self.cond:
            active = set(map(id, self.active))
            reading = sum(1 for g in self.prefilling for r in g.requests if not r.done and id(r) not in active)
            return {"decoding": len(active), "prefilling": reading, "waiting": len(self.waiting)}

    def close(self) -> None:
        """Stop the thread; requests still queued or running finish as "stopped"."""
        with self.cond:
            self._closed = True
            self.cond.notify()
        self._thread.join(timeout=10)
        with _guard:
            if _schedulers.get(id(self.model)) is self:
                del _schedulers[id(self.model)]

    # -- the loop -----------------------------------------------------------------------------

    def _idle(self) -> bool:
        return not (self.jobs or self.waiting or self.prefilling or self.active)

    def _loop(self) -> None:
        while True:
            with self.cond:
                if self._idle() and not self._closed:
                    self.slots.release()  # an idle model gives its key/value memory back
                    _return_freed_memory()
                    self.cond.wait(timeout=IDLE_EXIT_S)
                    if self._idle() and not self._closed:
                        self._retire()
                        return
                    continue
                if self._closed:
                    for r in [*self.waiting, *self.active, *(r for g in self.prefilling for r in g.requests)]:
                        self._finish(r, "stopped")
                    return
                jobs, self.jobs = list(self.jobs), deque()
            for fn, future in jobs:
                if future.set_running_or_notify_cancel():
                    try:
                        with torch.inference_mode():
                            future.set_result(fn())
                    except BaseException as exc:  # the caller re-raises it
                        future.set_exception(exc)
            try:
                with torch.inference_mode():
                    self._drop_stopped()
                    self._admit()
                    self._prefill()
                    self._decode_step()
            except Exception as exc:  # a failed forward fails the requests in it, never the thread
                log.exception("scheduler step failed")
                self._fail_all(exc)

    def _retire(self) -> None:
        """Called with ``cond`` held: stop accepting work and forget the model (see IDLE_EXIT_S)."""
        self._closed = True
        with _guard:
            if _schedulers.get(id(self.model)) is self:
                del _schedulers[id(self.model)]
        self.model = None

    def _admit(self) -> None:
        with self.cond:
            admitted: list[Request] = []
            rows = len(self.active) + sum(len(g.requests) for g in self.prefilling)
            longest = max([r.need for r in self.active] + [r.need for g in self.prefilling for r in g.requests], default=0)
            while self.waiting:
                r = self.waiting[0]
                new_rows, new_longest = rows + 1, max(longest, r.need)
                # The slot cache is rows x longest positions, so that is what memory must hold.
                fits = new_rows <= self.limits.max_batch and new_rows * new_longest <= self.limits.max_tokens
                if not fits and rows:  # an oversized request alone is still served, one at a time
                    break
                self.waiting.popleft()
                r.queue_position = 0
                admitted.append(r)
                rows, longest = new_rows, new_longest
            for i, r in enumerate(self.waiting):
                r.queue_position = i + 1
        if admitted:
            # Chunks never write past the longest prompt, so that is all the staging cache holds.
            capacity = max(len(r.prompt_ids) for r in admitted)
            self.prefilling.append(_Group.of(admitted, kv_cache.preallocated(self.model.config, capacity)))

    def _drop_stopped(self) -> None:
        with self.cond:
            for r in [r for r in self.waiting if r.cancel.is_set()]:
                self.waiting.remove(r)
                self._finish(r, "stopped")
            for i, r in enumerate(self.waiting):
                if r.queue_position:  # those behind a stopped one move up; new arrivals wait for _admit
                    r.queue_position = i + 1
        for g in list(self.prefilling):
            for r in [r for r in g.requests if r.cancel.is_set()]:
                self._finish(r, "stopped")
            if all(r.done for r in g.requests):
                self.prefilling.remove(g)
        for r in [r for r in self.active if r.cancel.is_set()]:
            self._finish(r, "stopped")
        self._compact()

    def _compact(self) -> None:
        """Remove finished rows; the last live row moves into each hole so rows stay contiguous."""
        i = 0
        while i < len(self.active):
            if self.active[i].done:
                last = len(self.active) - 1
                if i != last:
                    moved = self.active[last]
                    self.slots.move(last, i, len(moved.prompt_ids) + len(moved.generated))
                    self.active[i] = moved
                self.active.pop()
            else:
                i += 1
        if self.active and self.slots.capacity > SHRINK_ABOVE:
            # A long request has left: give its positions back instead of holding them until idle.
            longest = -(-max(r.need for r in self.active) // 128) * 128
            if 2 * longest <= self.slots.capacity:
                self.slots.shrink(longest)

    # -- forward passes -----------------------------------------------------------------------

    def _parts(self) -> tuple:
        """(body, output layer): on a CPU, copies with packed matrices (``models.engines.packed_linear``); elsewhere the
        model's own."""
        if self._forward is None:
            packed = packed_linear.for_model(self.model, self.device) if packed_linear.ENABLED else None
            self._forward = packed or (self.model.base_model, self.model.get_output_embeddings())
        return self._forward

    def _body(self, **kwargs):
        return self._parts()[0](**kwargs)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._parts()[1](hidden).float()

    def _prefill(self) -> None:
        """Up to ``PREFILL_CHUNK`` prompt positions this step, shortest group first: many short prompts
        that arrived a few milliseconds apart all start now; a long one takes a chunk per step."""
        spent = 0
        while self.prefilling and spent < PREFILL_CHUNK:
            spent += self._prefill_one_chunk()

    def _prefill_one_chunk(self) -> int:
        group = min(self.prefilling, key=lambda g: g.remaining)
        start = group.done_positions
        stop = min(group.length, start + PREFILL_CHUNK)
        prompts = group.prompts
        q = stop - start
        ids = torch.zeros((len(prompts), q), dtype=torch.long)
        positions = torch.empty((len(prompts), q), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            chunk = prompt[start:stop]
            ids[i, :len(chunk)] = torch.tensor(chunk, dtype=torch.long)
            # Padding (rows whose prompt ended) repeats the last real position: always a valid position.
            positions[i] = torch.clamp(torch.arange(start, stop), max=len(prompt) - 1)
        # Query j of a row sees keys up to its own position; padded keys beyond a prompt are never seen.
        mask = self._mask(positions, stop)
        out = self._body(input_ids=ids.to(self.device), position_ids=positions.to(self.device),
                         attention_mask=mask, cache=group.cache, use_cache=True)
        group.done_positions = stop
        ending = [i for i, p in enumerate(prompts) if start < len(p) <= stop]  # rows whose prompt ends here
        if ending:
            rows = torch.tensor(ending)
            last = torch.tensor([len(prompts[i]) - 1 - start for i in ending])
            logits = self._logits(out.last_hidden_state[rows, last])  # (distinct prompts ending, vocab)
            where = {row: k for k, row in enumerate(ending)}
            finishing = [i for i, r in enumerate(group.requests) if group.lanes[i] in where and not r.done]
            lanes = [group.lanes[i] for i in finishing]
            self._emit([group.requests[i] for i in finishing], logits[[where[lane] for lane in lanes]],
                       group=group, lanes=lanes)
        if group.remaining <= 0:
            self.prefilling.remove(group)
        return q

    def _decode_step(self) -> None:
        self._compact()  # rows stopped since the last step leave before the forward pass
        if not self.active:
            return
        n = len(self.active)
        last = torch.tensor([r.generated[-1] for r in self.active], dtype=torch.long, device=self.device)
        positions = torch.tensor([len(r.prompt_ids) + len(r.generated) - 1 for r in self.active],
                                 dtype=torch.long, device=self.device)
        cache = self.slots.prepare(positions)
        mask = self._mask(positions[:, None], self.slots.kv_len)
        out = self._body(input_ids=last[:, None], position_ids=positions[:, None], attention_mask=mask,
                         cache=cache, use_cache=True)
        logits = self._logits(out.last_hidden_state[:, -1])  # (n, vocab)
        self.steps += 1
        for r in self.active:
            r.sharing = n
        self._emit(list(self.active), logits)
        self._compact()

    def _mask(self, positions: torch.Tensor, kv_len: int) -> torch.Tensor:
        """Additive mask (rows, 1, queries, kv_len): 0 where key <= the query's position, else the dtype's minimum."""
        dtype = next(self.model.parameters()).dtype
        keys = torch.arange(kv_len, device=self.device)
        visible = keys[None, None, :] <= positions.to(self.device)[:, :, None]
        mask = torch.zeros(visible.shape, dtype=dtype, device=self.device)
        mask.masked_fill_(~visible, torch.finfo(dtype).min)
        return mask[:, None]

    def _emit(self, reqs: list[Request], logits: torch.Tensor, group: _Group | None = None,
              lanes: list[int] | None = None) -> None:
        """Pick each request's next token from its own row of ``logits`` (n, vocab) and stream it."""
        logits = logits.float().cpu()  # sampling runs on the CPU with each request's own generator
        # log p = logit - logsumexp: the top alternatives and the chosen token's log-prob without
        # materialising a (rows, vocab) log-softmax.
        lse = torch.logsumexp(logits, -1, keepdim=True)
        # One top-k (and one argmax) for every row that needs no repetition penalty: thirty small calls
        # per step each hand the GIL back and forth with the web server's threads, one call does not.
        plain = [i for i, r in enumerate(reqs) if r.processors.repetition_penalty == 1.0]
        top_k = max([reqs[i].processors.top_k for i in plain if not reqs[i].processors.greedy], default=0)
        if 0 < top_k < logits.shape[-1] and all(reqs[i].processors.greedy or reqs[i].processors.top_k for i in plain):
            top_values, top_ids = torch.topk(logits, max(top_k, TOP_ALTERNATIVES), dim=-1)
            # The alternatives are the first columns of that sorted top-k: one pass over the logits less.
            top = (top_values[:, :TOP_ALTERNATIVES], top_ids[:, :TOP_ALTERNATIVES])
        else:
            top_values = top_ids = None
            top = torch.topk(logits, TOP_ALTERNATIVES, dim=-1)
        top_p, top_i = (top[0] - lse).exp().tolist(), top[1].tolist()
        lse = lse[:, 0].tolist()
        # Each pass over (rows, vocab) logits costs ~1.7 ms for a class of 30: no argmax without a greedy row.
        greedy = logits.argmax(-1).tolist() if any(reqs[i].processors.greedy for i in plain) else None
        sent: list[tuple[int, Request, tuple]] = []
        for i, r in enumerate(reqs):
            p = r.processors
            try:
                if p.repetition_penalty != 1.0:
                    token = sampling.choose(logits[i], r.history, p, r.rng)
                elif p.greedy:
                    token = greedy[i]
                elif top_values is not None:
                    token = sampling.draw(*sampling.from_top(top_values[i, :p.top_k], top_ids[i, :p.top_k], p), r.rng)
                else:
                    token = sampling.choose(logits[i], r.history, p, r.rng)
            except Exception as exc:  # e.g. a distribution with NaNs: this request fails alone
                r.error = exc
                self._finish(r, "error")
                continue
            r.generated.append(token)
            if p.repetition_penalty != 1.0:
                r.history = torch.cat([r.history, torch.tensor([token])])
            sent.append((i, r, (token, float(logits[i, token]) - lse[i], top_p[i], top_i[i])))
        # Tokens go out after every row is sampled: each put wakes a reader thread that then competes
        # for the GIL, and thirty of them woken one by one slowed this loop several times over.
        joining: list[tuple[Request, int]] = []
        for i, r, item in sent:
            r.out.put(item)
            token = item[0]
            if r.eos_token_id is not None and token == r.eos_token_id:
                self._finish(r, "eos")
            elif len(r.generated) >= r.max_new_tokens:
                self._finish(r, "length")
            elif len(r.prompt_ids) + len(r.generated) >= self.context:
                self._finish(r, "context")
            if group is not None and not r.done:
                joining.append((r, lanes[i]))
        if joining:
            self._join(joining, group)

    def _join(self, joining: list[tuple[Request, int]], group: _Group) -> None:
        """Prefilled requests (with their lanes in ``group``'s staging cache) take the next rows of the
        slot cache, all with one reallocation at most and one copy (why: ``models.engines.slot_cache``)."""
        layer0 = group.cache.layers[0]
        rows = len(self.active) + len(joining)
        capacity = max([x.need for x in self.active] + [r.need for r, _ in joining])
        if rows > self.slots.slots or capacity > self.slots.capacity:
            # Grow by doubling (rows) and in 128-position steps, within the memory limit, so that
            # thirty requests arriving one by one cost a few reallocations, not thirty.
            capacity = min(self.context, -(-capacity // 128) * 128)
            room = max(rows, self.limits.max_tokens // capacity)
            if rows > self.slots.slots:
                rows = max(rows, min(2 * self.slots.slots, self.limits.max_batch, room))
            else:
                rows = self.slots.slots
            self.slots.ensure(rows, capacity, [layer0.keys, layer0.values])
        # Positions past a shorter prompt are copied too: a row's first decode step writes its own
        # position before attending, and the mask hides every later one.
        length = max(len(r.prompt_ids) for r, _ in joining)
        self.slots.load(len(self.active), group.cache, [lane for _, lane in joining], length)
        self.active.extend(r for r, _ in joining)

    def _finish(self, r: Request, reason: str) -> None:
        if not r.done:
            r.finish_reason = reason
            r.queue_position = 0
            r.out.put(None)
            r.finished.set()

    def _fail_all(self, exc: BaseException) -> None:
        for r in [*self.active, *(r for g in self.prefilling for r in g.requests)]:
            r.error = exc
            self._finish(r, "error")
        self.active, self.prefilling = [], []


def _return_freed_memory() -> None:
    """Hand memory freed by the last class back to the system (glibc keeps freed blocks in its heaps)."""
    libc.malloc_trim()


_schedulers: dict[int, Scheduler] = {}
_guard = threading.Lock()


def submit(model, device: torch.device, request: Request) -> Request:
    """Queue ``request`` on the scheduler of ``model`` (see ``Scheduler.submit``)."""
    while True:
        try:
            return for_model(model, device).submit(request)
        except Closed:  # it retired between the lookup and the submit
            continue


def call(model, device: torch.device, fn: Callable[[], object]) -> object:
    """Run ``fn`` on the thread that owns ``model``, between two decode steps."""
    while True:
        try:
            return for_model(model, device).call(fn)
        except Closed:
            continue


def for_model(model, device: torch.device) -> Scheduler:
    """The scheduler that owns ``model`` (one per loaded model object; created on first use)."""
    with _guard:
        s = _schedulers.get(id(model))
        if s is None or s.model is not model or s._closed:
            s = _schedulers[id(model)] = Scheduler(model, device)
            log.info("batching %s on %s: %s", type(model).__name__, device, s.limits.describe())
        return s


@atexit.register
def _close_all() -> None:
    """Stop every scheduler thread before the interpreter tears torch down under it."""
    with _guard:
        live = list(_schedulers.values())
    for s in live:
        s.close()

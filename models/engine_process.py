"""Generation requests go to a scheduler in its own process (``models.engine_host``), not a thread here.

Why a process: in one process, the web server's event loop and the scheduler's thread share one
interpreter lock, and a forward pass hands it back and forth about a thousand times. Measured on a
2-core CPU, 30 students x 80 tokens of SmolLM2: the same scheduler finished in 9.2 s alone in a process
but the class waited 14.7 s (p95) through the web app, whose forward passes took 200-250 ms instead of
~145 ms. vLLM runs its engine core in its own process for the same reason. The benchmark
(``benchmarks/classroom.py``) measures both engines in one run.

The process is forked when the app starts (``start``), before any thread or torch kernel exists (a fork
after that can deadlock), so it shares the web process's imported libraries instead of importing torch
and transformers again (~300 MB). Each model is written once to an in-memory file (``os.memfd_create``)
that both processes map, so its weights are in memory once. Other model work (next-token views, logit
lens, compression) stays in the web process on ``scheduler.call``'s thread: it reads the same weights.

``LMLAB_ENGINE=thread`` keeps generation in the web process (``models.scheduler`` alone); so does a
machine without ``fork``/``memfd_create`` (macOS, Windows), a GPU, a model that cannot be pickled, or an
engine process that has died. Requests then still batch, on a thread.
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import socket
import sys
import threading
import weakref
from multiprocessing.connection import Connection

import torch

from models import scheduler

log = logging.getLogger("lmlab.engine")

READY_TIMEOUT_S = 120.0  # loading a model in the engine process (mapping, not reading: seconds at most)
CANCEL_LOOK_S = 0.02  # how often Stop and closed tabs are looked for, so a row is freed within a step

_control: socket.socket | None = None
_control_lock = threading.Lock()
_host_pid: int | None = None
_remotes: dict[int, RemoteScheduler] = {}
_weights: dict[int, int] = {}  # id(model) -> the in-memory file holding it
_guard = threading.Lock()
_refused: set[int] = set()  # models the engine process could not take (they batch on a thread)


class Unavailable(RuntimeError):
    """No engine process for this model: the caller batches it on a thread in this process."""


def start() -> bool:
    """Fork the engine process if this machine and moment allow it; True when it runs.

    Call it early (``app.main`` does, before Gradio or any model starts a thread). Does nothing (False)
    with ``LMLAB_ENGINE=thread``, batching off, on a system without ``fork`` and ``memfd_create``, or
    when other threads already run.
    """
    global _control, _host_pid
    if _control is not None:
        return True
    if os.environ.get("LMLAB_ENGINE", "process") != "process" or not scheduler.enabled():
        return False
    # memfd files and their /proc/self/fd paths are Linux's; elsewhere requests batch on a thread.
    if not (sys.platform.startswith("linux") and hasattr(os, "memfd_create") and hasattr(socket, "send_fds")):
        return False
    if threading.active_count() > 1:
        log.warning("engine process not started: other threads already run (a fork now could deadlock)")
        return False
    _preload()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # Objects that exist now are never touched by the child's garbage collector, so their memory pages
    # stay shared with this process instead of being copied on the first collection.
    gc.freeze()
    pid = os.fork()
    if pid == 0:  # the engine process
        ours.close()
        try:
            from models import engine_host

            engine_host.main(theirs)
        finally:
            os._exit(0)
    gc.unfreeze()
    theirs.close()
    _control, _host_pid = ours, pid
    log.info("engine process %d started", pid)
    return True


def _preload() -> None:
    """Import what both processes will need before the fork, so its memory is shared, not imported twice:
    the scheduler, and the model code of the embedded SmolLM2 (Llama) and of the GPT-2 family."""
    import importlib

    for name in ("models.engine_host", "transformers.models.llama.modeling_llama",
                 "transformers.models.gpt2.modeling_gpt2"):
        try:
            importlib.import_module(name)
        except ImportError:  # an older or newer transformers without one of them: imported when needed
            log.debug("could not preload %s", name)


def _gone() -> None:
    """The engine process has died: from now on every model batches on a thread here."""
    global _control
    log.error("the engine process has ended; generation now batches in the web process")
    _control = None


def running() -> bool:
    return _control is not None


def wanted(device: torch.device) -> bool:
    """True when requests for a model on ``device`` go to the engine process."""
    return (running() and device.type == "cpu"
            and os.environ.get("LMLAB_ENGINE", "process") == "process")


def for_model(model, device: torch.device) -> RemoteScheduler | None:
    """The engine-process scheduler of ``model`` (sent there on first use), or None when the engine
    cannot take it (the reason is logged once; the model then batches on a thread here)."""
    with _guard:
        if id(model) in _refused:
            return None
        remote = _remotes.get(id(model))
        if remote is not None and remote.model is model and not remote.closed:
            return remote
        try:
            remote = RemoteScheduler(model, device)
        except Unavailable as exc:
            log.warning("%s: %s batches on a thread in the web process", exc, type(model).__name__)
            _refused.add(id(model))
            weakref.finalize(model, _refused.discard, id(model))
            return None
        _remotes[id(model)] = remote
        return remote


def _shared_file(model) -> int:
    """The in-memory file holding ``model`` (written on first use); this process's weights now map it.

    The weights are swapped for their mapped copies (same values: the file was just written from them),
    so the memory they held is freed and both processes read one copy.
    """
    fd = _weights.get(id(model))
    if fd is not None:
        return fd
    fd = os.memfd_create("lmlab-weights", os.MFD_CLOEXEC)
    path = f"/proc/self/fd/{fd}"
    try:
        torch.save(model, path)
        mapped = torch.load(path, mmap=True, weights_only=False)  # our own file, not user input
    except Exception as exc:
        os.close(fd)
        raise Unavailable(f"the model cannot be shared with the engine process ({type(exc).__name__}: {exc})") from exc
    theirs = dict(mapped.named_parameters())
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.data = theirs[name].data
        for name, b in dict(mapped.named_buffers()).items():
            owner, _, leaf = name.rpartition(".")
            module = model.get_submodule(owner) if owner else model
            if leaf in module._buffers:
                module._buffers[leaf] = b
    _weights[id(model)] = fd
    weakref.finalize(model, _forget_file, id(model), fd)
    return fd


def _forget_file(key: int, fd: int) -> None:
    _weights.pop(key, None)
    try:
        os.close(fd)
    except OSError:
        pass


class RemoteScheduler:
    """This process's side of one model's scheduler in the engine process; ``submit`` as ``Scheduler``'s.

    The receiver thread turns the engine's events into the local ``Request``'s fields and queue, and
    tells the engine when a request's cancel event is set (looked at every ``CANCEL_LOOK_S``).
    """

    _ids = itertools.count(1)

    def __init__(self, model, device: torch.device) -> None:
        self.model, self.device = model, device
        self.context = scheduler.context_of(model)
        self.requests: dict[int, scheduler.Request] = {}
        self.cancelled: set[int] = set()
        self.lock = threading.Lock()
        self.closed = False
        fd = _shared_file(model)
        ours, theirs = socket.socketpair()
        try:
            with _control_lock:
                socket.send_fds(_control, [b"model"], [theirs.fileno(), fd])
        except OSError as exc:
            ours.close()
            _gone()
            raise Unavailable(f"the engine process is gone ({exc})") from exc
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())
        # The limits come from this process, so its settings (LMLAB_MAX_BATCH, LMLAB_KV_CACHE_MB) apply.
        self.conn.send(("limits", scheduler.limits_for(model, device)))
        if not self.conn.poll(READY_TIMEOUT_S):
            raise Unavailable("the engine process did not answer")
        try:
            reply = self.conn.recv()
        except (EOFError, OSError) as exc:
            raise Unavailable("the engine process hung up") from exc
        if reply[0] != "ready":
            raise Unavailable(f"the engine process could not load the model: {reply[1]}")
        self.limits_text = reply[1]
        log.info("batching %s in engine process %s: %s", type(model).__name__, _host_pid, self.limits_text)
        self._send_lock = threading.Lock()
        threading.Thread(target=self._receive, daemon=True, name="lmlab-engine-receiver").start()

    def submit(self, request: scheduler.Request) -> scheduler.Request:
        """Queue ``request`` in the engine; as ``Scheduler.submit`` (ValueError, ``scheduler.Closed``)."""
        if request.need > self.context:
            raise ValueError(f"{request.need} positions do not fit the model's context of {self.context}")
        with self.lock:
            if self.closed:
                raise scheduler.Closed()
            rid = next(self._ids)
            self.requests[rid] = request
        p = request.processors
        self._send(("submit", rid, list(request.prompt_ids), p, request.max_new_tokens, request.seed,
                    request.eos_token_id))
        return request

    def close(self) -> None:
        try:
            self._send(("close",))
        except OSError:
            pass

    def _send(self, message: tuple) -> None:
        with self._send_lock:
            self.conn.send(message)

    def _receive(self) -> None:
        while True:
            try:
                ready = self.conn.poll(CANCEL_LOOK_S)
                message = self.conn.recv() if ready else None
            except (EOFError, OSError):
                self._ended("the engine process ended unexpectedly")
                return
            if message is not None:
                kind = message[0]
                if kind == "events":
                    self._apply(message[1])
                elif kind == "rejected":
                    with self.lock:
                        r = self.requests.pop(message[1], None)
                    if r is not None:
                        self._resubmit([r])
                elif kind == "retired":
                    self._ended(None)
                    return
            self._send_cancels()

    def _apply(self, events: list[tuple]) -> None:
        for rid, kind, *payload in events:
            r = self.requests.get(rid)
            if r is None:
                continue
            if kind == "token":
                item, r.sharing = payload
                r.generated.append(item[0])
                r.out.put(item)
            elif kind == "position":
                r.queue_position = payload[0]
            elif kind == "end":
                r.finish_reason, r.error = payload
                r.queue_position = 0
                with self.lock:
                    self.requests.pop(rid, None)
                    self.cancelled.discard(rid)
                r.out.put(None)

    def _send_cancels(self) -> None:
        with self.lock:
            new = [rid for rid, r in self.requests.items() if r.cancel.is_set() and rid not in self.cancelled]
            self.cancelled.update(new)
        for rid in new:
            try:
                self._send(("cancel", rid))
            except OSError:
                return

    def _ended(self, problem: str | None) -> None:
        """The engine retired this model (idle) or died: requests that have not started go to a fresh one."""
        with self.lock:
            self.closed = True
            left, self.requests = list(self.requests.values()), {}
        with _guard:
            if _remotes.get(id(self.model)) is self:
                del _remotes[id(self.model)]
        if problem:
            log.error("%s", problem)
        fresh = [r for r in left if not r.generated]
        for r in left:
            if r.generated:
                r.error, r.finish_reason = RuntimeError(problem or "the engine process ended"), "error"
                r.out.put(None)
        self._resubmit(fresh)
        self.conn.close()
        self.model = None

    def _resubmit(self, requests: list[scheduler.Request]) -> None:
        model, device = self.model, self.device
        for r in requests:
            try:
                scheduler.submit(model, device, r)
            except Exception as exc:  # noqa: BLE001 - fails this request alone, like a scheduler error
                r.error, r.finish_reason = exc, "error"
                r.out.put(None)


def host_pid() -> int | None:
    """The engine process's id (None when generation runs on a thread here)."""
    return _host_pid

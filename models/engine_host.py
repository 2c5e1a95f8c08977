"""The engine process: runs each model's batching scheduler away from the web server's interpreter lock.

``models.engine_process.start`` forks this process when the app starts, before any thread or torch
kernel exists. Per model, the web process hands over two file descriptors (``socket.send_fds``): one
end of a socket pair for the model's requests and tokens, and the in-memory file holding the model
(``torch.save``), which both processes map (``torch.load(mmap=True)``), so the weights are in memory
once. Here a ``models.scheduler.Scheduler`` runs the model exactly as it runs in the web process with
``LMLAB_ENGINE=thread``; only where its tokens go differs.

Messages, parent to here: ``("limits", scheduler.Limits)`` first, then ``("submit", rid, prompt_ids, processors, max_new_tokens, seed, eos_token_id)``,
``("cancel", rid)``, ``("close",)``. Here to parent: ``("ready", limits, context)`` once, then
``("events", [(rid, "token", item, sharing) | (rid, "position", n) | (rid, "end", reason, error)])``
after each prefill and decode step, ``("rejected", rid)`` for a submit after the scheduler retired,
and ``("retired",)`` when it has been idle for ``scheduler.IDLE_EXIT_S``.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import threading
from multiprocessing.connection import Connection

import torch

from models import scheduler

log = logging.getLogger("lmlab.engine")


class _Outbox:
    """Stands in for a request's token queue: what the scheduler puts is sent at the end of the step."""

    def __init__(self, link: _Link, rid: int) -> None:
        self.link, self.rid = link, rid
        self.request: scheduler.Request | None = None

    def put(self, item) -> None:
        r = self.request
        with self.link.lock:
            if item is None:
                self.link.pending.append((self.rid, "end", r.finish_reason, _portable(r.error)))
                self.link.requests.pop(self.rid, None)
            else:
                self.link.pending.append((self.rid, "token", item, r.sharing))


def _portable(exc: BaseException | None) -> BaseException | None:
    """The exception itself if it pickles, else a RuntimeError with its text."""
    if exc is None:
        return None
    try:
        pickle.dumps(exc)
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


class _Link:
    """One model's connection to the web process: its requests, and the events not sent yet."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()  # pending and requests (scheduler thread and reader thread)
        self.send_lock = threading.Lock()
        self.pending: list[tuple] = []
        self.requests: dict[int, scheduler.Request] = {}
        self.positions: dict[int, int] = {}  # the queue position last sent per request

    def send(self, message: tuple) -> None:
        with self.send_lock:
            self.conn.send(message)

    def flush(self) -> None:
        """Send this step's tokens and ends, and the queue positions that changed, as one message."""
        with self.lock:
            events, self.pending = self.pending, []
            for rid, r in self.requests.items():
                if r.queue_position != self.positions.get(rid, 0):
                    self.positions[rid] = r.queue_position
                    events.append((rid, "position", r.queue_position))
            for rid in [rid for rid in self.positions if rid not in self.requests]:
                del self.positions[rid]
        if events:
            try:
                self.send(("events", events))
            except OSError:  # the web process is gone; the reader ends the scheduler
                pass

    def read(self, sched: scheduler.Scheduler) -> None:
        """Turn the web process's messages into scheduler calls until it hangs up (then close)."""
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                sched.close()
                return
            kind = message[0]
            if kind == "submit":
                rid, prompt_ids, processors, max_new, seed, eos = message[1:]
                out = _Outbox(self, rid)
                r = scheduler.Request(prompt_ids, processors, max_new, seed, eos, out=out)
                out.request = r
                with self.lock:
                    self.requests[rid] = r
                try:
                    sched.submit(r)
                except scheduler.Closed:
                    with self.lock:
                        self.requests.pop(rid, None)
                    self.send(("rejected", rid))
                except Exception as exc:  # e.g. too long for the context: this request fails alone
                    r.error = exc
                    r.finish_reason = "error"
                    out.put(None)
                    self.flush()
            elif kind == "cancel":
                with self.lock:
                    r = self.requests.get(message[1])
                if r is not None:
                    r.cancel.set()
                    with sched.cond:
                        sched.cond.notify()
            elif kind == "close":
                sched.close()
                return


def serve_model(conn_fd: int, weights_fd: int) -> None:
    """Load the model from the shared file and run its scheduler until it retires or is closed."""
    conn = Connection(conn_fd)
    link = _Link(conn)
    try:
        # Our own file, written by the web process a moment ago (not user input): a whole pickled module.
        model = torch.load(f"/proc/self/fd/{weights_fd}", mmap=True, weights_only=False)
        model.eval()
        _kind, limits = conn.recv()  # ("limits", ...): computed by the web process, whose settings apply
        sched = scheduler.Scheduler(model, torch.device("cpu"), limits, on_step=link.flush)
    except Exception as exc:
        log.exception("the engine process could not load the model")
        link.send(("failed", f"{type(exc).__name__}: {exc}"))
        conn.close()
        return
    finally:
        os.close(weights_fd)  # the mapping keeps the weights; the web process keeps the file
    del model
    link.send(("ready", sched.limits.describe(), sched.context))
    reader = threading.Thread(target=link.read, args=(sched,), daemon=True, name="lmlab-engine-reader")
    reader.start()
    sched._thread.join()
    link.flush()
    try:
        link.send(("retired",))
    except OSError:
        pass
    conn.close()


def main(control: socket.socket) -> None:
    """The forked process's life: serve each model sent over ``control`` until the web process ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the terminal is for the web process; we follow it
    while True:
        try:
            message, fds, _flags, _address = socket.recv_fds(control, 64, 2)
        except OSError:
            break
        if not message:  # the web process has ended
            break
        if message == b"model" and len(fds) == 2:
            threading.Thread(target=serve_model, args=tuple(fds), daemon=True, name="lmlab-engine-model").start()
        else:
            for fd in fds:
                os.close(fd)
    os._exit(0)

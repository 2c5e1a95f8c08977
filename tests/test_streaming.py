"""How a stream reports to its page: every token alone, less often while shared, its queue place, a closed tab."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from models.engines import engine as engines
from models.engines import scheduler
from models.generation import generator
from models.generation.generator import SamplingSettings


def test_a_closed_stream_frees_its_row(tiny_gpt2):
    """A consumer that goes away (closed tab: Gradio closes the generator) leaves the batch within a step."""
    sched = scheduler.for_model(tiny_gpt2.model, tiny_gpt2.device.device)
    events = generator.stream(tiny_gpt2, "Hello there", SamplingSettings(temperature=0, max_new_tokens=120))
    next(events)
    assert sched.load()["decoding"] + sched.load()["prefilling"] == 1
    events.close()
    deadline = time.monotonic() + 5
    while sched.load() != {"decoding": 0, "prefilling": 0, "waiting": 0} and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sched.load() == {"decoding": 0, "prefilling": 0, "waiting": 0}


CLASSROOM = "classroom"


@dataclass
class _RecordedRequest(scheduler.Request):
    """A request whose ``finished`` event records each wait between two reports: the timeout asked for
    and whether the request's end (True) or the clock (False) ended it. Tests read these counters
    instead of timing the stream."""

    made = []  # noqa: RUF012 - replaced per test by _recorded

    def __post_init__(self) -> None:
        self.waits: list[tuple[float, bool]] = []
        waits = self.waits

        class Finished(threading.Event):
            def wait(self, timeout=None):
                woke = super().wait(timeout)
                waits.append((timeout, woke))
                return woke

        self.finished = Finished()
        _RecordedRequest.made.append(self)


def _recorded(monkeypatch) -> list:
    made: list = []
    monkeypatch.setattr(_RecordedRequest, "made", made)
    monkeypatch.setattr(generator, "Request", _RecordedRequest)
    return made


def _sharing_started(tiny_gpt2) -> None:
    """Return once the neighbour's request is in the batch (so the next one shares the model)."""
    sched = scheduler.for_model(tiny_gpt2.model, tiny_gpt2.device.device)
    deadline = time.monotonic() + 60
    while sched.load()["decoding"] < 1 and time.monotonic() < deadline:
        time.sleep(0.005)


def _neighbour(tiny_gpt2, max_new_tokens: int, cancel: threading.Event | None = None) -> threading.Thread:
    thread = threading.Thread(target=lambda: list(generator.stream(
        tiny_gpt2, "A long time ago", SamplingSettings(temperature=0, max_new_tokens=max_new_tokens), cancel,
        engine=engines.named(CLASSROOM))))
    thread.start()
    _sharing_started(tiny_gpt2)
    return thread


def test_a_shared_stream_reports_less_often_with_every_token(tiny_gpt2, monkeypatch):
    """While the model is shared, a stream waits min(MAX_UPDATE_S, (sharers - 1) x UPDATE_S_PER_SHARER)
    between reports, each with all tokens that arrived; the tokens and the text are those of the same
    request read one token at a time, and Stop ends the wait at once (the request's end wakes it)."""
    s = SamplingSettings(temperature=0.9, top_k=40, seed=5, max_new_tokens=40)
    solo = list(generator.stream(tiny_gpt2, "The cat", s, engine=engines.named(CLASSROOM)))
    assert len(solo[-1].tokens) == 40
    monkeypatch.setattr(generator, "UPDATE_S_PER_SHARER", 0.2)
    monkeypatch.setattr(generator, "MAX_UPDATE_S", 0.2)
    made = _recorded(monkeypatch)
    neighbour = _neighbour(tiny_gpt2, 200)
    shared, grown = [], []
    for ev in generator.stream(tiny_gpt2, "The cat", s, engine=engines.named(CLASSROOM)):
        shared.append(ev)
        grown.append(len(ev.tokens))  # events share the growing token list: count it as it arrives
    neighbour.join()
    assert [t.token_id for t in shared[-1].tokens] == [t.token_id for t in solo[-1].tokens]
    assert shared[-1].text == solo[-1].text
    assert any(ev.sharing > 1 for ev in shared)
    assert grown == sorted(grown) and grown[0] == 1  # the first token is reported at once
    ours = next(r for r in made if r.max_new_tokens == 40)
    assert ours.waits and {timeout for timeout, _ in ours.waits} == {0.2}  # min(0.2, (2 - 1) x 0.2)
    assert len(shared) < 1 + 40  # some report carried several tokens

    made.clear()
    cancel, other = threading.Event(), threading.Event()
    monkeypatch.setattr(generator, "UPDATE_S_PER_SHARER", 30.0)
    monkeypatch.setattr(generator, "MAX_UPDATE_S", 30.0)
    neighbour = _neighbour(tiny_gpt2, 200, other)
    events = generator.stream(tiny_gpt2, "The cat", SamplingSettings(temperature=0, max_new_tokens=150), cancel,
                              engine=engines.named(CLASSROOM))
    next(events)
    next(events)  # the second report: the stream now waits out the interval between reports
    cancel.set()
    last = list(events)[-1]
    other.set()
    neighbour.join()
    ours = next(r for r in made if r.cancel is cancel)
    assert last.finish_reason == "stopped"
    assert ours.waits == [(30.0, True)]  # one wait, ended by the stop, not by the clock


def test_a_shared_stream_ends_as_soon_as_its_request_does(tiny_gpt2, monkeypatch):
    """The last tokens and the final event go out when the request finishes, not at the end of the wait
    between two reports (a class's texts arrived up to MAX_UPDATE_S late)."""
    monkeypatch.setattr(generator, "UPDATE_S_PER_SHARER", 30.0)
    monkeypatch.setattr(generator, "MAX_UPDATE_S", 30.0)
    made = _recorded(monkeypatch)
    other = threading.Event()
    neighbour = _neighbour(tiny_gpt2, 400, other)
    try:
        events = list(generator.stream(tiny_gpt2, "The cat", SamplingSettings(temperature=0, max_new_tokens=6),
                                       engine=engines.named(CLASSROOM)))
    finally:
        other.set()
        neighbour.join()
    assert any(ev.sharing > 1 for ev in events)  # it did share the model, so it did wait between reports
    assert events[-1].done and events[-1].finish_reason == "length" and len(events[-1].tokens) == 6
    ours = next(r for r in made if r.max_new_tokens == 6)
    assert ours.waits and all(woke for _, woke in ours.waits), ours.waits  # every wait ended by the request


def test_a_waiting_stream_reports_its_place_when_it_changes(tiny_gpt2, monkeypatch):
    """A request behind a full batch reports its queue position once per change (not at every look:
    seventy waiting students would otherwise flood the web server), then streams its tokens."""
    scheduler.for_model(tiny_gpt2.model, tiny_gpt2.device.device).close()  # a fresh one, with a batch of one
    monkeypatch.setattr(scheduler, "limits_for", lambda model, device: scheduler.Limits(1, 10_000, 1))
    monkeypatch.setattr(generator, "HEARTBEAT_S", 0.01)
    monkeypatch.setattr(generator, "QUIET_WAIT_S", 60.0)
    first = generator.stream(tiny_gpt2, "The first student", SamplingSettings(temperature=0, max_new_tokens=400),
                             engine=engines.named("classroom"))
    try:
        next(first)  # decoding: the batch of one is full
        events = []

        def second_student():  # reads its stream all the time, as the page does
            for ev in generator.stream(tiny_gpt2, "The second", SamplingSettings(temperature=0, max_new_tokens=5),
                                       engine=engines.named("classroom")):
                events.append((ev.queue_position, len(ev.tokens), ev.finish_reason))

        reader = threading.Thread(target=second_student)
        reader.start()
        time.sleep(0.3)  # thirty looks at the position while the first student's request runs on
        first.close()  # that student leaves; the place frees
        reader.join(timeout=60)
        waiting = [place for place, n, _ in events if not n]
        tokens, reason = events[-1][1:]
        # Once per change: place 1, then perhaps 0 (admitted, its prompt being read) before the first token.
        assert waiting in ([1], [1, 0]) and tokens == 5 and reason == "length", waiting
    finally:
        first.close()
        scheduler.for_model(tiny_gpt2.model, tiny_gpt2.device.device).close()

"""Generation in the engine process: the same texts as on a thread, Stop, closed tabs, queue places,
one copy of the weights, and a retired or refused engine that loses no request."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from models import engine_process, generator, scheduler
from models.generator import SamplingSettings
from tests.test_scheduler import MIXED, _drain, _request


@pytest.fixture(autouse=True)
def _engine(monkeypatch):
    if not engine_process.running():
        pytest.skip("no engine process on this system (it needs Linux's fork and memfd_create)")
    monkeypatch.setenv("LMLAB_ENGINE", "process")


def _stream_all(loaded, cases):
    """Run ``cases`` (prompt, settings) at the same moment through generator.stream; their last events."""
    results = [None] * len(cases)

    def one(i, prompt, kw):
        results[i] = list(generator.stream(loaded, prompt, SamplingSettings(**kw), batched=True))[-1]

    threads = [threading.Thread(target=one, args=(i, p, kw)) for i, (p, kw) in enumerate(cases)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def test_the_engine_gives_the_texts_of_the_thread_and_the_unbatched_path(tiny_gpt2, monkeypatch):
    """Greedy and seeded texts, log-probs and alternatives: engine alone = engine among others = thread
    = the unbatched reference."""
    engine_alone = [_stream_all(tiny_gpt2, [case])[0] for case in MIXED]
    engine_together = _stream_all(tiny_gpt2, MIXED)
    assert engine_process.for_model(tiny_gpt2.model, tiny_gpt2.device.device) is not None  # it did run there
    monkeypatch.setenv("LMLAB_ENGINE", "thread")
    thread = _stream_all(tiny_gpt2, MIXED)
    reference = [list(generator.stream(tiny_gpt2, p, SamplingSettings(**kw), batched=False))[-1] for p, kw in MIXED]
    ids = [[[t.token_id for t in ev.tokens] for ev in run] for run in (engine_alone, engine_together, thread, reference)]
    assert ids[0] == ids[1] == ids[2] == ids[3]
    assert [len(t) for t in ids[0]] == [kw["max_new_tokens"] for _, kw in MIXED]
    for a, b in zip(engine_together, reference, strict=True):
        assert a.text == b.text and a.finish_reason == b.finish_reason
        for x, y in zip(a.tokens, b.tokens, strict=True):
            assert x.logprob == pytest.approx(y.logprob, abs=1e-4)
            assert [t for t, _ in x.alternatives] == [t for t, _ in y.alternatives]


def test_both_processes_map_one_copy_of_the_weights(tiny_gpt2):
    """The web process's weights are swapped for a mapping of the file the engine maps too; same values."""
    probe = torch.tensor([[464, 3797, 318]])
    with torch.inference_mode():
        before = tiny_gpt2.model(probe).logits.clone()
    engine_process.for_model(tiny_gpt2.model, tiny_gpt2.device.device)
    with torch.inference_mode():
        assert torch.equal(tiny_gpt2.model(probe).logits, before)
    pid = engine_process.host_pid()

    def mapped(maps: str) -> bool:
        return any("lmlab-weights" in line for line in open(maps))

    assert mapped("/proc/self/maps") and mapped(f"/proc/{pid}/maps")


def test_stop_of_one_row_leaves_the_others_unchanged(tiny_gpt2):
    remote = engine_process.for_model(tiny_gpt2.model, tiny_gpt2.device.device)
    prompts = ["The cat", "A long time ago", "Numbers: 1, 2,"]
    kw = dict(temperature=0.9, top_k=40, max_new_tokens=30)
    expected = []
    for i, p in enumerate(prompts):
        r = remote.submit(_request(tiny_gpt2, p, seed=i, **kw))
        expected.append(_drain(r))
    reqs = [remote.submit(_request(tiny_gpt2, p, seed=i, **kw)) for i, p in enumerate(prompts)]
    assert reqs[1].out.get(timeout=60) is not None
    reqs[1].cancel.set()
    got = [_drain(r) for r in reqs]
    assert reqs[1].finish_reason == "stopped" and len(got[1]) < 29
    assert got[0] == expected[0] and got[2] == expected[2]


def test_a_closed_stream_ends_in_the_engine_within_a_step(tiny_gpt2):
    events = generator.stream(tiny_gpt2, "Hello there", SamplingSettings(temperature=0, max_new_tokens=120),
                              batched=True)
    next(events)
    remote = engine_process.for_model(tiny_gpt2.model, tiny_gpt2.device.device)
    assert len(remote.requests) == 1
    events.close()  # what Gradio does when the tab closes
    deadline = time.monotonic() + 5
    while remote.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not remote.requests  # the engine ended it ("stopped") and said so


def test_a_full_batch_queues_with_places_and_serves_everyone(tiny_gpt2, monkeypatch):
    """The web process's limits (here a batch of one) apply in the engine; waiting requests learn their place."""
    monkeypatch.setattr(scheduler, "limits_for", lambda model, device: scheduler.Limits(1, 10_000, 1))
    remote = engine_process.RemoteScheduler(tiny_gpt2.model, tiny_gpt2.device.device)
    try:
        reqs = [remote.submit(_request(tiny_gpt2, f"Request number {i}", temperature=0, max_new_tokens=60))
                for i in range(3)]
        deadline = time.monotonic() + 10
        while [r.queue_position for r in reqs[1:]] != [1, 2] and time.monotonic() < deadline:
            time.sleep(0.001)
        assert [r.queue_position for r in reqs[1:]] == [1, 2]
        assert [len(_drain(r)) for r in reqs] == [60, 60, 60]
        assert all(r.queue_position == 0 and r.finish_reason == "length" for r in reqs)
    finally:
        remote.close()


def test_a_retired_engine_scheduler_is_replaced_without_losing_requests(tiny_gpt2):
    """When the engine lets a model go (idle, or closed), the next request sends it again."""
    remote = engine_process.for_model(tiny_gpt2.model, tiny_gpt2.device.device)
    first = generator.generate_text(tiny_gpt2, "Hello", SamplingSettings(temperature=0, max_new_tokens=5))
    remote.close()
    deadline = time.monotonic() + 10
    while not remote.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert remote.closed and remote.model is None
    again = generator.generate_text(tiny_gpt2, "Hello", SamplingSettings(temperature=0, max_new_tokens=5))
    assert [t.token_id for t in again.tokens] == [t.token_id for t in first.tokens]
    assert engine_process.for_model(tiny_gpt2.model, tiny_gpt2.device.device) is not remote


def test_too_long_a_request_fails_alone_with_the_reason(tiny_gpt2):
    remote = engine_process.for_model(tiny_gpt2.model, tiny_gpt2.device.device)
    r = _request(tiny_gpt2, "Hi", temperature=0, max_new_tokens=5)
    r.max_new_tokens = 10_000
    with pytest.raises(ValueError, match="context"):
        remote.submit(r)


def test_a_model_that_cannot_be_pickled_batches_on_a_thread(tiny_gpt2, monkeypatch):
    """The engine refuses what it cannot share; generation still works, on a thread here."""
    import copy

    loaded = copy.copy(tiny_gpt2)
    loaded.model = copy.deepcopy(tiny_gpt2.model)
    loaded.model.unpicklable = lambda: None  # a lambda attribute: torch.save cannot pickle the module
    assert engine_process.for_model(loaded.model, loaded.device.device) is None
    ev = generator.generate_text(loaded, "Hello", SamplingSettings(temperature=0, max_new_tokens=4))
    reference = generator.generate_text(tiny_gpt2, "Hello", SamplingSettings(temperature=0, max_new_tokens=4))
    assert [t.token_id for t in ev.tokens] == [t.token_id for t in reference.tokens]

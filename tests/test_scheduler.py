"""The iteration-level scheduler: a request's text does not depend on who shares its forward passes."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from models.engines import engine as engines
from models.engines import scheduler
from models.generation import generator, sampling
from models.generation.generator import SamplingSettings

# Different lengths, settings and seeds, as a class would send them.
MIXED = [
    ("Once upon a time, in a small village by the sea,", dict(temperature=0.0, max_new_tokens=12)),
    ("The three most important ideas in physics are", dict(temperature=0.8, top_p=0.95, top_k=50, seed=7, max_new_tokens=9)),
    ("Hi", dict(temperature=1.0, top_p=0.9, top_k=0, seed=3, repetition_penalty=1.3, max_new_tokens=14)),
    ("def fibonacci(n):\n    " * 6, dict(temperature=0.0, repetition_penalty=1.5, max_new_tokens=10)),
    ("A", dict(temperature=1.3, top_k=5, seed=11, max_new_tokens=1)),
]


def _request(loaded, prompt, **kw) -> scheduler.Request:
    s = SamplingSettings(**kw).validate()
    ids, max_new, _ = generator.fit_request(loaded, prompt, s)
    return scheduler.Request(ids[0].tolist(), generator.processors(s), max_new, s.seed, loaded.tokenizer.eos_token_id)


def _drain(r: scheduler.Request, timeout: float = 120) -> list[int]:
    tokens = []
    while (item := r.out.get(timeout=timeout)) is not None:
        tokens.append(item[0])
    return tokens


def _run_together(sched, reqs):
    for r in reqs:
        sched.submit(r)
    return [_drain(r) for r in reqs]


@pytest.fixture(scope="module")
def tiny_sched(tiny_gpt2):
    s = scheduler.Scheduler(tiny_gpt2.model, torch.device("cpu"))
    yield s
    s.close()


def test_alone_equals_inside_a_mixed_batch_tiny(tiny_gpt2, tiny_sched):
    alone = [_run_together(tiny_sched, [_request(tiny_gpt2, p, **kw)])[0] for p, kw in MIXED]
    together = _run_together(tiny_sched, [_request(tiny_gpt2, p, **kw) for p, kw in MIXED])
    assert together == alone
    assert [len(t) for t in alone] == [kw["max_new_tokens"] for _, kw in MIXED]


def test_identical_prompts_are_read_once_and_keep_their_own_texts(tiny_gpt2, tiny_sched):
    """A class on the default prompt: one prefill row for the shared prompt, and each seed's text is the
    one it gets alone."""
    cases = [("Once upon a time", dict(temperature=0.9, top_k=40, seed=s, max_new_tokens=12)) for s in range(4)]
    cases.append(("Something else entirely", dict(temperature=0.0, max_new_tokens=6)))
    alone = [_run_together(tiny_sched, [_request(tiny_gpt2, p, **kw)])[0] for p, kw in cases]
    rows = []
    hook = tiny_sched._parts()[0].register_forward_pre_hook(
        lambda module, args, kwargs: rows.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    try:
        reqs = [_request(tiny_gpt2, p, **kw) for p, kw in cases]
        with tiny_sched.cond:  # all five queued before the scheduler looks: they are admitted together
            for r in reqs:
                tiny_sched.submit(r)
        together = [_drain(r) for r in reqs]
    finally:
        hook.remove()
    assert together == alone
    assert len({tuple(t) for t in alone[:4]}) > 1  # the seeds do differ
    prefill = [shape for shape in rows if shape[1] > 1]
    assert prefill and max(n for n, _ in prefill) == 2, rows  # two distinct prompts, two rows


@pytest.mark.slow
def test_alone_equals_inside_a_batch_smollm(smollm):
    """The embedded model, fp32 on the CPU: greedy and seeded texts are the same alone and among others."""
    sched = scheduler.for_model(smollm.model, smollm.device.device)
    cases = MIXED[:4]
    alone = [_run_together(sched, [_request(smollm, p, **kw)])[0] for p, kw in cases]
    together = _run_together(sched, [_request(smollm, p, **kw) for p, kw in cases])
    assert together == alone
    reference = [t.token_id for t in list(generator.stream(smollm, cases[1][0], SamplingSettings(**cases[1][1]),
                                                           engine=engines.named("reference")))[-1].tokens]
    assert reference == alone[1]


def test_stop_of_one_row_leaves_the_others_unchanged(tiny_gpt2, tiny_sched):
    kw = dict(temperature=0.9, top_k=40, max_new_tokens=30)
    expected = [_run_together(tiny_sched, [_request(tiny_gpt2, p, seed=i, **kw)])[0]
                for i, p in enumerate(["The cat", "A long time ago", "Numbers: 1, 2,"])]
    reqs = [_request(tiny_gpt2, p, seed=i, **kw) for i, p in enumerate(["The cat", "A long time ago", "Numbers: 1, 2,"])]
    for r in reqs:
        tiny_sched.submit(r)
    first = reqs[1].out.get(timeout=60)
    assert first is not None
    reqs[1].cancel.set()
    got = [_drain(r) for r in reqs]
    assert reqs[1].finish_reason == "stopped" and len(got[1]) < 29
    assert got[0] == expected[0] and got[2] == expected[2]


def test_the_batch_limit_queues_and_serves_everyone(tiny_gpt2):
    limits = scheduler.Limits(max_batch=2, max_tokens=10_000, bytes_per_token=1)
    sched = scheduler.Scheduler(tiny_gpt2.model, torch.device("cpu"), limits)
    try:
        gate = threading.Event()
        reqs = [_request(tiny_gpt2, f"Request number {i}", temperature=0, max_new_tokens=100 if i < 2 else 20)
                for i in range(5)]
        peak = []

        def watch():
            while not gate.is_set():
                peak.append(sched.load()["decoding"] + sched.load()["prefilling"])
                time.sleep(0.001)

        watcher = threading.Thread(target=watch)
        watcher.start()
        for r in reqs:
            sched.submit(r)
        deadline = time.monotonic() + 10
        while [r.queue_position for r in reqs[2:]] != [1, 2, 3] and time.monotonic() < deadline:
            time.sleep(0.001)
        assert [r.queue_position for r in reqs[2:]] == [1, 2, 3]  # visible places behind the full batch
        results = [_drain(r) for r in reqs]
        gate.set()
        watcher.join()
        assert [len(t) for t in results] == [100, 100, 20, 20, 20]
        assert max(peak) <= 2
        assert all(r.queue_position == 0 and r.finish_reason == "length" for r in reqs)
    finally:
        sched.close()


def test_one_failing_request_fails_alone(tiny_gpt2, tiny_sched):
    good = _request(tiny_gpt2, "The weather", temperature=0, max_new_tokens=8)
    bad = _request(tiny_gpt2, "The weather", temperature=0.7, max_new_tokens=8)
    bad.processors = sampling.Processors(temperature=0.7, top_k=-3)  # torch.topk refuses a negative k
    got = _run_together(tiny_sched, [good, bad])
    assert bad.finish_reason == "error" and bad.error is not None
    assert good.finish_reason == "length" and len(got[0]) == 8


def test_limits_come_from_the_key_value_size(tiny_gpt2, monkeypatch):
    per_token = scheduler.kv_bytes_per_token(tiny_gpt2.model.config, torch.float32)
    assert per_token == 2 * 2 * 64 * 4  # 2 (k, v) x 2 layers x 64 (heads x head size) x 4 bytes
    monkeypatch.setenv("LMLAB_KV_CACHE_MB", "1")
    monkeypatch.setenv("LMLAB_MAX_BATCH", "3")
    limits = scheduler.limits_for(tiny_gpt2.model, torch.device("cpu"))
    assert limits.max_tokens == 2**20 // per_token and limits.max_batch == 3
    monkeypatch.delenv("LMLAB_KV_CACHE_MB")
    monkeypatch.delenv("LMLAB_MAX_BATCH")
    limits = scheduler.limits_for(tiny_gpt2.model, torch.device("cpu"))
    assert limits.max_tokens * per_token <= scheduler.free_memory(torch.device("cpu"))


def test_a_long_prompt_is_prefilled_in_chunks_between_decode_steps(tiny_gpt2, monkeypatch):
    """While a long prompt is read chunk by chunk, a running stream keeps getting tokens."""
    monkeypatch.setattr(scheduler, "PREFILL_CHUNK", 8)
    sched = scheduler.Scheduler(tiny_gpt2.model, torch.device("cpu"))
    try:
        short = _request(tiny_gpt2, "Go", temperature=0, max_new_tokens=60)
        sched.submit(short)
        assert short.out.get(timeout=30) is not None  # decoding has started
        long = _request(tiny_gpt2, "many words " * 40, temperature=0, max_new_tokens=2)  # ~80 tokens: 10 chunks
        steps_before = sched.steps
        sched.submit(long)
        first_long = long.out.get(timeout=60)
        steps_during = sched.steps - steps_before
        assert first_long is not None and steps_during >= 8, steps_during
        alone = _run_together(sched, [_request(tiny_gpt2, "many words " * 40, temperature=0, max_new_tokens=2)])[0]
        assert [first_long[0], *_drain(long)] == alone
        _drain(short)
    finally:
        sched.close()


def test_an_idle_scheduler_retires_and_a_new_one_serves(tiny_gpt2, monkeypatch):
    monkeypatch.setattr(scheduler, "IDLE_EXIT_S", 0.05)
    first = scheduler.for_model(tiny_gpt2.model, tiny_gpt2.device.device)
    ev = generator.generate_text(tiny_gpt2, "Hello", SamplingSettings(temperature=0, max_new_tokens=3))
    deadline = time.monotonic() + 5
    while not first._closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert first._closed and first.model is None  # it let go of the model
    again = generator.generate_text(tiny_gpt2, "Hello", SamplingSettings(temperature=0, max_new_tokens=3))
    assert [t.token_id for t in again.tokens] == [t.token_id for t in ev.tokens]
    assert scheduler.for_model(tiny_gpt2.model, tiny_gpt2.device.device) is not first


def test_the_cache_shrinks_after_a_long_request_leaves(tiny_gpt2, monkeypatch):
    monkeypatch.setattr(scheduler, "SHRINK_ABOVE", 64)
    sched = scheduler.Scheduler(tiny_gpt2.model, torch.device("cpu"))
    try:
        short = _request(tiny_gpt2, "Go", temperature=0, max_new_tokens=100)
        long = _request(tiny_gpt2, "many words " * 40, temperature=0, max_new_tokens=1)
        sched.submit(short)
        sched.submit(long)
        _drain(long)
        assert short.out.get(timeout=30) is not None
        deadline = time.monotonic() + 10
        while sched.slots.capacity > 128 and not short.done and time.monotonic() < deadline:
            time.sleep(0.001)
        assert sched.slots.capacity <= 128 or short.done
        _drain(short)
        assert short.finish_reason == "length"
    finally:
        sched.close()

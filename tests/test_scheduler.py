"""Iteration-level batching: a request's text does not depend on who shares its forward passes."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from models.engines import engine as engines
from models.engines import scheduler
from models.engines.batching import Gatherer
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


def test_batched_equals_generate_tiny(tiny_gpt2):
    """The scheduler gives the tokens, log-probs and alternatives of the unbatched generate() path."""
    for prompt, kw in MIXED:
        batched = generator.generate_text(tiny_gpt2, prompt, SamplingSettings(**kw)).tokens
        reference = list(generator.stream(tiny_gpt2, prompt, SamplingSettings(**kw), engine=engines.named("reference")))[-1].tokens
        assert [t.token_id for t in batched] == [t.token_id for t in reference], (prompt, kw)
        for a, b in zip(batched, reference, strict=True):  # log-probs and top-5 under the raw model agree too
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
            assert [x for x, _ in a.alternatives] == [x for x, _ in b.alternatives]


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


def test_a_shared_stream_reports_less_often_with_every_token(tiny_gpt2, monkeypatch):
    """While the model is shared, a stream reports every UPDATE interval with all tokens that arrived;
    the tokens and the text are those of the same request read one token at a time, and Stop still ends
    it at once (the wait between reports ends when the request finishes)."""
    s = SamplingSettings(temperature=0.9, top_k=40, seed=5, max_new_tokens=40)
    solo = list(generator.stream(tiny_gpt2, "The cat", s, engine=engines.named("classroom")))
    assert len(solo[-1].tokens) == 40
    monkeypatch.setattr(generator, "UPDATE_S_PER_SHARER", 0.2)
    monkeypatch.setattr(generator, "MAX_UPDATE_S", 0.2)
    neighbour = threading.Thread(target=lambda: list(generator.stream(
        tiny_gpt2, "A long time ago", SamplingSettings(temperature=0, max_new_tokens=200), engine=engines.named("classroom"))))
    neighbour.start()
    time.sleep(0.05)
    shared, grown = [], []
    for ev in generator.stream(tiny_gpt2, "The cat", s, engine=engines.named("classroom")):
        shared.append(ev)
        grown.append(len(ev.tokens))  # events share the growing token list: count it as it arrives
    neighbour.join()
    assert [t.token_id for t in shared[-1].tokens] == [t.token_id for t in solo[-1].tokens]
    assert shared[-1].text == solo[-1].text
    assert 1 < len(shared) < 15 and any(ev.sharing > 1 for ev in shared)
    assert grown == sorted(grown) and grown[0] == 1  # the first token is reported at once

    cancel, other = threading.Event(), threading.Event()
    neighbour = threading.Thread(target=lambda: list(generator.stream(
        tiny_gpt2, "A long time ago", SamplingSettings(temperature=0, max_new_tokens=200), other, engine=engines.named("classroom"))))
    neighbour.start()
    monkeypatch.setattr(generator, "UPDATE_S_PER_SHARER", 30.0)
    monkeypatch.setattr(generator, "MAX_UPDATE_S", 30.0)
    events = generator.stream(tiny_gpt2, "The cat", SamplingSettings(temperature=0, max_new_tokens=150), cancel,
                              engine=engines.named("classroom"))
    next(events)
    cancel.set()
    started = time.monotonic()
    last = list(events)[-1]
    elapsed = time.monotonic() - started
    other.set()
    neighbour.join()
    assert last.finish_reason == "stopped" and elapsed < 5, elapsed


def test_a_shared_stream_ends_as_soon_as_its_request_does(tiny_gpt2, monkeypatch):
    """The last tokens and the final event go out when the request finishes, not at the end of the wait
    between two reports (a class's texts arrived up to MAX_UPDATE_S late)."""
    monkeypatch.setattr(generator, "UPDATE_S_PER_SHARER", 30.0)
    monkeypatch.setattr(generator, "MAX_UPDATE_S", 30.0)
    other = threading.Event()
    neighbour = threading.Thread(target=lambda: list(generator.stream(
        tiny_gpt2, "A long time ago", SamplingSettings(temperature=0, max_new_tokens=400), other, engine=engines.named("classroom"))))
    neighbour.start()
    try:
        time.sleep(0.05)
        started = time.monotonic()
        events = list(generator.stream(tiny_gpt2, "The cat", SamplingSettings(temperature=0, max_new_tokens=6),
                                       engine=engines.named("classroom")))
        elapsed = time.monotonic() - started
    finally:
        other.set()
        neighbour.join()
    assert any(ev.sharing > 1 for ev in events)  # it did share the model, so it did wait between reports
    assert events[-1].done and events[-1].finish_reason == "length" and len(events[-1].tokens) == 6
    assert elapsed < 10, elapsed


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


def test_one_failing_request_fails_alone(tiny_gpt2, tiny_sched):
    good = _request(tiny_gpt2, "The weather", temperature=0, max_new_tokens=8)
    bad = _request(tiny_gpt2, "The weather", temperature=0.7, max_new_tokens=8)
    bad.processors = sampling.Processors(temperature=0.7, top_k=-3)  # torch.topk refuses a negative k
    got = _run_together(tiny_sched, [good, bad])
    assert bad.finish_reason == "error" and bad.error is not None
    assert good.finish_reason == "length" and len(got[0]) == 8


def test_generation_respects_the_context_length(gpt2_tokenizer):
    """A GPT-2 with 64 positions asked for 100 tokens: capped with a note, in both paths; a prompt of
    200,000 characters keeps its end, and both paths continue it the same way."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from models.core.device import pick
    from models.core.registry import Loaded, ModelSpec, model_nbytes

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=64,
                                       vocab_size=len(gpt2_tokenizer))).eval()
    loaded = Loaded(ModelSpec("gpt2-64", "GPT-2 with 64 positions", "causal-lm", "local", ""), model,
                    gpt2_tokenizer, pick("cpu"), model_nbytes(model))
    results = {}
    for batched in (True, False):
        last = list(generator.stream(loaded, "Hello", SamplingSettings(temperature=0, max_new_tokens=100),
                                     engine=engines.named("classroom" if batched else "reference")))[-1]
        assert last.done and len(last.tokens) == 63, batched
        assert "capped from 100 to 63" in last.notice
        long_prompt = "word " * 300
        last = list(generator.stream(loaded, long_prompt, SamplingSettings(temperature=0, max_new_tokens=100),
                                     engine=engines.named("classroom" if batched else "reference")))[-1]
        assert last.prompt_tokens + len(last.tokens) <= 64 and "only the last" in last.notice
        huge = "".join(chr(0x41 + i % 26) + ("" if i % 7 else " ") for i in range(200_000))  # 200,000 characters
        events = list(generator.stream(loaded, huge, SamplingSettings(temperature=0, max_new_tokens=8), engine=engines.named("classroom" if batched else "reference")))
        assert events[-1].done and len(events[-1].tokens) == 8 and events[-1].prompt_tokens == 56
        results[batched] = [t.token_id for t in events[-1].tokens]
    assert results[True] == results[False]


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


def test_next_token_view_is_the_distribution_generation_samples(tiny_gpt2):
    """At every step of a greedy and a seeded sampled generation with a penalty, the view contains the token."""
    prompt = "The dog"
    for kw in (dict(temperature=0.0, repetition_penalty=1.5), dict(temperature=0.9, top_k=30, top_p=0.9,
                                                                   repetition_penalty=1.3, seed=5)):
        ev = generator.generate_text(tiny_gpt2, prompt, SamplingSettings(max_new_tokens=12, **kw))
        ids = tiny_gpt2.tokenizer(prompt)["input_ids"]
        for token in ev.tokens:
            prefix = tiny_gpt2.tokenizer.decode(ids)
            cands, _ = generator.next_token(tiny_gpt2, prefix, kw["temperature"], kw.get("top_p", 1.0),
                                            kw.get("top_k", 0), show=60, repetition_penalty=kw["repetition_penalty"])
            final = {c.token_id: c.prob_final for c in cands}
            assert final.get(token.token_id, 0) > 0, (kw, token)
            if kw["temperature"] == 0:
                assert cands[0].token_id == token.token_id and cands[0].kept and cands[0].prob_final == 1.0
            ids.append(token.token_id)


def test_greedy_view_rows_follow_the_model(tiny_gpt2):
    cands, _ = generator.next_token(tiny_gpt2, "The river", 0.0, 1.0, 0)
    probs = [c.prob for c in cands]
    assert probs == sorted(probs, reverse=True) and probs[1] > 0
    assert [c.kept for c in cands] == [True] + [False] * (len(cands) - 1)


@pytest.mark.parametrize("p", [sampling.Processors(0.7, 0.9, 50, 1.2), sampling.Processors(1.3, 0.5, 0, 1.0),
                               sampling.Processors(1.0, 1.0, 3, 1.0), sampling.Processors(0.0, 1.0, 0, 1.5)])
def test_processors_match_transformers(p):
    from transformers import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(1, 500, generator=g) * 3
    history = torch.tensor([[3, 17, 17, 250, 499]])
    ref = scores.clone()
    if p.repetition_penalty != 1.0:
        ref = RepetitionPenaltyLogitsProcessor(p.repetition_penalty)(history, ref)
    if p.greedy:
        ours = sampling.distribution(scores[0], history[0], p)
        assert int(ours.argmax()) == int(ref.argmax()) and float(ours.max()) == 1.0
        return
    ref = TemperatureLogitsWarper(p.temperature)(history, ref)
    if p.top_k:
        ref = TopKLogitsWarper(p.top_k)(history, ref)
    if p.top_p < 1.0:
        ref = TopPLogitsWarper(p.top_p)(history, ref)
    expected = torch.softmax(ref, -1)[0]
    ours = sampling.distribution(scores[0], history[0], p)
    assert torch.equal(ours > 0, expected > 0)
    assert torch.allclose(ours, expected, atol=1e-6)


def test_gatherer_batches_concurrent_calls_and_isolates_failures():
    calls = []

    def run_many(items):
        calls.append(list(items))
        if any(i < 0 for i in items):
            raise ValueError("negative")
        return [i * 10 for i in items]

    gather = Gatherer(run_many, window_s=0.05)
    results: dict[int, object] = {}

    def call(i):
        try:
            results[i] = gather(i)
        except ValueError as exc:
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in (1, 2, -3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[1] == 10 and results[2] == 20 and results[4] == 40
    assert isinstance(results[-3], ValueError)
    assert sorted(calls[0]) == [-3, 1, 2, 4]  # all four arrived within the window: one call


def test_gathering_window_setting():
    from models.engines.batching import window_from_env

    assert window_from_env(None) == window_from_env("") == 0.05
    assert window_from_env("0") == 0.0 and window_from_env("20") == 0.02
    for bad in ("abc", "-5", "nan", "1e9"):
        with pytest.raises(ValueError, match="LMLAB_GATHER_MS"):
            window_from_env(bad)


def test_gathered_calls_are_logged_in_the_form_the_gathering_benchmark_counts(caplog):
    """A host sees the sharing in the log, and ``benchmarks.gathering`` counts model calls from those lines."""
    from benchmarks.gathering import calls_from_log

    gather = Gatherer(lambda items: list(items), window_s=0.05, name="next-token views")
    with caplog.at_level("INFO", logger="lmlab.batching"):
        threads = [threading.Thread(target=gather, args=(i,)) for i in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        gather(99)  # alone: not logged, still one call
    lines = "\n".join(f"{r.name}: {r.getMessage()}" for r in caplog.records)
    assert "next-token views: 5 requests in one call" in lines
    assert calls_from_log(lines, 6) == (2, 5)
    assert gather.batches == [5, 1]


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


def test_ner_requests_that_arrive_together_share_one_call(monkeypatch):
    from models.ner import tagger

    calls = []
    real = tagger.SpacyTagger.tag_many

    def counting(self, texts, *a, **kw):
        calls.append(len(texts))
        return real(self, texts, *a, **kw)

    monkeypatch.setattr(tagger.SpacyTagger, "tag_many", counting)
    monkeypatch.setattr(tagger, "GATHER_WINDOW_S", 0.2)
    tagger._gatherers.clear()
    texts = ["Ada Lovelace lived in London.", "Angela Merkel visited Paris.", "IBM hired Grace Hopper.",
             "Tokyo is in Japan."]
    alone = [tagger.tag(tagger.SPACY_KEY, t, "first", 0.0).entities for t in texts]
    calls.clear()
    results: list = [None] * len(texts)

    shared: list = [None] * len(texts)

    def call(i):
        out = tagger.tag(tagger.SPACY_KEY, texts[i], "first", 0.0)
        results[i], shared[i] = out.entities, out.shared_with

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == alone
    assert calls == [4]
    assert shared == [3, 3, 3, 3]  # each status can say how many others shared the call
    tagger._gatherers.clear()

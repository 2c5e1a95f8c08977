"""The loaded-model cache under concurrent use: one load per key, and the memory budget kept."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from models.core.registry import Loaded, ModelCache, ModelSpec


def _loaded(key: str, nbytes: int) -> Loaded:
    return Loaded(ModelSpec(key, key, "causal-lm", "local", ""), object(), None, None, nbytes)


def test_concurrent_gets_of_one_key_load_it_once():
    cache, calls = ModelCache(10**9), []
    gate = threading.Barrier(16)

    def loader():
        calls.append(1)
        time.sleep(0.2)  # a slow load: the other threads must wait for it, not start their own
        return _loaded("a", 100)

    def get(_):
        gate.wait()
        return cache.get(("a",), loader)

    with ThreadPoolExecutor(16) as pool:
        items = list(pool.map(get, range(16)))
    assert len(calls) == 1 and all(item is items[0] for item in items)


def test_budget_is_kept_under_concurrent_loads():
    cache = ModelCache(budget_bytes=300)
    peaks = []

    def get(k):
        item = cache.get((f"m{k % 7}",), lambda: _loaded(f"m{k % 7}", 100))
        with cache._lock:
            peaks.append(sum(i.nbytes for i in cache._items.values()))
        return item

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(get, range(200)))
    assert max(peaks) <= 300 and len(cache) <= 3


def test_a_failed_load_is_not_cached_and_can_be_retried():
    cache, attempts = ModelCache(10**9), []

    def flaky():
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("disk hiccup")
        return _loaded("b", 1)

    try:
        cache.get(("b",), flaky)
    except OSError:
        pass
    assert cache.get(("b",), flaky).spec.key == "b" and len(attempts) == 2


def test_memory_an_engine_keeps_beside_the_weights_counts_against_the_budget(tiny_gpt2):
    """The classroom engine charges its packed copy of the matrices to the cache the model came from,
    once per model, and the least recently used models make room for it."""
    from models.engines import packed_linear
    from models.engines.classroom import ClassroomEngine
    from models.engines.scheduler import Request
    from models.generation import generator

    extra = packed_linear.planned_nbytes(tiny_gpt2.model, tiny_gpt2.device.device)
    weights = tiny_gpt2.nbytes
    assert extra > 0
    cache = ModelCache(budget_bytes=weights + extra + 50)
    cache.get(("old",), lambda: _loaded("old", 100))
    cache.get(("tiny",), lambda: tiny_gpt2)
    engine = ClassroomEngine(memory=cache)
    s = generator.SamplingSettings(temperature=0, max_new_tokens=2)
    try:
        for _ in range(2):
            request = Request([15496, 995], generator.processors(s), 2, 0, None)
            engine.submit(tiny_gpt2, request)
            while request.out.get(timeout=60) is not None:
                pass
        assert cache._items[("tiny",)].nbytes == weights + extra  # charged once, not per request
        assert ("old",) not in cache._items and len(cache) == 1
    finally:
        tiny_gpt2.nbytes = weights  # the fixture is shared with other tests

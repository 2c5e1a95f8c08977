"""Requests that arrive together share one call (next-token views, NER), and a failure stays its own."""

from __future__ import annotations

import threading

import pytest

from models.engines.batching import Gatherer


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

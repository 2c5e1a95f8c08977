"""Generation handler on a tiny GPT-2 (random weights, real tokenizer) and the embedded SmolLM2."""

from __future__ import annotations

import math
import threading
import time

import pytest
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from models.core import text_start
from models.core.errors import InputError
from models.generation import generator
from models.generation.generator import SamplingSettings


def _context(loaded, prompt):
    """(1, n) ids the model reads for a plain prompt: the start token, then the prompt's tokens."""
    return torch.tensor([text_start.with_start(loaded.tokenizer, loaded.tokenizer(prompt)["input_ids"])])


def _run(loaded, prompt, **kw):
    return generator.generate_text(loaded, prompt, SamplingSettings(**kw))


def test_greedy_equals_argmax(tiny_gpt2):
    ev = _run(tiny_gpt2, "Hello world", temperature=0, max_new_tokens=8)
    ids = _context(tiny_gpt2, "Hello world")
    expected = []
    with torch.no_grad():
        for _ in range(8):
            nxt = int(tiny_gpt2.model(ids).logits[0, -1].argmax())
            expected.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
            if nxt == tiny_gpt2.tokenizer.eos_token_id:
                break
    assert [t.token_id for t in ev.tokens] == expected


def test_token_logprobs_are_the_models(tiny_gpt2):
    ev = _run(tiny_gpt2, "The cat", temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=5, seed=11)
    ids = _context(tiny_gpt2, "The cat")
    with torch.no_grad():
        for tok in ev.tokens:
            logp = torch.log_softmax(tiny_gpt2.model(ids).logits[0, -1], -1)
            assert tok.logprob == pytest.approx(float(logp[tok.token_id]), abs=1e-4)
            assert tok.alternatives[0][1] == pytest.approx(float(logp.exp().max()), abs=1e-5)
            ids = torch.cat([ids, torch.tensor([[tok.token_id]])], 1)
    assert ev.total_bits == pytest.approx(sum(t.bits for t in ev.tokens))


def test_same_seed_same_text_other_seed_other_text(tiny_gpt2):
    a = _run(tiny_gpt2, "Once upon a time", temperature=1.2, top_k=0, top_p=1.0, max_new_tokens=12, seed=5)
    b = _run(tiny_gpt2, "Once upon a time", temperature=1.2, top_k=0, top_p=1.0, max_new_tokens=12, seed=5)
    c = _run(tiny_gpt2, "Once upon a time", temperature=1.2, top_k=0, top_p=1.0, max_new_tokens=12, seed=6)
    assert [t.token_id for t in a.tokens] == [t.token_id for t in b.tokens]
    assert [t.token_id for t in a.tokens] != [t.token_id for t in c.tokens]


@pytest.mark.parametrize("temperature,top_p,top_k", [(0.7, 0.9, 0), (1.3, 0.5, 20), (1.0, 1.0, 5), (0.5, 0.3, 3)])
def test_next_token_view_matches_transformers_warpers(tiny_gpt2, temperature, top_p, top_k):
    cands, _ = generator.next_token(tiny_gpt2, "A quick brown", temperature, top_p, top_k, show=50)
    ids = _context(tiny_gpt2, "A quick brown")
    with torch.no_grad():
        logits = tiny_gpt2.model(ids).logits[:, -1].float()
    warpers = [TemperatureLogitsWarper(temperature)]
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1:
        warpers.append(TopPLogitsWarper(top_p))
    warped = LogitsProcessorList(warpers)(ids, logits.clone())[0]
    final = torch.softmax(warped, -1)
    raw = torch.softmax(logits[0], -1)
    for c in cands:
        assert c.prob == pytest.approx(float(raw[c.token_id]), abs=1e-6)
        assert c.kept == bool(torch.isfinite(warped[c.token_id]))
        assert c.prob_final == pytest.approx(float(final[c.token_id]), abs=1e-5)
    # candidates come sorted by tempered probability
    tempered = [c.prob_tempered for c in cands]
    assert tempered == sorted(tempered, reverse=True)


def test_greedy_view_keeps_only_argmax(tiny_gpt2):
    cands, _ = generator.next_token(tiny_gpt2, "Hello", 0.0, 1.0, 0)
    assert cands[0].kept and cands[0].prob_final == 1.0
    assert not any(c.kept for c in cands[1:])


def test_stop_ends_generation_early(tiny_gpt2):
    cancel = threading.Event()
    events = []
    for ev in generator.stream(tiny_gpt2, "Hello", SamplingSettings(temperature=0, max_new_tokens=100), cancel):
        events.append(ev)
        if len(ev.tokens) == 3:
            cancel.set()
    assert events[-1].done and events[-1].finish_reason == "stopped"
    assert len(events[-1].tokens) < 10  # the model stopped within a step or two, not at 100


def test_closing_the_stream_stops_the_worker(tiny_gpt2):
    it = generator.stream(tiny_gpt2, "Hello", SamplingSettings(temperature=0, max_new_tokens=120))
    next(it)
    it.close()  # what a closed browser tab does to the handler's generator
    deadline = time.monotonic() + 5
    while any(t.name == "lmlab-generate" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(t.name == "lmlab-generate" for t in threading.enumerate())


def test_long_prompt_keeps_the_end(tiny_gpt2):
    prompt = " ".join(f"word{i}" for i in range(400))  # far more than the 128 positions
    ids, notice = generator.encode_prompt(tiny_gpt2, prompt, reserve=8)
    assert ids.shape[1] == 120 and "only the last 120" in notice
    assert tiny_gpt2.tokenizer.decode(ids[0]).endswith("word399")
    ev = _run(tiny_gpt2, prompt, temperature=0, max_new_tokens=8)
    assert ev.notice and len(ev.tokens) == 8


@pytest.mark.parametrize("prompt", ["", "   \n"])
def test_empty_prompt_is_a_clear_error(tiny_gpt2, prompt):
    with pytest.raises(InputError, match="prompt is empty"):
        _run(tiny_gpt2, prompt)


@pytest.mark.parametrize("field,value", [("temperature", -1), ("temperature", 9), ("top_p", 0), ("top_k", -3),
                                         ("max_new_tokens", 0), ("max_new_tokens", 10**6), ("seed", -1),
                                         ("temperature", float("nan")), ("repetition_penalty", 0.5)])
def test_out_of_range_settings_are_rejected(field, value):
    with pytest.raises(InputError, match=field):
        SamplingSettings(**{field: value}).validate()


@pytest.mark.slow
def test_smollm_greedy_is_reproducible_english(smollm):
    s = dict(temperature=0, max_new_tokens=24)
    assert "Paris" in _run(smollm, "The capital of France is", **s).text
    a = _run(smollm, "Once upon a time, in a small village by the sea,", **s)
    b = _run(smollm, "Once upon a time, in a small village by the sea,", **s)
    assert a.text == b.text and len(a.tokens) > 0
    letters = sum(ch.isascii() and (ch.isalpha() or ch.isspace()) for ch in a.text)
    assert letters / len(a.text) > 0.7


def test_the_streamed_token_view_only_appends():
    """Each streamed token view extends the previous one (so Gradio sends only the new chips), renders
    only the new tokens, and escapes the text and the hover details."""
    from types import SimpleNamespace

    from components.tokens import GrowingStrip

    def tok(text, prob):
        return SimpleNamespace(text=text, prob=prob, bits=-math.log2(prob), alternatives=[(text, prob), ("<b>", 0.01)])

    tokens, strip, views = [], GrowingStrip(), []
    for text, prob in [("Hello", 0.5), (" <world>", 0.02), ("\n", 0.9)]:
        tokens.append(tok(text, prob))
        views.append(strip(tokens))
    assert all(b.startswith(a) for a, b in zip(views, views[1:], strict=False))
    assert views[-1] == GrowingStrip()(tokens)  # the same as rendering the whole list at once
    assert views[-1].count("class='tok'") == 3 and "&lt;world&gt;" in views[-1] and "<world>" not in views[-1]
    assert "top-5: ↵ 90.0% · &lt;b&gt; 1.0%" in views[-1]  # alternatives written as every view writes tokens


def test_a_token_costs_the_same_bits_in_generate_and_in_compress(tiny_gpt2):
    """The lesson's claim, number for number: the probability Generate shows for each token is the one the
    text coder codes it with (both read the text after the same start token)."""
    from models.compression.text import lm_codec

    prompt = "The cat sat on the"
    ev = _run(tiny_gpt2, prompt, temperature=0, max_new_tokens=10)  # greedy: whole words that re-tokenize alike
    res = lm_codec.compress((prompt + ev.text).encode(), tiny_gpt2, lm_codec.CodecSettings(precision="fp32", window=64, keep=32))
    coded = res.tokens[-len(ev.tokens):]
    assert [t.text for t in coded] == [t.text for t in ev.tokens]  # the same tokens, so the same steps
    for shown, cost in zip(ev.tokens, coded, strict=True):
        assert cost.bits == pytest.approx(shown.bits, rel=1e-4, abs=1e-4)

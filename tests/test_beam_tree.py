"""The beam-search tree: its best leaf is what generate(num_beams=...) returns, its scores are the model's."""

from __future__ import annotations

import math

import pytest
import torch

from models.core import text_start
from models.core.errors import InputError
from models.generation import beam_tree

PROMPT = "The weather today is"


def _generate(loaded, prompt, num_beams, length_penalty, max_new_tokens):
    ids = torch.tensor([text_start.with_start(loaded.tokenizer, loaded.tokenizer(prompt)["input_ids"])])
    tok = loaded.tokenizer
    with torch.inference_mode():
        out = loaded.model.generate(ids, attention_mask=torch.ones_like(ids), num_beams=num_beams,
                                    length_penalty=length_penalty, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                    output_scores=True, return_dict_in_generate=True)
    n = (out.beam_indices[0] >= 0).sum().item()
    return out.sequences[0, ids.shape[1]:ids.shape[1] + n].tolist(), float(out.sequences_scores[0])


def _log_softmax_after(loaded, prompt, prefix):
    ids = torch.tensor([text_start.with_start(loaded.tokenizer, loaded.tokenizer(prompt)["input_ids"]) + list(prefix)])
    with torch.inference_mode():
        return torch.log_softmax(loaded.model(ids).logits[0, -1].float(), -1)


@pytest.mark.parametrize("num_beams,length_penalty,max_new_tokens", [(2, 1.0, 5), (3, 0.0, 6), (5, 2.0, 4), (4, -1.0, 3)])
def test_best_leaf_is_what_generate_returns(tiny_gpt2, num_beams, length_penalty, max_new_tokens):
    tree = beam_tree.beam_tree(tiny_gpt2, PROMPT, num_beams, length_penalty, max_new_tokens)
    expected_tokens, expected_score = _generate(tiny_gpt2, PROMPT, num_beams, length_penalty, max_new_tokens)
    best = tree.best
    assert best.token_ids == expected_tokens
    assert best.score == pytest.approx(expected_score, abs=1e-4)
    # generate's score is the tree's cumulative log-probability under the length penalty
    assert best.cum_logprob / len(best.token_ids) ** length_penalty == pytest.approx(expected_score, abs=1e-4)
    assert len(tree.hypotheses) == num_beams
    assert [h.score for h in tree.hypotheses] == sorted((h.score for h in tree.hypotheses), reverse=True)
    # the highlighted path is exactly the best leaf's ancestry
    path, node = [], tree.nodes[best.leaf]
    while node.parent is not None:
        path.append(node)
        node = tree.nodes[node.parent]
    assert [n.token_id for n in reversed(path)] == best.token_ids
    assert {n.id for n in tree.nodes if n.status == "best"} == {n.id for n in path}


def test_every_node_carries_the_models_log_probability(tiny_gpt2):
    tree = beam_tree.beam_tree(tiny_gpt2, PROMPT, num_beams=3, length_penalty=1.0, max_new_tokens=5)
    prefixes = {0: ()}
    for node in tree.nodes[1:]:  # parents come before children
        prefixes[node.id] = prefixes[node.parent] + (node.token_id,)
        parent = tree.nodes[node.parent]
        assert node.step == parent.step + 1
        assert node.cum_logprob == pytest.approx(parent.cum_logprob + node.logprob, abs=1e-5)
        expected = _log_softmax_after(tiny_gpt2, PROMPT, prefixes[node.parent])[node.token_id]
        assert node.logprob == pytest.approx(float(expected), abs=1e-4)
    # at most num_beams beams alive per step; the search pruned some (grey in the picture)
    per_step = [sum(n.step == s for n in tree.nodes) for s in range(1, 6)]
    assert max(per_step) <= 3 * 2  # alive beams + the last step's picks
    assert all(count <= 3 for count in per_step[:-1])
    assert any(n.status == "pruned" for n in tree.nodes)
    assert len({prefixes[n.id] for n in tree.nodes}) == len(tree.nodes), "a prefix appears twice"


def test_side_by_side_rows(tiny_gpt2):
    tree = beam_tree.beam_tree(tiny_gpt2, PROMPT, num_beams=2, length_penalty=1.0, max_new_tokens=4)
    rows = beam_tree.side_by_side(tiny_gpt2, PROMPT, tree, temperature=0.9, seed=3)
    assert [r.method for r in rows] == ["beam search #1 (returned)", "beam search #2", "greedy",
                                        "sampling (temperature 0.9, seed 3)"]
    greedy = rows[2]
    ids = torch.tensor([text_start.with_start(tiny_gpt2.tokenizer, tiny_gpt2.tokenizer(PROMPT)["input_ids"])])
    with torch.inference_mode():
        out = tiny_gpt2.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=4,
                                       pad_token_id=tiny_gpt2.tokenizer.pad_token_id)
    assert greedy.text == tiny_gpt2.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert greedy.n_tokens == 4 and greedy.cum_logprob < 0 and math.isfinite(rows[3].cum_logprob)
    assert rows[0].cum_logprob == pytest.approx(tree.best.cum_logprob)


def test_the_tree_speaks_bits_with_ln_p_beside(tiny_gpt2, monkeypatch):
    """What a learner reads is bits (-log2 p, the coder's unit); ln p stays in its own, labelled column."""
    from components import beam_search as view
    from models.core import registry

    monkeypatch.setattr(registry, "load_causal_lm", lambda key: tiny_gpt2)
    figure, table, status, _context = view.beam_search(PROMPT, "tiny", 3, 1.0, 4, 0.9, 3)
    for row in table:
        assert row[3] == pytest.approx(-row[5] / math.log(2), abs=0.01) and row[3] > 0
    labels = [t for t in figure.data[-1].text[1:]]
    assert labels and all(label.endswith(" bits") for label in labels)
    assert "bits" in figure.layout.title.text and "bits" in status


@pytest.mark.parametrize("kwargs,match", [
    (dict(prompt=""), "prompt is empty"),
    (dict(num_beams=1), "num beams must be between 2 and 5"),
    (dict(num_beams=6), "num beams"),
    (dict(length_penalty=float("nan")), "length penalty"),
    (dict(max_new_tokens=0), "max new tokens"),
    (dict(max_new_tokens=25), "max new tokens"),
])
def test_bad_settings_are_refused(tiny_gpt2, kwargs, match):
    args = dict(prompt=PROMPT, num_beams=2, length_penalty=1.0, max_new_tokens=3) | kwargs
    with pytest.raises(InputError, match=match):
        beam_tree.beam_tree(tiny_gpt2, args.pop("prompt"), **args)


def test_sampling_temperature_zero_is_refused(tiny_gpt2):
    tree = beam_tree.beam_tree(tiny_gpt2, PROMPT, num_beams=2, max_new_tokens=2)
    with pytest.raises(InputError, match="temperature"):
        beam_tree.side_by_side(tiny_gpt2, PROMPT, tree, temperature=0)


@pytest.mark.slow
def test_smollm_beam_tree_matches_generate(smollm):
    prompt = "The capital of France is"
    tree = beam_tree.beam_tree(smollm, prompt, num_beams=3, length_penalty=1.0, max_new_tokens=6)
    tokens, score = _generate(smollm, prompt, 3, 1.0, 6)
    assert tree.best.token_ids == tokens and tree.best.score == pytest.approx(score, abs=1e-4)
    assert tree.best.text.startswith(" Paris")

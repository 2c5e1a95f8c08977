"""Beam search as a tree, next to greedy decoding and sampling for the same prompt.

The search itself is transformers' `generate(num_beams=...)` (the algorithm of Graves 2012 /
Sutskever et al. 2014 with a length penalty as in Wu et al. 2016: a finished hypothesis scores
sum(log p) / length**length_penalty). To draw it, a LogitsProcessor placed in that call records, at
every step, the beams still alive (their token sequences) and each beam's log-softmax over the
vocabulary; `generate` passes both to every processor. From these the tree follows without searching
again: a node per distinct prefix that was ever alive, its cumulative log-probability = its parent's +
log p(token | parent). The returned hypotheses (`sequences`, `sequences_scores`, `beam_indices`) close
the last step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from models.core import text_start
from models.core.errors import InputError
from models.core.registry import Loaded
from models.engines.model_jobs import run_on_model
from models.generation import generator

LIMITS = {"num_beams": (2, 5), "length_penalty": (-2.0, 3.0), "max_new_tokens": (1, 24)}
MAX_PROMPT_TOKENS = 512


LN2 = math.log(2)

@dataclass
class BeamNode:
    id: int
    parent: int | None  # None for the root (the prompt)
    step: int  # 0 = root, 1 = first generated token, ...
    token_id: int | None
    token: str
    logprob: float  # log p(token | parent's sequence), natural log
    cum_logprob: float  # sum of logprob from the root: the beam's score before the length penalty
    status: str = "pruned"  # best | returned | pruned | root

    @property
    def bits(self) -> float:
        """The token's surprisal, -log2 p: the bits an arithmetic coder would spend on it."""
        return -self.logprob / LN2

    @property
    def cum_bits(self) -> float:
        """The beam's surprisal so far in bits (fewer bits = more likely)."""
        return -self.cum_logprob / LN2


@dataclass
class Hypothesis:
    rank: int  # 1 = what generate() returns first
    token_ids: list[int]  # generated tokens only
    text: str
    cum_logprob: float
    score: float  # cum_logprob / len**length_penalty, as generate() reports it
    leaf: int  # node id of the last token

    @property
    def bits(self) -> float:
        return -self.cum_logprob / LN2


@dataclass
class BeamTree:
    prompt: str
    num_beams: int
    length_penalty: float
    max_new_tokens: int
    nodes: list[BeamNode]
    hypotheses: list[Hypothesis]  # generate()'s n-best list, best first
    notice: str = ""

    @property
    def best(self) -> Hypothesis:
        return self.hypotheses[0]


@dataclass
class Continuation:
    method: str  # "beam search #1 (returned)", "greedy", "sampling (temperature 0.8, seed 0)"
    text: str
    n_tokens: int
    cum_logprob: float  # sum of the model's log p of the generated tokens (temperature 1)
    extra: dict = field(default_factory=dict)

    @property
    def per_token(self) -> float:
        return self.cum_logprob / self.n_tokens if self.n_tokens else 0.0

    @property
    def bits(self) -> float:
        """The text's surprisal in bits, -sum log2 p: what the model would compress it to."""
        return -self.cum_logprob / LN2

    @property
    def bits_per_token(self) -> float:
        return self.bits / self.n_tokens if self.n_tokens else 0.0


class _BeamRecorder(LogitsProcessor):
    """Keeps (alive sequences (beams, len), log-probs (beams, vocab)) of every beam-search step."""

    def __init__(self) -> None:
        self.steps: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.steps.append((input_ids.detach().cpu(), scores.detach().float().cpu()))
        return scores


def _check(name: str, value, kind=float):
    lo, hi = LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not lo <= value <= hi:
        raise InputError(f"{name.replace('_', ' ')} must be between {lo} and {hi} (got {value!r})")
    return kind(value)


def _prompt_ids(loaded: Loaded, prompt: str) -> tuple[torch.Tensor, str]:
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("the prompt is empty: type a few words for the model to continue")
    ids = loaded.tokenizer(prompt[-generator.MAX_PROMPT_CHARS:])["input_ids"]
    notice = ""
    if len(ids) > MAX_PROMPT_TOKENS:
        notice = f"The prompt has {len(ids):,} tokens; beam search here reads the last {MAX_PROMPT_TOKENS}."
        ids = ids[-MAX_PROMPT_TOKENS:]
    ids = text_start.with_start(loaded.tokenizer, ids)  # the context Generate and Compress read
    return torch.tensor([ids], dtype=torch.long, device=loaded.device.device), notice


def beam_tree(loaded: Loaded, prompt: str, num_beams: int = 3, length_penalty: float = 1.0,
              max_new_tokens: int = 8) -> BeamTree:
    """Run `generate(num_beams=...)` on `prompt` and return the whole search as a tree.

    num_beams 2..5, length_penalty -2..3 (> 0 favours longer hypotheses), max_new_tokens 1..24.
    Raises InputError for an empty prompt or a setting out of range.
    """
    num_beams = _check("num_beams", num_beams, int)
    length_penalty = _check("length_penalty", length_penalty, float)
    max_new_tokens = _check("max_new_tokens", max_new_tokens, int)
    input_ids, notice = _prompt_ids(loaded, prompt)
    n_prompt = input_ids.shape[1]
    tok = loaded.tokenizer
    recorder = _BeamRecorder()

    def search():
        with torch.inference_mode():
            return loaded.model.generate(
                input_ids, attention_mask=torch.ones_like(input_ids), num_beams=num_beams,
                num_return_sequences=num_beams, length_penalty=length_penalty, max_new_tokens=max_new_tokens,
                do_sample=False, temperature=None, top_p=None, top_k=None, early_stopping=False,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                logits_processor=LogitsProcessorList([recorder]), output_scores=True, return_dict_in_generate=True,
            )

    # In the model's turn: the other users' streams pause for the search (at most 5 beams x 24 tokens).
    out = run_on_model(loaded, search)

    nodes = [BeamNode(0, None, 0, None, "", 0.0, 0.0, "root")]
    by_prefix: dict[tuple[int, ...], int] = {(): 0}

    def add(prefix: tuple[int, ...], logprob: float) -> int:
        parent = by_prefix[prefix[:-1]]
        node = BeamNode(len(nodes), parent, len(prefix), prefix[-1], tok.decode([prefix[-1]]), logprob,
                        nodes[parent].cum_logprob + logprob)
        nodes.append(node)
        by_prefix[prefix] = node.id
        return node.id

    def logprob_after(step: int, prefix: tuple[int, ...], token_id: int) -> float:
        # the row of the step's alive beams whose generated part is `prefix`
        seqs, logp = recorder.steps[step]
        for row in range(seqs.shape[0]):
            if tuple(seqs[row, n_prompt:].tolist()) == prefix:
                return float(logp[row, token_id])
        raise AssertionError(f"beam {prefix} was not alive at step {step}")

    # Steps 1..: the beams alive when step t's scores were computed have t generated tokens.
    for t in range(1, len(recorder.steps)):
        seqs, _ = recorder.steps[t]
        for row in range(seqs.shape[0]):
            prefix = tuple(seqs[row, n_prompt:].tolist())
            if prefix not in by_prefix:
                add(prefix, logprob_after(t - 1, prefix[:-1], prefix[-1]))

    hypotheses = []
    lengths = (out.beam_indices >= 0).sum(-1).tolist()  # generated length of each returned hypothesis
    for rank, (seq, length, score) in enumerate(zip(out.sequences, lengths, out.sequences_scores.tolist(), strict=True), 1):
        gen = tuple(seq[n_prompt:n_prompt + length].tolist())
        for k in range(1, len(gen) + 1):  # the last step's picks were never alive: add them here
            if gen[:k] not in by_prefix:
                add(gen[:k], logprob_after(k - 1, gen[:k - 1], gen[k - 1]))
        leaf = by_prefix[gen]
        hypotheses.append(Hypothesis(rank, list(gen), tok.decode(list(gen), skip_special_tokens=True),
                                     nodes[leaf].cum_logprob, score, leaf))
        node_id = leaf
        while node_id:  # mark the path; the best one wins where paths share a prefix
            nodes[node_id].status = "best" if rank == 1 or nodes[node_id].status == "best" else "returned"
            node_id = nodes[node_id].parent
    return BeamTree(prompt, num_beams, length_penalty, max_new_tokens, nodes, hypotheses, notice)


def side_by_side(loaded: Loaded, prompt: str, tree: BeamTree, temperature: float = 0.8, seed: int = 0) -> list[Continuation]:
    """Beam search's n-best list, then greedy decoding and sampling of the same prompt and length.

    Greedy and sampling run through the Generate tab's own generator (same settings -> same text as
    pressing Generate there with top-p 0.95 and top-k 50). Log-probs are the model's at temperature 1.
    """
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature <= 2:
        raise InputError(f"the sampling temperature must be above 0 and at most 2 (got {temperature!r}); 0 would be greedy")
    rows = [Continuation(f"beam search #{h.rank}" + (" (returned)" if h.rank == 1 else ""), h.text, len(h.token_ids),
                         h.cum_logprob, {"score": h.score}) for h in tree.hypotheses]
    sampled = generator.SamplingSettings(temperature=temperature, max_new_tokens=tree.max_new_tokens, seed=seed).validate()
    greedy = generator.SamplingSettings(temperature=0.0, max_new_tokens=tree.max_new_tokens, seed=sampled.seed)
    for method, settings in (("greedy", greedy), (f"sampling (temperature {temperature:g}, seed {sampled.seed})", sampled)):
        ev = generator.generate_text(loaded, prompt, settings)
        rows.append(Continuation(method, ev.text, len(ev.tokens), sum(t.logprob for t in ev.tokens)))
    return rows

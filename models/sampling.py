"""The next-token distribution generation samples from: repetition penalty, temperature, top-k, top-p.

One function serves the batched scheduler, the unbatched ``generate()`` path's reference tests and
the next-token view, so the view's "p (sampled)" column is exactly the distribution the next token
is drawn from. The steps and their order follow transformers' ``generate()``
(``RepetitionPenaltyLogitsProcessor``, then ``TemperatureLogitsWarper``, ``TopKLogitsWarper``,
``TopPLogitsWarper``; tests compare against those classes), applied to one row at a time so every
request keeps its own settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Processors:
    """A request's sampling settings as the processors see them (temperature 0 = greedy)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def penalised(scores: torch.Tensor, history: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty (Keskar et al., 2019) as transformers applies it.

    ``scores`` (vocab,) raw logits; ``history`` (n,) token ids already in the text. A seen token's
    positive score is divided by ``penalty`` and a negative one multiplied by it. Returns a new tensor.
    """
    if penalty == 1.0 or history.numel() == 0:
        return scores
    out = scores.clone()
    seen = torch.gather(scores, 0, history)
    out.scatter_(0, history, torch.where(seen < 0, seen * penalty, seen / penalty))
    return out


def filtered(scores: torch.Tensor, p: Processors) -> torch.Tensor:
    """Scores (vocab,) after temperature, top-k and top-p; cut tokens are -inf. Greedy keeps the argmax only.

    Top-k keeps every token scoring at least the k-th highest (ties kept, as transformers does); top-p
    sorts ascending and drops tokens whose cumulative probability is <= 1 - top_p, always keeping the
    most likely one (Holtzman et al., 2020, as transformers implements it).
    """
    scores = scores.float()
    if p.greedy:
        out = torch.full_like(scores, -float("inf"))
        best = int(torch.argmax(scores))
        out[best] = scores[best]
        return out
    scores = scores / p.temperature
    if p.top_k and p.top_k < scores.numel():
        kth = torch.topk(scores, p.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if p.top_p < 1.0:
        # Sorting only the surviving candidates (top-k's 50 instead of the whole vocabulary) gives the
        # same cut: the dropped tokens are -inf and contribute nothing to the cumulative sum.
        live = torch.isfinite(scores).nonzero().squeeze(1)
        values = scores[live]
        sorted_values, order = torch.sort(values)
        cumulative = torch.softmax(sorted_values, 0).cumsum(0)
        drop = cumulative <= 1 - p.top_p
        drop[-1] = False
        scores = scores.clone()
        scores[live[order[drop]]] = -float("inf")
    return scores


def distribution(scores: torch.Tensor, history: torch.Tensor, p: Processors) -> torch.Tensor:
    """Probabilities (vocab,) the next token is drawn from, given raw logits and the text so far."""
    return torch.softmax(filtered(penalised(scores.float(), history, p.repetition_penalty), p), 0)


def choose(scores: torch.Tensor, history: torch.Tensor, p: Processors, rng: torch.Generator | None) -> int:
    """The next token: argmax when greedy, else one draw from ``distribution`` with the request's own ``rng``.

    ``torch.multinomial`` with a generator seeded like ``torch.manual_seed(seed)`` draws what
    ``generate(do_sample=True)`` draws after that seed, so a request's text does not depend on which
    other requests shared its forward passes.
    """
    scores = penalised(scores.float(), history, p.repetition_penalty)
    if p.greedy:
        return int(torch.argmax(scores))
    probs = torch.softmax(filtered(scores, p), 0)
    return int(torch.multinomial(probs, 1, generator=rng))

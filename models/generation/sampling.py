"""The next-token distribution generation samples from: repetition penalty, temperature, top-k, top-p.

One set of functions serves the batched scheduler, the unbatched ``generate()`` path (as a logits
processor) and the next-token view, so the view's "p (sampled)" column is exactly the distribution the
next token is drawn from, and both generation paths draw the same tokens for the same seed. The steps and their order follow transformers' ``generate()``
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


def candidates(scores: torch.Tensor, p: Processors) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens the next draw can pick and their probabilities: ``(ids (n,), probs (n,))``.

    ``scores`` (vocab,) are logits after the repetition penalty. Greedy keeps the argmax alone. Otherwise:
    temperature, then top-k (the k highest), then top-p as transformers implements it (Holtzman et al.,
    2020: sort ascending, drop tokens whose cumulative probability is <= 1 - top_p, always keep the most
    likely one). Working on top-k's few candidates instead of the whole vocabulary is what makes a
    30-row step cheap: a draw over 49,152 tokens costs ~50x one over 50 on this CPU.
    """
    scores = scores.float()
    if p.greedy:
        best = torch.argmax(scores).reshape(1)
        return best, torch.ones(1)
    if p.top_k and p.top_k < scores.numel():
        values, ids = torch.topk(scores, p.top_k)  # dividing by a positive temperature keeps the order
        return from_top(values, ids, p)
    values, ids = scores / p.temperature, torch.arange(scores.numel())
    return _nucleus(values, ids, p)


def from_top(values: torch.Tensor, ids: torch.Tensor, p: Processors) -> tuple[torch.Tensor, torch.Tensor]:
    """``candidates`` from the row's top-k already taken: ``values`` (k,) raw scores in descending order
    and their token ``ids``. The scheduler takes one top-k for all rows of a step and calls this per row."""
    return _nucleus(values / p.temperature, ids, p)


def _nucleus(values: torch.Tensor, ids: torch.Tensor, p: Processors) -> tuple[torch.Tensor, torch.Tensor]:
    if p.top_p < 1.0:
        values, order = torch.sort(values)  # ascending, as transformers' TopPLogitsWarper
        ids = ids[order]
        keep = torch.softmax(values, 0).cumsum(0) > 1 - p.top_p
        keep[-1] = True
        values, ids = values[keep], ids[keep]
    return ids, torch.softmax(values, 0)


def distribution(scores: torch.Tensor, history: torch.Tensor, p: Processors) -> torch.Tensor:
    """Probabilities (vocab,) the next token is drawn from, given raw logits and the text so far."""
    ids, probs = candidates(penalised(scores.float(), history, p.repetition_penalty), p)
    out = torch.zeros(scores.numel())
    out[ids.cpu()] = probs.cpu()
    return out


def choose(scores: torch.Tensor, history: torch.Tensor, p: Processors, rng: torch.Generator | None) -> int:
    """The next token: argmax when greedy, else one draw from ``candidates`` with the request's own ``rng``.

    Each request draws from its own generator, seeded from its seed, so its text does not depend on
    which other requests shared its forward passes.
    """
    scores = penalised(scores.float(), history, p.repetition_penalty)
    if p.greedy:
        return int(torch.argmax(scores))
    return draw(*candidates(scores, p), rng)


def draw(ids: torch.Tensor, probs: torch.Tensor, rng: torch.Generator | None) -> int:
    """One token from ``candidates``' output with the request's own generator."""
    return int(ids[torch.multinomial(probs.cpu(), 1, generator=rng)])

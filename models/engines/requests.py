"""What a request to an engine carries and what the engine streams back: the seam's vocabulary.

``SamplingSettings`` are the Generate tab's sliders (their help strings and ranges are the UI's);
``TokenInfo`` is one generated token with its log-probability and top alternatives; ``StreamEvent`` is
one report of a stream (the text so far, its tokens, and at the end the finish reason); ``Candidate``
is one row of the next-token chart. Every engine (reference, classroom, remote) speaks these, so the
generation code and the components never ask which engine runs.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

from models.core.errors import InputError

# Streams the web app keeps open at once (Gradio's concurrency limit for the batched events); more wait in
# Gradio's queue. Open streams cost a thread each, not model work: the engine bounds that.
MAX_OPEN_STREAMS = int(os.environ.get("LMLAB_MAX_STREAMS", 256))


@dataclass(frozen=True)
class Capabilities:
    """What an engine can show a learner."""

    alternatives: int  # top alternatives sent with each token (the hover and the next-token chart)
    after_temperature: bool  # False: log-probs are the model's own, before temperature and penalty
    internals: bool  # hidden states, attention and raw logits (logit lens, attention, beam tree, LM coder)
    shares_steps: bool  # requests arriving together share forward passes (gathering them pays)
    open_streams: int  # generation streams worth keeping open at once (more wait in the web queue)
    label: str  # how the status line and the about box name it, in a teacher's words


MAX_PROMPT_CHARS = 200_000


@dataclass
class SamplingSettings:
    temperature: float = field(default=0.8, metadata={"help": "0 = greedy (always the most likely token); higher = more random", "min": 0.0, "max": 2.0})
    top_p: float = field(default=0.95, metadata={"help": "keep the smallest set of tokens whose probabilities add up to p", "min": 0.01, "max": 1.0})
    top_k: int = field(default=50, metadata={"help": "keep only the k most likely tokens (0 = no limit)", "min": 0, "max": 1000})
    max_new_tokens: int = field(default=80, metadata={"help": "how many tokens to generate at most", "min": 1, "max": 1024})
    repetition_penalty: float = field(default=1.0, metadata={"help": "> 1 discourages repeating tokens already in the text", "min": 1.0, "max": 2.0})
    seed: int = field(default=0, metadata={"help": "same seed, same settings -> same text", "min": 0, "max": 2**31 - 1})
    chat_template: bool = field(default=False, metadata={"help": "wrap the prompt in the model's chat template (instruct models)"})

    def validate(self) -> SamplingSettings:
        """Clamp nothing silently: out-of-range values (from the API) are an InputError."""
        for name, f in self.__dataclass_fields__.items():
            value = getattr(self, name)
            lo, hi = f.metadata.get("min"), f.metadata.get("max")
            if isinstance(value, bool) or lo is None:
                continue
            if value is None or not isinstance(value, (int, float)) or math.isnan(value) or not lo <= value <= hi:
                raise InputError(f"{name} must be between {lo} and {hi} (got {value!r})")
            if f.type in ("int", int) and value != int(value):
                raise InputError(f"{name} must be a whole number (got {value!r})")
        self.top_k, self.max_new_tokens, self.seed = int(self.top_k), int(self.max_new_tokens), int(self.seed)
        return self


@dataclass
class TokenInfo:
    token_id: int
    text: str
    logprob: float  # natural log of p(token | prefix) under the model (temperature 1)
    alternatives: list[tuple[str, float]]  # top-5 (text, probability) under the model

    @property
    def prob(self) -> float:
        return math.exp(self.logprob)

    @property
    def bits(self) -> float:
        return -self.logprob / math.log(2)


@dataclass
class StreamEvent:
    text: str  # all generated text so far
    tokens: list[TokenInfo]
    done: bool = False
    finish_reason: str = ""  # length | eos | stopped | context
    notice: str = ""  # e.g. prompt truncation
    prompt_tokens: int = 0
    seconds: float = 0.0
    first_token_seconds: float | None = None
    sharing: int = 1  # sequences in this request's latest forward pass (1 when running alone)
    queue_position: int = 0  # 1-based place in the queue while waiting for room in the batch
    engine: str = ""  # where the model runs, when not here (e.g. "served by gpu-box:8000")
    model_note: str = ""  # what loading the model changed that a user should know (``registry.Loaded.note``)

    @property
    def total_bits(self) -> float:
        return sum(t.bits for t in self.tokens)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["total_bits"] = self.total_bits
        return data


@dataclass
class Candidate:
    token: str
    token_id: int
    prob: float  # under the model (temperature 1, no penalty)
    prob_tempered: float  # after the repetition penalty and temperature (temperature 0: penalty only)
    kept: bool  # survives top-k and top-p (greedy: the one token generation picks)
    prob_final: float  # the distribution the next token is drawn from (0 if cut)

"""A language model as a lossless compressor: next-token probabilities + arithmetic coding.

An arithmetic (range) coder spends -log2 p bits on a symbol of probability p, so a model
that predicts text well codes it in few bits (Delétang et al., "Language Modeling Is
Compression", 2024; Bellard's ts_zip). The coder is constriction's RangeEncoder; this
module only makes sure the decoder sees *exactly* the probabilities the encoder saw:

- one code path, ``_lockstep``, drives both directions: the same forward calls (a prefill,
  then one incremental KV-cache step per token), the same batch shapes, the same dtype;
  the only difference is whether a symbol comes from the input or from the decoder;
- probabilities are float32 softmax outputs of float32 logits, quantised by constriction
  (``Categorical(perfect=False)``) identically on both sides; each token is coded in two steps,
  one of the tokens the text has used so far or a new one, then which new one (``two_step.py``:
  the quantisation's floor over a 262,144-token vocabulary cost 0.5 % of a file), or in one step
  over the whole vocabulary in files made before it;
- the header records a fingerprint (weights and tokenizer hashes, precision, device type,
  CPU/GPU kernel family, library versions) and decoding refuses a mismatch up front.

Long texts: the token stream is cut into ``lanes`` contiguous pieces coded side by side,
one forward pass per step for all lanes (a batch), interleaved into one range-coder
stream lane by lane. Each lane's context grows to ``window`` tokens; then it is rebuilt
(one prefill) from the start token and the lane's last ``keep`` tokens. Both rules are
recorded in the header.

Primed lanes (the fast preset): every lane but the first starts in the middle of the text, where
the model, seeing nothing before, pays for the cold start (on alice29 its first 100 tokens cost
47 % more than the rest, fast preset). So the text's first ``prime`` tokens, its opening (a title, the
names, the style), are coded first as one lane, and then every lane reads them before its own
piece, the first lane continuing straight on. Both sides know the opening before the lanes start.

Any bytes: byte-level BPE vocabularies hold a token for each of the 256 bytes, so input
the tokenizer cannot reproduce (invalid UTF-8, odd normalisation) is coded with those
byte tokens where needed ("mixed" or "bytes" mode); other tokenizers fall back to LZMA.
Every round trip is checked against the sha256 of the input.

Hard-wrapped text (a Gutenberg book, an RFC) is coded unwrapped (``line_breaks.py``): the line breaks a
greedy fill at the text's width would put back are coded as spaces, CR LF as LF, and the decoder wraps
the text again. On the first 30 kB of alice29 the model's cross-entropy drops 3.9 % (Gemma 3 270M) to
6.0 % (SmolLM2) (docs/BENCHMARKS.md, "Soft line breaks").

Speed on CPU: a text coded in several lanes runs the model in bfloat16 where the CPU has bf16
matrix units (10x faster than float32 here for a batch of lanes); the softmax runs in float32 on the
output layer's logits (precision "bf16"). On alice29 bfloat16 costs 0.07 % in bits against float32
(0.01 % of it for the output layer), and the lock-step decoder, which reads all weights once per
step, gets 4x faster on its output layer. A text coded in one lane (up to ~2,000 tokens) runs in
float32, as generation does on a CPU: there bf16 saves little, and every token then costs exactly
the bits Generate showed for it.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import lzma
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import constriction
import numpy as np
import torch

from models.compression.text import adaptation, compact_header, line_breaks, mixing, second_opinion, two_step
from models.compression.text import container as text_container
from models.core import registry, text_start, torch_internals
from models.core.errors import Cancelled, CorruptFile, FingerprintMismatch, InputError
from models.engines import grouped_attention, kv_cache

CODEC = "lm-range-1"
# How a file's range coder codes each token: over the whole vocabulary at once (files before format versions
# 22-28 and JSON headers without "coding"), or in two steps (``two_step.py``), what LM Lab writes now.
ONE_STEP, TWO_STEP = "one-step", compact_header.TWO_STEP_CODING
CODINGS = (ONE_STEP, TWO_STEP)
_FAMILY = None  # constriction's Categorical family, created on first use


def _family():
    global _FAMILY
    if _FAMILY is None:
        _FAMILY = constriction.stream.model.Categorical(perfect=False)
    return _FAMILY


# constriction's leaky quantisation gives every symbol at least one unit of its 2^24 grid, so a token whose
# float32 probability underflowed to 0.0 still codes, at about 24 bits: the floor every bit count here uses.
MIN_P = 2.0**-24


def floored(probs: np.ndarray) -> np.ndarray:
    """Probabilities (..., vocab) as float64, floored at ``MIN_P`` and renormalised: never 0, so -log2 p is
    finite and the slices still tile [0, 1) (the arithmetic-coding pictures)."""
    p = np.maximum(np.asarray(probs, dtype=np.float64), MIN_P)
    return p / p.sum(axis=-1, keepdims=True)


# One record codes at most this much (the decoder refuses headers claiming more before allocating anything);
# the command line splits longer files into records of --chunk-bytes (1 MiB by default).
MAX_RECORD_BYTES = 16 * 2**20


SECOND_FOLDS = ("longest", "shared")  # CodecSettings.second_fold (second_opinion.py)


@dataclass(frozen=True)
class CodecSettings:
    window: int = field(default=1024, metadata={"help": "tokens of context a lane may see before it is rebuilt "
                                                        "(0 = the model's context length, keep = half of it)"})
    keep: int = field(default=512, metadata={"help": "tokens kept when a full context is rebuilt (the rest is forgotten)"})
    lanes: int = field(default=0, metadata={"help": "pieces coded side by side as one batch (0 = automatic)"})
    lane_tokens: int = field(default=450, metadata={"help": "automatic lane count: about this many tokens per lane"})
    max_lanes: int = field(default=96, metadata={"help": "upper bound on the automatic lane count"})
    short_tokens: int = field(default=4500, metadata={"help": "automatic lane count: texts up to this many tokens "
                                                               "(about 16 kB of English) get longer lanes"})
    short_lane_tokens: int = field(default=2000, metadata={"help": "automatic lane count of a short text: one lane, "
                                                                    "plus one per this many tokens"})
    precision: str = field(default="auto", metadata={"help": "auto, bf16 (bfloat16 weights, float32 softmax) or fp32"})
    threads: int = field(default=0, metadata={"help": "CPU threads for the model while coding (0 = torch's current "
                                                      "setting); recorded, and the decoder uses the same number"})
    prime: int = field(default=0, metadata={"help": "tokens of the text's opening, coded first, that every lane reads "
                                                    "before its own piece (0: the lanes start cold)"})
    adapt_every: int = field(default=0, metadata={"help": "online adaptation: steps between two updates of the model "
                                                          "on the tokens just coded (0: off)"})
    adapt_lr: float = field(default=1e-4, metadata={"help": "online adaptation: AdamW learning rate"})
    adapt_blocks: int = field(default=0, metadata={"help": "online adaptation: transformer blocks trained, from the "
                                                           "top (0: all)"})
    second_model: str = field(default="", metadata={"help": "a second model whose next-token distribution is mixed "
                                                            "with the model's ('': none; second_opinion.py)"})
    second_weight: float = field(default=0.7, metadata={"help": "the model's share when a second model is mixed in"})
    second_fold: str = field(default="longest", metadata={"help": "how the second model's tokens count for the "
                                                                  "model's: longest or shared (second_opinion.py)"})
    second_learn: float = field(default=0.0, metadata={"help": "learning rate of the model's share per context, "
                                                               "starting at second_weight (0: fixed; second_opinion.py)"})
    second_geometric: float = field(default=0.0, metadata={"help": "learning rate of the geometric mixture's "
                                                                   "exponents, which then codes half of each "
                                                                   "token (0: the linear mixture alone; "
                                                                   "second_opinion.py)"})

    @property
    def adapt(self) -> adaptation.AdaptSettings | None:
        if not self.adapt_every:
            return None
        return adaptation.AdaptSettings(self.adapt_every, self.adapt_lr, self.adapt_blocks)

    def lane_count(self, n_tokens: int) -> int:
        if n_tokens <= 0:
            return 1
        lanes = self.lanes or min(self.max_lanes, max(1, math.ceil(n_tokens / self.lane_tokens)))
        if not self.lanes and n_tokens <= self.short_tokens:
            # Each lane starts without context (~200 extra bits on prose): a short text, where that shows,
            # gets few long lanes (<= 5 % against one lane up to 16 kB); longer texts keep many for speed.
            lanes = min(lanes, 1 + n_tokens // self.short_lane_tokens)
        lanes = min(lanes, n_tokens)
        chunk = math.ceil(n_tokens / lanes)
        return math.ceil(n_tokens / chunk)  # no empty lane

    def layout(self, n_tokens: int) -> tuple[int, list[int]]:
        """(opening, lane lengths): the tokens coded first as one lane (the opening every lane reads), then
        the lanes' pieces of the rest. A text that one lane codes anyway gets no opening."""
        opening = min(self.prime, n_tokens)
        lanes = self.lane_count(n_tokens - opening)
        if lanes <= 1:
            opening, lanes = 0, self.lane_count(n_tokens)
        return opening, lane_lengths(n_tokens - opening, lanes)

    def for_model(self, loaded: registry.Loaded) -> CodecSettings:
        """Window 0 becomes the model's context length (keeping half of it on a rebuild, and an opening no
        longer than that)."""
        if self.window:
            return self
        limit = context_limit(loaded)
        return replace(self, window=limit, keep=limit // 2, prime=min(self.prime, limit // 2))


# Lanes trade ratio for speed. A step of the lock-step decoder reads every weight once whatever the batch, so
# on a CPU only many lanes keep it busy; but each lane starts without context, and on alice29 that costs
# +1.7 % with 8 lanes of the full 8k context and +6.7 % with 32 (teacher-forced cross-entropy).
# The rules a file can name (compact_header.PRESET_IDS): never change one, a file only stores its name.
RULES = {
    "fast": CodecSettings(),  # up to 96 short lanes with a 1,024-token window, each starting cold
    "compact": CodecSettings(window=0, lane_tokens=7000),  # few long lanes seeing the model's whole context
    # the same lanes, every one reading the text's first 128 tokens first (docs/BENCHMARKS.md: the opening's
    # length against bits and time)
    "fast-primed": CodecSettings(prime=128),
    # compact's lanes with SmolLM2 reading along (second_opinion.py; docs/BENCHMARKS.md: two models mixed)
    "two-models": CodecSettings(window=0, lane_tokens=7000, second_model="smollm2-135m-instruct", second_weight=0.7),
    # the same with the shared fold (second_opinion.py; docs/BENCHMARKS.md: the shared fold)
    "two-models-shared": CodecSettings(window=0, lane_tokens=7000, second_model="smollm2-135m-instruct",
                                       second_weight=0.75, second_fold="shared"),
    # the same with Gemma's share learned per context (second_opinion.LearnedWeights; docs/BENCHMARKS.md:
    # learned weights)
    "two-models-learned": CodecSettings(window=0, lane_tokens=7000, second_model="smollm2-135m-instruct",
                                        second_weight=0.75, second_fold="shared", second_learn=0.1),
    # the same, half of each token coded with the geometric mixture of the two (second_opinion.GeometricWeights),
    # in fewer, longer lanes (alice29: 4 instead of 6), every lane reading the text's first 128 tokens first
    # (docs/BENCHMARKS.md: geometric mixing and longer lanes)
    "two-models-geometric": CodecSettings(window=0, lane_tokens=9500, prime=128,
                                          second_model="smollm2-135m-instruct", second_weight=0.75,
                                          second_fold="shared", second_learn=0.1, second_geometric=0.005),
}
# What the command line and the app offer, by the names users know.
PRESETS = {
    "fast": RULES["fast-primed"],  # alice29 at ~1.5 kB/s on two CPU cores
    "compact": RULES["compact"],
    "two-models": RULES["two-models-geometric"],  # for Gemma 3 270M: the smallest files, at about a fifth of compact's speed
}
# The mixing coder's settings a preset codes with when they are not the default (mixing.DEFAULT, "mix-4"):
# "mix-3" was chosen on the two-models preset's recording of alice29 and is measured there only.
PRESET_MIXERS = {"two-models": mixing.MIX_3}


def lane_lengths(n_tokens: int, lanes: int) -> list[int]:
    """Contiguous pieces of ceil(n / lanes) tokens; the last one takes the rest."""
    if n_tokens == 0:
        return [0]
    chunk = math.ceil(n_tokens / lanes)
    return [min(chunk, n_tokens - i * chunk) for i in range(lanes)]


# --- bytes <-> tokens -----------------------------------------------------------------------


class TokenMap:
    """Turns any bytes into token ids and back, exactly."""

    def __init__(self, tokenizer) -> None:
        self.tok = tokenizer
        self.byte_table = _byte_table(tokenizer)  # bytes of every token id, or None
        # A byte-level vocabulary may lack a few single bytes it never saw in training (SmolLM2 has no token for
        # C0, C1, F1, F2, F5-FF and six control bytes). It still spells every other byte, so bytes that are not
        # UTF-8 are coded by the model unless one of those few occurs ("mixed"/"bytes" modes below).
        # ``byte_table`` stays None for such a vocabulary, so its plain-text files decode exactly as before.
        self.byte_ids: list[int | None] = [None] * 256
        self.pieces_table = self.byte_table  # bytes of every token id, for "mixed" and "bytes" modes
        if self.byte_table is not None:
            index = {b: i for i, b in enumerate(self.byte_table) if len(b) == 1 and i not in _special_ids(tokenizer)}
            self.byte_ids = [index.get(bytes([b])) for b in range(256)]
            if None in self.byte_ids:
                self.byte_table = None

    def _encode_text(self, text: str) -> list[int]:
        backend = getattr(self.tok, "backend_tokenizer", None)
        if backend is not None:  # no "sequence longer than the model" warning for long texts
            return list(backend.encode(text, add_special_tokens=False).ids)
        return list(self.tok.encode(text, add_special_tokens=False))

    def to_tokens(self, data: bytes) -> tuple[list[int], str, str]:
        """(ids, mode, note). mode: text | mixed | bytes (byte-level vocabularies) | lzma."""
        if not data:
            return [], "text", ""
        try:
            text = data.decode("utf-8")
            ids = self._encode_text(text)
            if self.to_bytes(ids, "text") == data:
                return ids, "text", ""
        except UnicodeDecodeError:
            pass
        if self.pieces_table is None:
            return [], "lzma", ("the model's tokenizer cannot spell this input exactly (it has no token for single "
                                "bytes), so it was coded with LZMA instead of the model")
        # Invalid UTF-8 bytes become single-byte tokens; valid runs are tokenized normally.
        runs = _utf8_runs(data)
        lacking = sorted({b for run, is_raw in runs if is_raw for b in run if self.byte_ids[b] is None})
        if not lacking:
            ids, raw = [], 0
            for run, is_raw in runs:
                if is_raw:
                    ids += [self.byte_ids[b] for b in run]
                    raw += len(run)
                else:
                    ids += self._encode_text(run.decode("utf-8"))
            if self.to_bytes(ids, "mixed") == data:
                return ids, "mixed", (f"{raw:,} bytes are not UTF-8 text (a Latin-1 file, say); the model coded each "
                                      "of them as a one-byte token")
        lacking = lacking or sorted({b for b in data if self.byte_ids[b] is None})
        if lacking:  # a byte no token spells: the model cannot write this input at all
            shown = " ".join(f"{b:02X}" for b in lacking[:8]) + (" …" if len(lacking) > 8 else "")
            return [], "lzma", (f"the model's vocabulary has no token for the byte{'s' if len(lacking) > 1 else ''} "
                                f"{shown} in this input (byte values in hexadecimal: not UTF-8 text), so the model "
                                "cannot write it; the input was coded with LZMA instead of the model")
        ids = [self.byte_ids[b] for b in data]
        return ids, "bytes", "the tokenizer does not reproduce this input exactly, so every byte was coded as one token"

    def to_bytes(self, ids: list[int], mode: str) -> bytes:
        table = self.byte_table if self.byte_table is not None else (
            self.pieces_table if mode in ("mixed", "bytes") else None)
        if table is not None:
            return b"".join(table[i] for i in ids)
        return self.tok.decode(ids, clean_up_tokenization_spaces=False).encode("utf-8")

    def piece(self, token_id: int) -> bytes:
        if self.byte_table is not None:
            return self.byte_table[token_id]
        return self.tok.decode([token_id], clean_up_tokenization_spaces=False).encode("utf-8")


def _special_ids(tokenizer) -> set[int]:
    return set(getattr(tokenizer, "all_special_ids", []) or [])


def _byte_table(tokenizer) -> list[bytes] | None:
    """For byte-level BPE (GPT-2, SmolLM2, Llama 3): the exact bytes of every token id."""
    # late: transformers is heavy and only this path needs it
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    decode_char = {c: b for b, c in bytes_to_unicode().items()}
    try:
        n = len(tokenizer)
        pieces = tokenizer.convert_ids_to_tokens(list(range(n)))
    except Exception:
        return None
    special = _special_ids(tokenizer)
    added = {i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
    table = []
    for i, piece in enumerate(pieces):
        if piece is None:
            table.append(b"")
        elif i in special or i in added:
            table.append(piece.encode("utf-8"))  # added tokens are stored as plain text
        elif all(c in decode_char for c in piece):
            table.append(bytes(decode_char[c] for c in piece))
        else:
            return None  # not a byte-level vocabulary
    return table


def _utf8_runs(data: bytes):
    """Split bytes into (valid UTF-8 run, False) and (invalid bytes, True) pieces, in order."""
    text = data.decode("utf-8", "surrogateescape")
    start, pos, raw = 0, 0, None
    out = []
    for ch in text:
        is_raw = 0xDC80 <= ord(ch) <= 0xDCFF
        if raw is None:
            raw = is_raw
        elif is_raw != raw:
            out.append((text[start:pos], raw))
            start, raw = pos, is_raw
        pos += 1
    if raw is not None:
        out.append((text[start:pos], raw))
    return [(piece.encode("utf-8", "surrogateescape"), is_raw) for piece, is_raw in out]


# --- the model side: one runner per (model, precision) ---------------------------------------


def _resolve_precision(precision: str, device: torch.device, lanes: int | None = None) -> str:
    """"auto": bf16 on a GPU; on a CPU bf16 where it has bf16 matrix units and the text is coded in several
    lanes (``lanes`` > 1, or None: not known), else fp32, the precision the app generates in on a CPU. One lane
    gains little from bf16 (SmolLM2, 2 CPU threads: fp32 takes 1.1-1.4x the time; docs/BENCHMARKS.md), and in fp32 a short text (the lesson's) gets
    exactly the probabilities Generate showed: in bf16 a token's cost moved by 0.2 bits on average, up to 2."""
    if precision not in {"auto", "bf16", "fp32"}:
        raise InputError(f"precision must be auto, bf16 or fp32 (got {precision!r})")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16"
    if device.type == "cpu" and torch_internals.cpu_runs_bf16() and (lanes is None or lanes > 1):
        return "bf16"
    return "fp32"


class _Runner:
    """Hidden states from the transformer body, then logits, softmaxed in float32."""

    def __init__(self, loaded: registry.Loaded, precision: str) -> None:
        model = loaded.model
        self.loaded, self.precision = loaded, precision
        self.device = next(model.parameters()).device
        body = model.base_model
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        if next(body.parameters()).dtype != dtype:
            body = copy.deepcopy(body).to(dtype)
        self.body = body.eval()
        self.config = model.config
        head = model.get_output_embeddings()
        self.head_w = head.weight.detach().to(self.device, dtype)
        bias = getattr(head, "bias", None)
        self.head_b = None if bias is None else bias.detach().to(self.device, dtype)
        self.vocab = self.head_w.shape[0]
        self.lock = threading.Lock()

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, cache) -> tuple[object, np.ndarray]:
        """ids (lanes, t) -> (cache, probabilities (lanes, vocab) float32 for the next token)."""
        out = self.body(input_ids=ids.to(self.device), cache=cache, use_cache=True)
        probs = torch.softmax(self.logits(out.last_hidden_state[:, -1]), dim=-1)
        return out.cache, probs.cpu().numpy()


    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., hidden) -> float32 logits (..., vocab)."""
        return torch.nn.functional.linear(hidden.to(self.head_w.dtype), self.head_w, self.head_b).float()

    def with_body(self, body: torch.nn.Module) -> _Runner:
        """The same runner (head, lock) coding with another body (the adapting one)."""
        other = copy.copy(self)
        other.body = body
        return other


_runners: dict[tuple, _Runner] = {}
_runners_lock = threading.Lock()


def _runner(loaded: registry.Loaded, precision: str, lanes: int | None = None) -> _Runner:
    """The runner for ``precision`` ("auto" resolved for a text coded in ``lanes`` lanes: ``_resolve_precision``)."""
    precision = _resolve_precision(precision, loaded.device.device, lanes)
    key = (id(loaded.model), precision)
    with _runners_lock:
        if key not in _runners:
            while len(_runners) >= 2:  # a bf16 copy of a body costs memory: keep few
                _runners.pop(next(iter(_runners)))
            _runners[key] = _Runner(loaded, precision)
        return _runners[key]


def _weights_sha256(loaded: registry.Loaded) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes), computed once per model."""
    if loaded.fingerprint:
        return loaded.fingerprint
    digest, seen = hashlib.sha256(), set()
    for name, tensor in sorted(loaded.model.state_dict().items()):
        if tensor.data_ptr() in seen:  # tied weights are hashed once
            continue
        seen.add(tensor.data_ptr())
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy() if t.numel() else b"")
    loaded.fingerprint = digest.hexdigest()
    return loaded.fingerprint


def _tokenizer_sha256(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def fingerprint(loaded: registry.Loaded, precision: str = "auto", lanes: int | None = None) -> dict:
    """Everything the probabilities depend on, as recorded in (and checked against) a file header."""
    runner = _runner(loaded, precision, lanes)
    device = runner.device
    if device.type == "cuda":
        kernel = f"{torch.cuda.get_device_name(device)} sm{''.join(map(str, torch.cuda.get_device_capability(device)))}"
    else:
        kernel = torch.backends.cpu.get_cpu_capability()
    return {
        "model": loaded.spec.key,
        "weights_sha256": _weights_sha256(loaded)[:16],  # 64 bits tell checkpoints apart; the header stays short
        "tokenizer_sha256": _tokenizer_sha256(loaded.tokenizer)[:16],
        "precision": runner.precision,
        "device_type": device.type,
        "kernel": kernel,
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "constriction": _version("constriction"),
        "codec": CODEC,
    }


def _second_opinion(loaded: registry.Loaded, second: registry.Loaded, precision: str,
                    weight: float, fold: str = "longest", learn: float = 0.0,
                    geometric: float = 0.0) -> second_opinion.SecondOpinion:
    """``second`` reading the text along with ``loaded`` (``CodecSettings.second_model``). With the shared fold
    (files since it) the second model's runner is a private copy attending with ``grouped_attention``, which
    does not copy the keys and values of its masked cache (its numbers differ from the default path's in the
    last bits, so files of the longest fold keep the default)."""
    runner, second_runner = _runner(loaded, precision), _runner(second, precision)
    if fold == "shared":
        second_runner = second_runner.with_body(copy.deepcopy(second_runner.body))
        grouped_attention.use(second_runner.body)
    second_map = TokenMap(second.tokenizer)

    def encode(data: bytes) -> list[int] | None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.reason == "unexpected end of data":
                return None  # a character split over two tokens: wait for the rest
            text = data.decode("utf-8", errors="replace")  # a lane that starts inside a character
        return second_map._encode_text(text)

    def pieces(loaded: registry.Loaded, table: list[bytes] | None, vocab: int) -> list[bytes | None]:
        out = second_opinion.token_bytes(loaded.tokenizer, table)
        return (out + [None] * vocab)[:vocab]  # rows of the output layer the tokenizer does not name

    first_pieces = pieces(loaded, TokenMap(loaded.tokenizer).pieces_table, runner.vocab)
    second_pieces = pieces(second, second_map.pieces_table, second_runner.vocab)
    longest = second_opinion.fold_map(second_pieces, first_pieces)
    shared = second_opinion.share_pairs(second_pieces, first_pieces, longest) if fold == "shared" else None
    return second_opinion.SecondOpinion(second_runner, encode, second_pieces, longest, first_pieces,
                                        context_limit(second), _start_id(second.tokenizer), weight, shared, learn,
                                        geometric)


def _start_id(tokenizer) -> int:
    """The context every lane starts from (``text_start.start_token_id``, shared with generation)."""
    return text_start.start_token_id(tokenizer)


def context_limit(loaded: registry.Loaded) -> int:
    config = loaded.model.config
    return int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 1024))


def _check_settings(s: CodecSettings, loaded: registry.Loaded) -> None:
    limit = context_limit(loaded)
    if not 2 <= s.window <= limit:
        raise InputError(f"window must be between 2 and the model's context length {limit} (got {s.window})")
    if not 0 <= s.keep < s.window - 1:
        raise InputError(f"keep must be at least 0 and less than window - 1 = {s.window - 1} (got {s.keep})")
    if s.lanes < 0 or s.max_lanes < 1 or s.lane_tokens < 1 or s.short_lane_tokens < 1 or s.short_tokens < 0 \
            or not 0 <= s.threads <= 1024:
        raise InputError("lanes, threads and short_tokens must be >= 0, max_lanes and the lane lengths >= 1")
    if not 0 <= s.prime <= s.keep:  # the opening must fit in what a rebuilt context keeps
        raise InputError(f"prime must be between 0 and keep = {s.keep} (got {s.prime})")
    if s.adapt_every < 0:
        raise InputError(f"adapt_every must be >= 0 (got {s.adapt_every})")
    if s.adapt is not None:
        s.adapt.check(adaptation.block_count(loaded.model.base_model))
    if s.second_model and s.second_fold not in SECOND_FOLDS:
        raise InputError(f"second_fold must be one of {', '.join(SECOND_FOLDS)} (got {s.second_fold!r})")
    if s.second_model and not 0.0 < s.second_weight < 1.0:
        raise InputError(f"second_weight must be between 0 and 1 (got {s.second_weight})")
    if s.second_model and not 0.0 <= s.second_learn <= 1.0:
        raise InputError(f"second_learn must be between 0 and 1 (got {s.second_learn})")
    if s.second_model and not 0.0 <= s.second_geometric <= 1.0:
        raise InputError(f"second_geometric must be between 0 and 1 (got {s.second_geometric})")
    if s.second_model and s.second_model == loaded.spec.key:
        raise InputError(f"the second model must be another model than the first ({loaded.spec.key}); the "
                         "two-models preset mixes SmolLM2-135M into Gemma 3 270M: pick gemma-3-270m as the model")


_threads_lock = threading.Lock()


class _fixed_threads:
    """Run with exactly ``n`` intra-op CPU threads (process-wide, so one coder at a time), then restore.

    The thread count can change how a CPU kernel splits a sum, hence the last bit of a probability,
    so it is part of the recipe: recorded by the encoder, adopted by the decoder."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self) -> None:
        _threads_lock.acquire()
        self.before = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.before)
        _threads_lock.release()


# --- the one loop both directions run ---------------------------------------------------------

Progress = Callable[[int, int], None]


def _lockstep(runner: _Runner, lengths: list[int], start_id: int, window: int, keep: int,
              choose: Callable[[int, list[int], np.ndarray], np.ndarray], progress: Progress | None = None,
              prefix: list[int] | None = None, threads: int = 0, adapter: adaptation.Adapter | None = None,
              second: second_opinion.SecondOpinion | None = None) -> None:
    """Run the model over all lanes step by step; ``choose`` gets (step, active lanes, their
    probabilities) and returns their symbols (from the input when encoding, from the decoder
    when decoding). Encoder and decoder call exactly this with the same arguments. With an ``adapter``
    (``runner`` coding with its body), every ``adapter.settings.every`` steps the model takes one
    optimiser step on each lane's tokens of those steps. With ``second``, a second model reads the same
    text and its distribution is mixed into the model's before ``choose`` sees it."""
    lanes, steps = len(lengths), max(lengths)
    if steps == 0:
        return
    prefix = list(prefix or [])
    history = [list(prefix) for _ in range(lanes)]  # tokens after the start token, per lane
    with runner.lock, _fixed_threads(threads or torch.get_num_threads()):
        first = torch.tensor([[start_id] + prefix] * lanes, dtype=torch.long)
        if first.shape[1] > window:  # a long prompt (sampling): keep its end
            first = torch.tensor([[start_id] + prefix[-keep:]] * lanes, dtype=torch.long) if keep else first[:, :1]
        # sized from the recorded settings alone, so encoder and decoder allocate the same buffers
        cache = kv_cache.preallocated(runner.config, min(window, first.shape[1] + steps))
        fixed = cache is not None  # else a dynamic cache, made anew on every rebuild
        if lanes > 1 and prefix:  # every lane reads the same opening: one row's prefill, copied to all lanes
            cache, probs = runner.forward(first[:1], cache)
            cache.batch_repeat_interleave(lanes)
            probs = np.repeat(probs, lanes, axis=0)
        else:
            cache, probs = runner.forward(first, cache)
        context = first.shape[1]
        total = sum(lengths)
        done = 0
        if second is not None:
            second.start_ids(lanes, prefix)
        for step in range(steps):
            active = [i for i in range(lanes) if lengths[i] > step]
            symbols = choose(step, active, probs[active] if second is None else second.mixed(active, probs[active]))
            chosen = dict(zip(active, (int(x) for x in symbols), strict=True))
            for lane in range(lanes):  # finished lanes carry the start token: a fixed, shared filler
                history[lane].append(chosen.get(lane, start_id))
            done += len(active)
            if progress is not None:
                progress(done, total)
            if step == steps - 1:
                break
            if second is not None:
                second.advance_ids(chosen)
            if adapter is not None and adapter.due(step + 1):
                _adapt(adapter, history, lengths, step + 1, start_id)
            if context + 1 > window:  # rebuild: start token + the last `keep` tokens, one prefill
                rows = [[start_id] + (h[-keep:] if keep else []) for h in history]
                if fixed:
                    kv_cache.reset(cache)
                cache, probs = runner.forward(torch.tensor(rows, dtype=torch.long), cache if fixed else None)
                context = len(rows[0])
            else:
                feed = torch.tensor([[h[-1]] for h in history], dtype=torch.long)
                cache, probs = runner.forward(feed, cache)
                context += 1


def _adapt(adapter: adaptation.Adapter, history: list[list[int]], lengths: list[int], steps_done: int,
           start_id: int) -> None:
    """One update on each lane's last ``every`` tokens (with the token before them as context); the
    tokens a finished lane carries as filler do not count."""
    span = adapter.settings.every
    rows = [([start_id] + h)[-(span + 1):] for h in history]
    first = steps_done - span  # the lane step of each row's first target
    mask = torch.tensor([[first + j < length for j in range(span)] for length in lengths])
    adapter.update(torch.tensor(rows, dtype=torch.long), mask)


def _code_tokens(runner: _Runner, opening: int, lengths: list[int], start_id: int, window: int, keep: int,
                 choose: Callable[[list[int], list[int], np.ndarray], np.ndarray], progress: Progress | None = None,
                 threads: int = 0, adapt: adaptation.AdaptSettings | None = None,
                 second: second_opinion.SecondOpinion | None = None) -> None:
    """A record's tokens in coding order: the ``opening`` tokens as one lane, then the lanes, every lane
    reading the opening first (``CodecSettings.layout``). ``choose`` gets (the text positions of the tokens
    coded now, the active lanes, their probabilities) and returns the symbols; the opening is lane 0.
    ``adapt``: the model learns online (``adaptation.py``), the same way in both directions."""
    adapter = None
    if adapt is not None:
        adapter = adaptation.Adapter(runner.body, runner.logits, adapt)
        runner = runner.with_body(adapter.model)
    total = opening + sum(lengths)
    said: list[int] = []
    if opening:
        def first(step: int, active: list[int], probs: np.ndarray) -> np.ndarray:
            symbols = choose([step], active, probs)
            said.append(int(symbols[0]))
            return symbols

        _lockstep(runner, [opening], start_id, window, keep, first,
                  None if progress is None else (lambda d, _t: progress(d, total)), threads=threads, adapter=adapter,
                  second=second)
    offsets = [opening + sum(lengths[:i]) for i in range(len(lengths))]

    def rest(step: int, active: list[int], probs: np.ndarray) -> np.ndarray:
        return choose([offsets[lane] + step for lane in active], active, probs)

    _lockstep(runner, lengths, start_id, window, keep, rest,
              None if progress is None else (lambda d, _t: progress(opening + d, total)), prefix=said, threads=threads,
              adapter=adapter, second=second)


def coding_order(n_tokens: int, opening: int, lanes: int) -> list[int]:
    """Text positions in the order the coder codes them (the opening, then the lanes step by step)."""
    lengths = lane_lengths(n_tokens - opening, lanes)
    offsets = [opening + sum(lengths[:i]) for i in range(lanes)]
    return list(range(opening)) + [offsets[lane] + step for step in range(max(lengths, default=0))
                                   for lane in range(lanes) if lengths[lane] > step]


# --- compress / decompress ---------------------------------------------------------------------


@dataclass
class TokenCost:
    text: str  # the token's bytes, decoded for display (invalid bytes shown as U+FFFD)
    bits: float  # -log2 p under the model (the ideal code length)


@dataclass
class LMResult:
    blob: bytes  # the whole compressed file
    header: dict
    tokens: list[TokenCost]  # bits under the distribution the coder used (the mixed one when mixing)
    seconds: float
    note: str = ""
    model_bits: float = 0.0  # sum of -log2 p under the model alone (equals the tokens' sum without a mixer)
    mix_trace: list[mixing.TokenTrace] | None = None  # per token, when compress(..., trace=True) mixed
    mix_seconds: float = 0.0  # time spent in the mixer (predict + update), part of ``seconds``
    breaks: line_breaks.LineBreaks | None = None  # how the text was unwrapped before coding (None: as it is)

    @property
    def n_bytes(self) -> int:
        return int(self.header["n_bytes"])

    @property
    def payload_bits(self) -> int:
        return 8 * int(self.header["payload_bytes"])

    @property
    def cross_entropy_bits(self) -> float:
        return float(sum(t.bits for t in self.tokens))

    @property
    def overhead(self) -> float:
        """Payload size over the model's cross-entropy, minus 1 (the coder's own cost)."""
        ce = self.cross_entropy_bits
        return self.payload_bits / ce - 1 if ce else 0.0


def check_tokens(n_tokens: int, n_bytes: int, loaded: registry.Loaded, max_tokens: int | None) -> None:
    """InputError, with the counts, when ``n_tokens`` (model steps) is over ``max_tokens`` (None: no limit).
    Bytes say little about tokens: a NUL byte is a whole token for SmolLM2, four letters of English about one."""
    if max_tokens is not None and n_tokens > max_tokens:
        raise InputError(f"the input is {n_tokens:,} tokens for {loaded.spec.label} ({n_bytes:,} bytes); the app "
                         f"codes at most {max_tokens:,} tokens with the model on this device: each token is one step "
                         f"of the model, and the result is decoded again to verify it. Shorten the text, or use the "
                         f"command line for long files: python -m models.compression text compress FILE")


def compress(data: bytes, loaded: registry.Loaded, settings: CodecSettings | None = None,
             progress: Progress | None = None, mixer: mixing.MixerSettings | None = None,
             trace: bool = False, unwrap: bool = True, second: registry.Loaded | None = None) -> LMResult:
    """Compress ``data`` with the model; with ``mixer`` the model's distribution is mixed with the
    n-gram and match predictors (``mixing.py``) and the settings are recorded in the file. ``trace``
    keeps what the mixer did per token (``LMResult.mix_trace``). ``unwrap``: code hard-wrapped lines
    as paragraphs when that pays (``line_breaks.py``). Call ``verify`` (decode and compare) before
    reporting a saving. ``second``: the model ``settings.second_model`` names, when already loaded."""
    return compress_many(data, loaded, [mixer], settings, progress, trace, unwrap, second=second)[0]


def compress_best(data: bytes, loaded: registry.Loaded, settings: CodecSettings | None = None,
                  progress: Progress | None = None, mixer: mixing.MixerSettings = mixing.DEFAULT,
                  unwrap: bool = True, second: registry.Loaded | None = None) -> LMResult:
    """The smaller of the mixing coder's file and the model alone's, both from one pass of the model: the
    default of the command line and the app. On a paragraph the classic predictors have little to learn
    from and the mixer can lose a few bits; this way a file never grows by mixing. ``seconds`` is the
    whole pass (both coders)."""
    started = time.perf_counter()
    alone, mixed = compress_many(data, loaded, [None, mixer], settings, progress, unwrap=unwrap, second=second)
    best = mixed if len(mixed.blob) < len(alone.blob) else alone
    return replace(best, seconds=time.perf_counter() - started)


def compress_many(data: bytes, loaded: registry.Loaded, mixers: list[mixing.MixerSettings | None],
                  settings: CodecSettings | None = None, progress: Progress | None = None,
                  trace: bool = False, unwrap: bool = True, codings: tuple[str, ...] = (TWO_STEP,),
                  second: registry.Loaded | None = None) -> list[LMResult]:
    """One file per entry of ``mixers`` (None: the model alone) and of ``codings`` (mixer by mixer) from ONE
    pass of the model: the files are exactly what ``compress`` writes with each mixer, because the model's
    probabilities do not depend on the coder. Each result's ``seconds`` is the pass's time less the other
    coders' own time (mixing and range coding), i.e. what coding with that mixer alone takes. ``unwrap``:
    as ``compress``; the tokens (``LMResult.tokens``) are then those of the unwrapped text. ``codings``:
    ``TWO_STEP`` (what LM Lab writes, ``two_step.py``) and/or ``ONE_STEP`` (each token over the whole
    vocabulary at once, as files before it; for comparisons). With ``settings.second_model`` a second model
    reads along and its distribution is mixed into the model's (``second_opinion.py``; ``second``: that
    model, when already loaded); texts the model does not read as text are coded without it."""
    if not codings or any(c not in CODINGS for c in codings):
        raise InputError(f"codings must be some of {', '.join(CODINGS)}")
    if not isinstance(data, (bytes, bytearray)):
        raise InputError("compress() takes bytes; encode text as UTF-8 first")
    if len(data) > MAX_RECORD_BYTES:
        raise InputError(f"{len(data):,} bytes is more than one record holds ({MAX_RECORD_BYTES:,}); code the file in "
                         "chunks (the command line's --chunk-bytes)")
    data = bytes(data)
    s = (settings or CodecSettings()).for_model(loaded)
    _check_settings(s, loaded)
    started = time.perf_counter()
    tmap = TokenMap(loaded.tokenizer)
    breaks = line_breaks.plan(data) if unwrap else None
    ids, mode, note = tmap.to_tokens(line_breaks.apply(data, breaks))
    if mode == "lzma":
        breaks = None  # LZMA codes the bytes as they are
    opening, lengths = s.layout(len(ids))
    lanes = len(lengths)
    reading = time.perf_counter() - started
    fp = fingerprint(loaded, s.precision, lanes)  # hashes the weights once per model: not counted as coding time
    runner = _runner(loaded, s.precision, lanes)
    started = time.perf_counter() - reading
    if any(i >= runner.vocab for i in ids):
        raise InputError("the tokenizer produced ids outside the model's vocabulary; this model cannot code this text")
    start_id = _start_id(loaded.tokenizer)
    threads = s.threads or torch.get_num_threads()
    header = {"format": "lmlab-text", "mode": mode, "n_bytes": len(data), "n_tokens": len(ids),
              "sha256": _data_hash(data), "lanes": lanes,
              "window": s.window, "keep": s.keep, "start_id": start_id, "threads": threads, "fingerprint": fp}
    if opening:  # absent in files without an opening, which read as they always did
        header["prime"] = opening
    if s.adapt is not None:  # absent without adaptation, likewise
        header["adapt"] = s.adapt.to_header()
    if breaks is not None:  # absent when the text was coded as it is, likewise
        header["line_breaks"] = breaks.to_header()
    opinion = None
    if s.second_model and mode == "text":  # absent without a second model, likewise
        second = second or registry.load_causal_lm(s.second_model)
        header["second"] = _second_header(fingerprint(second, runner.precision), s)
        opinion = _second_opinion(loaded, second, runner.precision, s.second_weight, s.second_fold, s.second_learn,
                                  s.second_geometric)
    pairs = [(mixer, coding) for mixer in mixers for coding in codings]
    if mode == "lzma":
        payload = lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)
        return [LMResult(text_container.pack(header, payload), {**header, "payload_bytes": len(payload)}, [],
                         time.perf_counter() - started, note) for _ in pairs]
    headers = []
    for mixer, coding in pairs:
        if mixer is not None:
            mixer.check()
        headers.append({**header, **({} if mixer is None else {"mixer": mixer.to_header()}),
                        **({"coding": coding} if coding == TWO_STEP else {})})

    coders = [_MixStep(mixer, lanes, trace) for mixer, _ in pairs]
    encoders = [_Encoder(coding, runner.vocab) for _, coding in pairs]
    bits = np.zeros((len(pairs), len(ids)), dtype=np.float64)
    model_bits = np.zeros(len(ids), dtype=np.float64)

    def choose(positions: list[int], active: list[int], probs: np.ndarray) -> np.ndarray:
        symbols = np.array([ids[p] for p in positions], dtype=np.int32)
        rows = np.arange(len(active))
        model_bits[positions] = -np.log2(np.maximum(probs[rows, symbols].astype(np.float64), MIN_P))
        for k, (mix, encoder) in enumerate(zip(coders, encoders, strict=True)):
            t0 = time.perf_counter()
            coded = mix.predict(active, probs)
            encoder.encode(coded, symbols)
            bits[k, positions] = -np.log2(np.maximum(coded[rows, symbols].astype(np.float64), MIN_P))
            mix.update(active, symbols)
            mix.coder_seconds += time.perf_counter() - t0
        return symbols

    _code_tokens(runner, opening, lengths, start_id, s.window, s.keep, choose, progress, threads=threads,
                 adapt=s.adapt, second=opinion)
    elapsed = time.perf_counter() - started
    pieces = [tmap.piece(i).decode("utf-8", "replace") for i in ids]
    results = []
    for k, ((mixer, _), mix, encoder) in enumerate(zip(pairs, coders, encoders, strict=True)):
        payload = encoder.range.get_compressed().astype("<u4").tobytes()
        blob = _pack(headers[k], payload, loaded, s, mixer)
        payload_bytes = read_header(blob)["payload_bytes"]  # as stored (version 3 cuts trailing zero bytes)
        tokens = [TokenCost(p, float(b)) for p, b in zip(pieces, bits[k], strict=True)]
        seconds = elapsed - sum(c.coder_seconds for c in coders) + mix.coder_seconds
        results.append(LMResult(blob, {**headers[k], "payload_bytes": payload_bytes}, tokens, seconds,
                                note,
                                float(model_bits.sum()), mix.trace, mix.seconds, breaks))
    return results


class _Encoder:
    """A range encoder that codes each step's tokens in one step (over the whole vocabulary) or two."""

    def __init__(self, coding: str, vocab: int) -> None:
        self.range = constriction.stream.queue.RangeEncoder()
        self.steps = two_step.TwoStepCoder(vocab, _family()) if coding == TWO_STEP else None

    def encode(self, probs: np.ndarray, symbols: np.ndarray) -> None:
        if self.steps is None:
            self.range.encode(symbols, _family(), probs)
        else:
            self.steps.encode(self.range, probs, symbols)


class _Decoder:
    """The inverse of ``_Encoder`` over a record's payload."""

    def __init__(self, coding: str, vocab: int, payload: bytes) -> None:
        self.range = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
        self.steps = two_step.TwoStepCoder(vocab, _family()) if coding == TWO_STEP else None

    def decode(self, probs: np.ndarray) -> np.ndarray:
        if self.steps is None:
            return np.asarray(self.range.decode(_family(), probs), dtype=np.int64)
        return self.steps.decode(self.range, probs)


class _MixStep:
    """The mixer as the lock-step loop calls it (both directions), timed; a no-op without a mixer."""

    def __init__(self, settings: mixing.MixerSettings | None, lanes: int, trace: bool = False) -> None:
        self.mixer = None if settings is None else mixing.Mixer(settings, lanes, trace)
        self.seconds = 0.0  # in the mixer
        self.coder_seconds = 0.0  # in the mixer and the range coder (set by the caller)

    @property
    def trace(self) -> list[mixing.TokenTrace] | None:
        return None if self.mixer is None else self.mixer.trace

    def predict(self, active: list[int], probs: np.ndarray) -> np.ndarray:
        if self.mixer is None:
            return probs
        started = time.perf_counter()
        mixed = self.mixer.predict(active, probs)
        self.seconds += time.perf_counter() - started
        return mixed

    def update(self, active: list[int], symbols: np.ndarray) -> None:
        if self.mixer is not None:
            started = time.perf_counter()
            self.mixer.update(active, symbols)
            self.seconds += time.perf_counter() - started


def _preset_of(s: CodecSettings, loaded: registry.Loaded) -> str | None:
    """The preset whose rules ``s`` follows (precision and threads aside), or None for custom settings."""
    for name in compact_header.PRESET_IDS:
        if replace(RULES[name], precision=s.precision, threads=s.threads).for_model(loaded) == s:
            return name
    return None


def _full_fingerprint(fp: dict, s: CodecSettings, preset: str, start_id: int, threads: int,
                      mixer: mixing.MixerSettings | None = None, second: dict | None = None) -> dict:
    """The fingerprint with the settings a version 3 or 4 file leaves out (they follow from the preset and,
    in version 4, from the named mixer settings). ``second``: the second model's fingerprint (preset
    "two-models"), whose weights and tokenizer join the model's in the digest."""
    if second is not None:
        fp = {**fp, **{k: f"{fp[k]}+{second[k]}" for k in ("model", "weights_sha256", "tokenizer_sha256")}}
    rules = {"preset": preset, "window": s.window, "keep": s.keep, "lanes": s.lanes, "lane_tokens": s.lane_tokens,
             "max_lanes": s.max_lanes, "start_id": start_id, "threads": threads}
    if s.prime:  # absent without an opening, so that older digests stay as they were
        rules["prime"] = s.prime
    if mixer is not None:  # absent for the model alone, so that version 3 digests stay as they were
        rules["mixer"] = mixer.to_header()
    return {**fp, "settings": rules}


def _pack(header: dict, payload: bytes, loaded: registry.Loaded, s: CodecSettings,
          mixer: mixing.MixerSettings | None = None) -> bytes:
    """The compact record (version 3, or 4 with named mixer settings) when a catalogue model ran a preset,
    else the version 2 JSON header (which records any mixer's settings in full)."""
    fp, preset = header["fingerprint"], _preset_of(s, loaded)
    mixer_id = None if mixer is None else mixing.name_of(mixer)
    if not compact_header.eligible(fp["model"], header["mode"], preset, fp["precision"], header["threads"]) \
            or (mixer is not None and mixer_id not in compact_header.MIXER_IDS):
        return text_container.pack(header, payload)
    second = header["second"]["fingerprint"] if "second" in header else None
    full = _full_fingerprint(fp, s, preset, header["start_id"], header["threads"], mixer, second)
    return compact_header.pack(model=fp["model"], mode=header["mode"], preset=preset, precision=fp["precision"],
                               threads=header["threads"], fingerprint_digest=compact_header.digest(full),
                               data_sha256=bytes.fromhex(header["sha256"]), n_bytes=header["n_bytes"],
                               n_tokens=header["n_tokens"], payload=payload, mixer=mixer_id,
                               line_breaks=_recorded_breaks(header), two_step=header.get("coding") == TWO_STEP)


def read_header(blob: bytes) -> dict:
    header, _ = text_container.unpack(blob)
    return header


def read_records(blob: bytes) -> list[tuple[dict, bytes]]:
    """(header, record bytes) of each record of a .lmlt file, in order. A file is one record, or several
    back to back (the command line codes a long input in chunks); the CLI and the app both read files
    through this and ``decompress_records``. CorruptFile when a record is damaged or the file is empty."""
    records = text_container.split_records(bytes(blob))
    if not records:
        raise CorruptFile(text_container.EMPTY)
    return [(read_header(r), r) for r in records]


def decompress_records(records: list[tuple[dict, bytes]], loaded: registry.Loaded | None = None,
                       progress: Progress | None = None, device: str | None = None) -> bytes:
    """The original bytes of a whole file (``read_records``): each record decoded and checked against its
    sha256, in order. The model named in the first record is loaded once (when ``loaded`` is None); each
    record's fingerprint is still checked. ``progress(done, total)`` counts tokens over all records."""
    if loaded is None and records:
        recorded = records[0][0].get("fingerprint")
        loaded = registry.load_causal_lm(recorded.get("model", "") if isinstance(recorded, dict) else "", device=device)
    total = sum(h.get("n_tokens", 0) for h, _ in records if isinstance(h.get("n_tokens", 0), int))
    parts, done = [], 0
    for header, record in records:
        offset = done
        step = None if progress is None else (lambda d, _t, offset=offset: progress(offset + d, max(total, 1)))
        parts.append(decompress(record, loaded, step, device))
        done += header.get("n_tokens", 0) if isinstance(header.get("n_tokens", 0), int) else 0
    return b"".join(parts)


def decompress(blob: bytes, loaded: registry.Loaded | None = None, progress: Progress | None = None,
               device: str | None = None, second: registry.Loaded | None = None) -> bytes:
    """The original bytes, checked against their sha256. Loads the file's model (and the second model a file
    made with one names) if none is given."""
    return decompress_many([blob], loaded, progress, device, second)[0][0]


@dataclass
class _Record:
    header: dict
    payload: bytes
    loaded: registry.Loaded
    lengths: list[int]
    opening: int = 0
    adapt: adaptation.AdaptSettings | None = None
    breaks: line_breaks.LineBreaks | None = None
    second: tuple[registry.Loaded, float, str] | None = None  # the second model, the model's weight, the fold


def _prepare(blob: bytes, loaded: registry.Loaded | None, device: str | None,
             second: registry.Loaded | None = None) -> _Record:
    """Unpack and check a record before any decoding: CorruptFile / FingerprintMismatch with the reason."""
    header, payload = text_container.unpack(blob)
    compact = header.get("version") in compact_header.VERSIONS
    if compact:
        header, loaded = _expand_compact(header, loaded, device, second)
    try:
        recorded = header["fingerprint"]
        n_tokens, mode = int(header["n_tokens"]), header["mode"]
        window, keep, start_id = int(header["window"]), int(header["keep"]), int(header["start_id"])
        threads, lanes = int(header["threads"]), int(header["lanes"])
        opening = header.get("prime", 0)
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptFile("The file is damaged: its header lacks a value the decoder needs, or has one of the "
                          "wrong kind.") from exc
    if type(opening) is not int:
        raise CorruptFile("the header's opening length is not a whole number: the file is corrupt")
    # A hostile header must not make the decoder allocate or run without bound: every token is at least one
    # byte, and the lanes are exactly the split the encoder derives from the token count (no empty lane).
    n_bytes = header.get("n_bytes")
    if type(n_bytes) is not int or not 0 <= n_tokens <= n_bytes or not 1 <= threads <= 1024 \
            or not 0 <= opening <= min(n_tokens, keep) or (opening and lanes < 2) \
            or lanes < 1 or CodecSettings(lanes=lanes).lane_count(n_tokens - opening) != lanes:
        raise CorruptFile("the header's sizes do not fit together: the file is corrupt")
    lengths = lane_lengths(n_tokens - opening, lanes)
    if n_bytes > MAX_RECORD_BYTES:
        raise CorruptFile(f"the header declares {n_bytes:,} bytes in one record; files made here hold at most "
                          f"{MAX_RECORD_BYTES:,} per record (the command line codes longer files in chunks)")
    if not isinstance(recorded, dict):
        raise CorruptFile("the header's fingerprint is malformed: the file is corrupt")
    if loaded is None:
        loaded = registry.load_causal_lm(recorded.get("model", ""), device=device)
    if not compact:  # versions 3 and 4 were checked by _expand_compact
        text_container.check_fingerprint(recorded, fingerprint(loaded, recorded.get("precision", "auto")))
    breaks = _recorded_breaks(header)
    if mode == "lzma":
        if breaks is not None or "second" in header:
            raise CorruptFile("The file is damaged: its header says LZMA and a model's settings at once.")
        return _Record(header, payload, loaded, lengths, opening)
    try:
        _check_settings(CodecSettings(window=window, keep=keep, threads=threads), loaded)
    except InputError as exc:
        raise CorruptFile(f"the header's coding settings are invalid ({exc}): the file is corrupt") from None
    if not 0 <= start_id < _runner(loaded, recorded["precision"]).vocab:
        raise CorruptFile("the header's start token is outside the model's vocabulary: the file is corrupt")
    if len(payload) % 4:
        raise CorruptFile("the payload is not a whole number of 32-bit words: the file is corrupt")
    _recorded_mixer(header)  # refuses a mixer this build cannot reproduce
    if header.get("coding", ONE_STEP) not in CODINGS:
        raise CorruptFile("the header names a way of coding tokens this LM Lab does not know (a newer LM Lab made "
                          "it), or it is damaged. Decode it with the LM Lab version that made it.")
    adapt = None
    if "adapt" in header:
        try:
            adapt = adaptation.AdaptSettings.from_header(header["adapt"])
            adapt.check(adaptation.block_count(loaded.model.base_model))
        except InputError as exc:
            raise CorruptFile(f"the header's adaptation settings are invalid ({exc}): the file is corrupt") from None
    return _Record(header, payload, loaded, lengths, opening, adapt, breaks,
                   _recorded_second(header, device, second) if "second" in header else None)


def _second_header(fp: dict, s: CodecSettings) -> dict:
    """The header's "second" entry: the second model's fingerprint and the mixture's settings. The fold and the
    learning rates only when not the first files' (longest, fixed, linear), so that those files read as they
    always did."""
    out = {"fingerprint": fp, "weight": s.second_weight}
    if s.second_fold != "longest":
        out["fold"] = s.second_fold
    if s.second_learn:
        out["learn"] = s.second_learn
    if s.second_geometric:
        out["geometric"] = s.second_geometric
    return out


def _recorded_second(header: dict, device: str | None, second: registry.Loaded | None
                     ) -> tuple[registry.Loaded, float, str, float, float]:
    """The second model a file names (``CodecSettings.second_model``), loaded and checked, its weight, its fold
    (``CodecSettings.second_fold``) and the learning rates of the weight and of the geometric mixture
    (``CodecSettings.second_learn``, ``CodecSettings.second_geometric``)."""
    recorded = header["second"]
    learn = recorded.get("learn", 0.0) if isinstance(recorded, dict) else None
    geometric = recorded.get("geometric", 0.0) if isinstance(recorded, dict) else None
    if header["mode"] != "text" or not isinstance(recorded, dict) or not isinstance(recorded.get("fingerprint"), dict) \
            or type(recorded.get("weight")) is not float or not 0.0 < recorded["weight"] < 1.0 \
            or recorded.get("fold", "longest") not in SECOND_FOLDS or type(learn) is not float or not 0.0 <= learn <= 1.0 \
            or type(geometric) is not float or not 0.0 <= geometric <= 1.0:
        raise CorruptFile("the header's second model is malformed: the file is corrupt")
    fp = recorded["fingerprint"]
    second = second or registry.load_causal_lm(str(fp.get("model", "")), device=device)
    text_container.check_fingerprint(fp, fingerprint(second, str(fp.get("precision", "auto"))))
    return second, recorded["weight"], recorded.get("fold", "longest"), learn, geometric


_SAME_PASS = ("n_tokens", "mode", "window", "keep", "start_id", "threads", "lanes", "prime", "adapt", "line_breaks",
              "second")


def decompress_many(blobs: list[bytes], loaded: registry.Loaded | None = None, progress: Progress | None = None,
                    device: str | None = None, second: registry.Loaded | None = None) -> list[tuple[bytes, float]]:
    """Decode records of the same text (``compress_many``: the same tokens, lanes and model, other coders)
    in ONE pass of the model: (bytes, seconds) per record, each checked against its sha256. Every
    record's decoder reads its own payload with its own mixer; the model is fed the token they all
    decoded, so each sees exactly the probabilities it would see alone (a disagreement is CorruptFile).
    A record's seconds are the pass's time less the other records' own decoding time."""
    started = time.perf_counter()
    records = [_prepare(blobs[0], loaded, device, second)]
    loaded = records[0].loaded
    records += [_prepare(b, loaded, device, second if records[0].second is None else records[0].second[0])
                for b in blobs[1:]]
    first = records[0].header

    def recipe(h: dict) -> dict:  # the fingerprint without the compact header's digest of it
        return {k: v for k, v in h["fingerprint"].items() if k != "digest"}

    if any(any(r.header.get(k) != first.get(k) for k in _SAME_PASS) or recipe(r.header) != recipe(first)
           for r in records[1:]):
        raise InputError("decompress_many decodes records of one text coded in one pass; these differ")
    lengths, n_tokens = records[0].lengths, int(first["n_tokens"])
    if first["mode"] == "lzma":
        out = []
        for r in records:
            try:  # bounded: an LZMA stream can claim far more than the header's size
                data = lzma.LZMADecompressor().decompress(r.payload, max_length=int(r.header["n_bytes"]) + 1)
            except lzma.LZMAError as exc:
                raise CorruptFile("The file is damaged: its LZMA-coded part does not decode.") from exc
            out.append((_verified(data, r.header), time.perf_counter() - started))
        return out
    runner = _runner(loaded, first["fingerprint"]["precision"])
    coders = [_MixStep(_recorded_mixer(r.header), len(lengths)) for r in records]
    decoders = [_Decoder(r.header.get("coding", ONE_STEP), runner.vocab, r.payload) for r in records]
    ids = [0] * n_tokens

    def choose(positions: list[int], active: list[int], probs: np.ndarray) -> np.ndarray:
        decoded = None
        for mix, decoder in zip(coders, decoders, strict=True):
            t0 = time.perf_counter()
            coded = mix.predict(active, probs)
            try:
                symbols = decoder.decode(coded)
            except (AssertionError, ValueError, IndexError) as exc:  # constriction's range decoder on words no encoder wrote
                raise CorruptFile("the payload cannot be decoded with this model: the file is corrupt") from exc
            if decoded is not None and not np.array_equal(symbols, decoded):
                raise CorruptFile("the records decode to different texts: one of them is corrupt")
            decoded = symbols
            mix.update(active, symbols)
            mix.coder_seconds += time.perf_counter() - t0
        for position, sym in zip(positions, decoded, strict=True):
            ids[position] = int(sym)
        return decoded

    opinion = None if records[0].second is None else \
        _second_opinion(loaded, records[0].second[0], runner.precision, *records[0].second[1:])
    _code_tokens(runner, records[0].opening, lengths, int(first["start_id"]), int(first["window"]),
                 int(first["keep"]), choose, progress, threads=int(first["threads"]), adapt=records[0].adapt,
                 second=opinion)
    tmap = TokenMap(loaded.tokenizer)
    try:
        data = line_breaks.restore(tmap.to_bytes(ids, first["mode"]), records[0].breaks)
    except (IndexError, UnicodeDecodeError) as exc:
        raise CorruptFile("the decoded tokens are not valid: the file is corrupt or was made elsewhere") from exc
    elapsed = time.perf_counter() - started
    spent = sum(c.coder_seconds for c in coders)
    return [(_verified(data, r.header), elapsed - spent + c.coder_seconds) for r, c in zip(records, coders, strict=True)]


def _recorded_breaks(header: dict) -> line_breaks.LineBreaks | None:
    """How the file's text was unwrapped (None: coded as it is); CorruptFile when malformed."""
    return line_breaks.LineBreaks.from_header(header["line_breaks"]) if "line_breaks" in header else None


def _recorded_mixer(header: dict) -> mixing.MixerSettings | None:
    """The mixer a file was coded with (None: the model alone). A decoder that would mix differently
    refuses the file: it would compute other probabilities and decode garbage."""
    if "mixer" not in header:
        return None
    try:
        return mixing.MixerSettings.from_header(header["mixer"])
    except InputError as exc:
        raise FingerprintMismatch(f"this file was compressed with a mixer this decoder cannot reproduce: {exc}. "
                                  "Decode it with the LM Lab version that made it.") from None


def _expand_compact(header: dict, loaded: registry.Loaded | None, device: str | None,
                    second: registry.Loaded | None = None) -> tuple[dict, registry.Loaded]:
    """A version 3 or 4 header: rebuild the settings from the preset, the model and (version 4) the named
    mixer settings, check the fingerprint digest against this setup's (naming what differs), and fill in what
    version 2 files record."""
    recorded = header["fingerprint"]
    if loaded is None:
        loaded = registry.load_causal_lm(recorded["model"], device=device)
    s = replace(RULES[header["preset"]], precision=recorded["precision"], threads=header["threads"]).for_model(loaded)
    start_id = _start_id(loaded.tokenizer)
    fp = fingerprint(loaded, recorded["precision"])
    mixer = mixing.NAMED[header["mixer_id"]] if header.get("mixer_id") else None
    second_fp = None
    if s.second_model and header["mode"] == "text":  # the preset's second model (other modes code without it)
        second = second or registry.load_causal_lm(s.second_model, device=device)
        second_fp = fingerprint(second, recorded["precision"])
    compact_header.check_fingerprint(bytes.fromhex(recorded["digest"]),
                                     _full_fingerprint(fp, s, header["preset"], start_id, header["threads"], mixer,
                                                       second_fp))
    if mixer is not None:
        header = {**header, "mixer": mixer.to_header()}
    if second_fp is not None:
        header = {**header, "second": _second_header(second_fp, s)}
    opening, lengths = s.layout(int(header["n_tokens"]))
    header = {**header, "fingerprint": {**fp, "digest": recorded["digest"]}, "window": s.window, "keep": s.keep,
              "start_id": start_id, "lanes": len(lengths)}
    if opening:
        header["prime"] = opening
    return header, loaded


def _data_hash(data: bytes) -> str:
    """The first 128 bits of the sha256: a wrong decode or a damaged file never matches by chance."""
    return hashlib.sha256(data).hexdigest()[:32]


def _verified(data: bytes, header: dict) -> bytes:
    recorded = str(header.get("sha256"))  # 128 bits in version 2 files, 32 in version 3
    if len(data) != header.get("n_bytes") or len(recorded) < 8 or _data_hash(data)[:len(recorded)] != recorded:
        raise CorruptFile("the decoded text does not match the original's checksum: the decoder computed other "
                          "probabilities than the encoder (another machine type?) or the file is corrupt. "
                          "Nothing was written.")
    return data


def verify(result: LMResult, loaded: registry.Loaded, progress: Progress | None = None) -> float:
    """Decode ``result`` and compare; returns the decode time in seconds (raises if it differs)."""
    started = time.perf_counter()
    decompress(result.blob, loaded, progress)
    return time.perf_counter() - started


def cancel_check(event: threading.Event | None, inner: Progress | None = None) -> Progress:
    """A progress callback that also stops the loop when ``event`` is set."""

    def callback(done: int, total: int) -> None:
        if event is not None and event.is_set():
            raise Cancelled("stopped by the user")
        if inner is not None:
            inner(done, total)

    return callback

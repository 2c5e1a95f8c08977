"""Inside one decoding step: the logit lens and the attention weights for a prefix.

- Logit lens (nostalgebraist, "interpreting GPT: the logit lens", LessWrong 2020): apply the model's
  final norm and output layer (lm_head) to the hidden state after each layer, as if the model stopped
  there; the top guesses per layer show how the next-token prediction takes shape through depth.
  Row 0 is the token embeddings, row L (the last layer) is exactly the model's own distribution.
- Attention weights (Vaswani et al. 2017): softmax(QK^T / sqrt(d)) of one layer and head, rows =
  query positions, columns = the positions they read from.

Both run in the model's turn (``models.engines.model_jobs``: between two decode steps of its scheduler) on an
*inspection view* of the loaded model: a copy of its module tree that shares every
parameter and buffer (no second copy of the weights) but has its own config, switched to eager
attention (the fused kernels do not return weights). Generation keeps using the original model and
its fast attention; nothing about it is mutated, and the hooks used here live on the view only.
"""

from __future__ import annotations

import copy
import threading
import weakref
from dataclasses import dataclass

import torch

from models.core import registry, text_start
from models.core.errors import InputError
from models.core.registry import Loaded
from models.engines.model_jobs import run_on_model

MAX_PREFIX_CHARS = 200_000
MAX_LENS_TOKENS = 1024  # the lens keeps one position per layer: cheap even for long prefixes
MAX_ATTENTION_TOKENS = 256  # all layers' weights are returned at once: layers x heads x n^2 floats
FINAL_NORM_NAMES = ("ln_f", "norm", "final_layernorm", "final_layer_norm", "norm_f", "ln_final")


@dataclass
class LensRow:
    layer: int  # 0 = token embeddings, 1..L = after that transformer block
    label: str
    token_ids: list[int]  # the top-k guesses, most likely first
    tokens: list[str]
    probs: list[float]  # their probabilities at this layer
    final_token_prob: float  # probability this layer gives the model's final top-1 token


@dataclass
class LogitLens:
    prefix_tokens: list[str]  # what the model read (after any cut)
    rows: list[LensRow]  # one per layer, embeddings first
    final_token: str  # the model's own most likely next token
    notice: str = ""


@dataclass
class AttentionMap:
    layer: int  # 1-based, as in the lens
    head: int  # 0-based
    n_layers: int
    n_heads: int
    tokens: list[str]  # the last `window` tokens of the prefix (query and key labels)
    weights: list[list[float]]  # (window, window): row = query position, column = key position
    earlier: list[float]  # per query row: the weight on keys before the window (rows sum to 1 with it)
    offset: int  # index of tokens[0] in the whole prefix
    total_tokens: int
    notice: str = ""


# --- the inspection view ---------------------------------------------------------------------

_views: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_views_lock = threading.Lock()
_view_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def inspection_view(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model`'s modules sharing its parameters and buffers, with eager attention.

    deepcopy with every tensor pre-registered in the memo copies the module objects and the config
    but not the weights (tied weights stay tied). `set_attn_implementation` then changes only the
    copy's config. Cached per model object; freed with it.
    """
    with _views_lock:
        view = _views.get(model)
        if view is None:
            memo = {id(t): t for t in [*model.parameters(), *model.buffers()]}
            view = copy.deepcopy(model, memo)
            view.set_attn_implementation("eager")
            view.eval()
            _views[model] = view
            _view_locks[view] = threading.Lock()
        return view


def final_norm(model: torch.nn.Module) -> torch.nn.Module:
    """The norm applied after the last block (GPT-2: transformer.ln_f; LLaMA/SmolLM2: model.norm)."""
    base = model.base_model
    for name in FINAL_NORM_NAMES:
        module = getattr(base, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    # Fallback: the last direct child of the base model that is a norm layer.
    norms = [m for _, m in base.named_children() if "norm" in type(m).__name__.lower()]
    if not norms:
        raise InputError(f"{type(model).__name__}: cannot find the final norm layer, so the logit lens is not available")
    return norms[-1]


def encode(loaded: Loaded, prefix: str, limit: int) -> tuple[torch.Tensor, str]:
    """Token ids (1, n) of `prefix`, keeping the last `limit` tokens. Returns (ids, notice).

    Raises InputError for an empty prefix.
    """
    if not isinstance(prefix, str) or not prefix.strip():
        raise InputError("the prefix is empty: type a prompt (and generate) first")
    prefix = prefix[-MAX_PREFIX_CHARS:]
    ids = text_start.with_start(loaded.tokenizer, loaded.tokenizer(prefix)["input_ids"])
    config = loaded.model.config
    context = int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or limit)
    room = min(limit, context)
    notice = ""
    if len(ids) > room:
        notice = f"The prefix has {len(ids) - 1:,} tokens; this view reads the last {room - 1:,}."
        ids = ids[:1] + ids[-(room - 1):]  # the start token stays: the same context as Generate and Compress
    return torch.tensor([ids], dtype=torch.long, device=loaded.device.device), notice


def _whole(name: str, value, lo: int, hi: int, where: str = "") -> int:
    """`value` as an int in lo..hi; InputError (naming the setting) for anything else, NaN included."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:  # NaN fails too
        raise InputError(f"{name} must be between {lo} and {hi}{where} (got {value!r})")
    return int(value)


def _token_text(tokenizer, token_id: int) -> str:
    return tokenizer.decode([int(token_id)])


# --- logit lens --------------------------------------------------------------------------------


def layer_distributions(loaded: Loaded, ids: torch.Tensor) -> torch.Tensor:
    """Next-token probabilities (L + 1, vocab) after the embeddings and after each of the L layers.

    Row i = softmax(lm_head(final_norm(h_i))) at the last position. The last block's output is taken
    *before* the final norm (a pre-hook on the norm), since `hidden_states[-1]` is already normed.
    """
    view = inspection_view(loaded.model)
    norm, head = final_norm(view), view.get_output_embeddings()

    def work() -> torch.Tensor:
        captured: list[torch.Tensor] = []
        with _view_locks[view], torch.inference_mode():
            hook = norm.register_forward_pre_hook(lambda _m, args: captured.append(args[0][:, -1]))
            try:
                out = view(ids, output_hidden_states=True, use_cache=False)
            finally:
                hook.remove()
            # hidden_states: embeddings, block 1 .. block L-1 outputs, then the normed final state.
            states = [h[:, -1] for h in out.hidden_states[:-1]] + [captured[-1]]
            stacked = torch.cat(states, 0)  # (L + 1, d_model)
            return head(norm(stacked)).float().cpu()  # (L + 1, vocab)

    return torch.softmax(run_on_model(loaded, work), -1)


def logit_lens(loaded: Loaded, prefix: str, top_k: int = 5) -> LogitLens:
    """The top-k next-token guesses of every layer for `prefix` (see the module docstring).

    Raises InputError for an empty prefix or top_k outside 1..20.
    """
    top_k = _whole("top-k", top_k, 1, 20)
    ids, notice = encode(loaded, prefix, MAX_LENS_TOKENS)
    probs = layer_distributions(loaded, ids)  # (L + 1, vocab)
    tok = loaded.tokenizer
    final_id = int(probs[-1].argmax())
    top = torch.topk(probs, top_k, dim=-1)
    n_layers = probs.shape[0] - 1
    rows = []
    for i in range(n_layers + 1):
        token_ids = top.indices[i].tolist()
        label = "embeddings" if i == 0 else f"layer {i}" + (" (output)" if i == n_layers else "")
        rows.append(LensRow(i, label, token_ids, [_token_text(tok, t) for t in token_ids], top.values[i].tolist(),
                            float(probs[i, final_id])))
    prefix_tokens = [_token_text(tok, t) for t in ids[0, 1:].tolist()]  # the text's tokens, not the start token
    return LogitLens(prefix_tokens, rows, _token_text(tok, final_id), notice)


# --- attention ---------------------------------------------------------------------------------


def attention_shape(loaded: Loaded) -> tuple[int, int]:
    """(number of layers, number of attention heads) of the model."""
    shape = _shape(loaded.model.config)
    if shape is None:
        raise InputError(f"{type(loaded.model).__name__}: cannot read the number of layers and heads from its config")
    return shape


def _shape(config) -> tuple[int, int] | None:
    text = config.get_text_config()
    layers = getattr(text, "num_hidden_layers", None) or getattr(text, "n_layer", None)
    heads = getattr(text, "num_attention_heads", None) or getattr(text, "n_head", None)
    return (int(layers), int(heads)) if layers and heads else None


def config_shape(model_key: str) -> tuple[int, int] | None:
    """(layers, heads) of a catalogue model from its config alone (no weights loaded); None if unreadable."""
    from transformers import AutoConfig  # late: transformers is heavy and only this path needs it

    try:
        config = AutoConfig.from_pretrained(**registry.hub_load_kwargs(registry.get(model_key, registry.CAUSAL_LM)))
    except Exception:  # offline hub model, missing folder: the sliders keep their range, the event says why
        return None
    return _shape(config)


def attention_map(loaded: Loaded, prefix: str, layer: int = 1, head: int = 0, window: int = 24) -> AttentionMap:
    """Attention weights of one layer and head (both counted from 1) over the last `window` tokens.

    The model reads the whole prefix (up to MAX_ATTENTION_TOKENS); the picture keeps the last `window`
    rows and columns, and `earlier` holds each row's weight on the keys before them.
    Raises InputError for an empty prefix or a layer, head or window out of range.
    """
    n_layers, n_heads = attention_shape(loaded)
    layer = _whole("layer", layer, 1, n_layers, " for this model")
    head = _whole("head", head, 1, n_heads, " for this model")
    window = _whole("window", window, 2, 64)
    ids, notice = encode(loaded, prefix, MAX_ATTENTION_TOKENS)
    view = inspection_view(loaded.model)

    def work() -> torch.Tensor:
        with _view_locks[view], torch.inference_mode():
            out = view(ids, output_attentions=True, use_cache=False)
            return out.attentions[layer - 1][0, head - 1].float().cpu()  # (n, n): query x key

    weights = run_on_model(loaded, work)
    n = weights.shape[0]
    start = max(0, n - window)
    shown = weights[start:, start:]
    earlier = weights[start:, :start].sum(-1)
    tok = loaded.tokenizer
    tokens = [_token_text(tok, t) for t in ids[0, start:].tolist()]
    return AttentionMap(layer, head, n_layers, n_heads, tokens, shown.tolist(), earlier.tolist(), start, n, notice)

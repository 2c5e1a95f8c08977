"""Training data: WikiText-2 / Canterbury / an uploaded text for causal LM; CoNLL-2003 / Twitter NER /
an uploaded CoNLL file for token classification.

Hub datasets are used when the hub is reachable; otherwise the local data folder
(``models.core.settings.data_dir()``) or the embedded assets. Every loader returns plain
Python lists, so the trainer and the tests need nothing but this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from models.core import assets, policy, registry, settings
from models.core.errors import InputError
from models.ner import conll
from models.training.config import CAUSAL_LM, TOKEN_CLASSIFICATION

# Labels short enough to show whole in the form's picker (about 40 characters at 1400 and 800 px); the data
# set's own description, size and preview are shown below it once chosen.
TEXT_DATASETS = {
    "wikitext-2": "WikiText-2 (Wikipedia articles)",
    "canterbury": "Canterbury texts (embedded, offline)",
    "upload": "your own .txt file",
}
NER_DATASETS = {
    "conll2003": "CoNLL-2003 news (PER, ORG, LOC, MISC)",
    "twitter-ner": "Twitter NER sample (embedded, offline)",
    "upload": "your own CoNLL file (word ... tag)",
}
# The data sets that come from the hub or a local copy (never from the embedded assets): the files a copy needs.
LOCAL_FILES = {"wikitext-2": ("valid.txt", "test.txt"), "conll2003": ("train.txt", "valid.txt", "test.txt")}
# Per task: the preferred data set, and the embedded one that always loads (offline, no data folder).
DEFAULTS = {CAUSAL_LM: ("wikitext-2", "canterbury"), TOKEN_CLASSIFICATION: ("conll2003", "twitter-ner")}
MAX_UPLOAD_BYTES = 200 * 2**20
Sentence = tuple[list[str], list[str]]  # (words, IOB tags)


def read_conll(path: Path) -> list[Sentence]:
    """A CoNLL file (the NER tab's reader: line numbers in its messages) -> (words, tags) pairs."""
    try:
        return [(s.tokens, s.tags) for s in conll.read_file(path)]
    except InputError as exc:
        raise InputError(f"{Path(path).name}: {exc}") from exc


@dataclass
class TextData:
    train: list[str]
    eval: list[str]  # the split evaluated every N steps
    test: list[str]  # the split of the final perplexity and BLEU
    note: str = ""


@dataclass
class NerData:
    train: list[Sentence]
    eval: list[Sentence]
    test: list[Sentence]
    labels: list[str] = field(default_factory=list)
    note: str = ""


def datasets_for(task: str) -> dict[str, str]:
    return TEXT_DATASETS if task == CAUSAL_LM else NER_DATASETS


def unavailable(dataset: str) -> str:
    """Why ``dataset`` cannot load here, in words, or "" when it can (embedded, upload, hub or local copy)."""
    files = LOCAL_FILES.get(dataset)
    if files is None or registry.hub_reachable() or _local_copy(dataset):
        return ""
    return _missing(dataset)


def default_dataset(task: str) -> str:
    """The task's preferred data set when it can load here, else the embedded one (which always can)."""
    preferred, embedded = DEFAULTS[TOKEN_CLASSIFICATION if task == TOKEN_CLASSIFICATION else CAUSAL_LM]
    return embedded if unavailable(preferred) else preferred


def choices(task: str) -> list[tuple[str, str]]:
    """(label, key) pairs for the form; a data set that cannot load here says so in its label."""
    out = []
    for key, label in datasets_for(task).items():
        out.append((f"{label} — not available here (offline, and not in a data folder)" if unavailable(key) else label,
                    key))
    return out


def load(task: str, dataset: str, upload: str = "") -> TextData | NerData:
    if dataset not in datasets_for(task):
        raise InputError(f"dataset {dataset!r} does not fit the task {task}: use one of "
                         f"{', '.join(datasets_for(task))}")
    data = _load_text(dataset, upload) if task == CAUSAL_LM else _load_ner(dataset, upload)
    _check_size(data)
    return data


# --- causal LM ------------------------------------------------------------------------------


# What a reader of the preview meets in WikiText-2 (Merity et al. 2016): its text was tokenized, numbers and hyphens
# split with @ marks; the non-raw version (the usual local copy) replaced rare words by <unk>.
_WIKITEXT_MARKS = "In WikiText-2 `@-@` is a hyphen inside a word, `@,@` and `@.@` split numbers"
_WIKITEXT_UNK = ", and `<unk>` stands for a rare word the corpus left out"


def _load_text(dataset: str, upload: str) -> TextData:
    if dataset == "wikitext-2":
        if registry.hub_reachable():
            from datasets import load_dataset  # late: datasets is heavy and only this path needs it

            ds = load_dataset("Salesforce/wikitext", "wikitext-2-raw-v1")
            return TextData(_lines(ds["train"]["text"]), _lines(ds["validation"]["text"]), _lines(ds["test"]["text"]),
                            "hub Salesforce/wikitext (wikitext-2-raw-v1): train / validation / test. " + _WIKITEXT_MARKS)
        folder = _local("wikitext-2")
        valid = _lines((folder / "valid.txt").read_text(encoding="utf-8").splitlines())
        test = _lines((folder / "test.txt").read_text(encoding="utf-8").splitlines())
        return TextData(valid, test, test, "the local WikiText-2 copy has no train split: training on the validation "
                        "split and evaluating on the test split. " + _WIKITEXT_MARKS + _WIKITEXT_UNK)
    if dataset == "canterbury":
        folder = assets.path("canterbury")
        train, test = [], []
        for path in sorted(folder.glob("*.txt")):
            lines = _lines(path.read_text(encoding="latin-1").splitlines())
            cut = int(len(lines) * 0.9)
            train += lines[:cut]
            test += lines[cut:]
        return TextData(train, test, test, "Canterbury texts: the first 90% of each file trains, the last 10% tests")
    lines = _lines(_read_upload_text(upload).splitlines())
    cut = int(len(lines) * 0.9)
    return TextData(lines[:cut], lines[cut:], lines[cut:], "your file: the first 90% of its lines train, the last "
                    "10% test")


def _lines(lines) -> list[str]:
    return [line.strip() for line in lines if line and line.strip()]


def _read_upload_text(upload: str) -> str:
    path = _upload_path(upload)
    return conll.decode_upload(path.read_bytes(), what=path.name)


def _upload_path(upload: str) -> Path:
    if not upload:
        raise InputError("no file was uploaded")
    path = policy.check_upload_path(upload)  # public mode: an upload, never a server path named through the API
    if not path.is_file():
        raise InputError(f"the uploaded file {path.name} is gone; upload it again")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path.name} is empty")
    if size > MAX_UPLOAD_BYTES:
        raise InputError(f"{path.name} is {size / 2**20:.0f} MiB; the limit is {MAX_UPLOAD_BYTES // 2**20} MiB")
    return path


# --- token classification ---------------------------------------------------------------------


def _load_ner(dataset: str, upload: str) -> NerData:
    if dataset == "conll2003":
        if registry.hub_reachable():
            from datasets import load_dataset  # late: datasets is heavy and only this path needs it

            ds = load_dataset("eriktks/conll2003")
            names = ds["train"].features["ner_tags"].feature.names

            def split(name):
                return [(row["tokens"], [names[t] for t in row["ner_tags"]]) for row in ds[name] if row["tokens"]]

            return _ner(split("train"), split("validation"), split("test"), "hub eriktks/conll2003")
        folder = _local("conll2003")
        parts = [read_conll(folder / f"{name}.txt") for name in ("train", "valid", "test")]
        return _ner(*parts, "local CoNLL-2003 copy: train / valid / test")
    if dataset == "twitter-ner":
        sentences = read_conll(assets.path("twitter-ner") / "ner.txt")
        return _ner(*_split(sentences), "Twitter NER sample: 80% train, 10% validation, 10% test (in file order)")
    path = _upload_path(upload)
    sentences = read_conll(path)
    return _ner(*_split(sentences), "your file: 80% train, 10% validation, 10% test (in file order)")


def _split(items: list) -> tuple[list, list, list]:
    a, b = int(len(items) * 0.8), int(len(items) * 0.9)
    return items[:a], items[a:b], items[b:]


def _ner(train, eval_, test, note) -> NerData:
    labels = sorted({t for _, tags in train + eval_ + test for t in tags}, key=lambda t: (t != "O", t[2:], t))
    return NerData(train, eval_, test, labels, note)


def _local_copy(name: str) -> Path | None:
    """The data folder's copy of ``name`` when it has every file the loader reads."""
    root = settings.data_dir()
    folder = root / name if root else None
    return folder if folder is not None and all((folder / f).is_file() for f in LOCAL_FILES[name]) else None


def _missing(name: str) -> str:
    return (f"{name} needs the Hugging Face hub, which is not reachable, or a local copy: {settings.DATA_HINT} "
            f"({name}/{LOCAL_FILES[name][0]})")


def _local(name: str) -> Path:
    folder = _local_copy(name)
    if folder is None:
        raise InputError(_missing(name))
    return folder


def _check_size(data: TextData | NerData) -> None:
    if isinstance(data, TextData):
        words = sum(len(line.split()) for line in data.train)
        if words < 64 or not data.test:
            raise InputError(f"the dataset is too small to train on: {words} words for training and "
                             f"{len(data.test)} lines for testing; give it at least a few hundred words")
    else:
        if len(data.train) < 8 or not data.test or not data.eval:
            raise InputError(f"the dataset is too small: {len(data.train) + len(data.eval) + len(data.test)} "
                             "sentences; a CoNLL file needs at least 10 sentences (blank line between sentences)")
        if len(data.labels) < 2:
            raise InputError("the dataset has a single tag; NER needs entity tags besides O")


def _sentence(note: str) -> str:
    """A note as a sentence of its own in the summary (capital first letter)."""
    return note[:1].upper() + note[1:]


def describe(data: TextData | NerData, n_preview: int = 4) -> tuple[str, list[list[str]]]:
    """A one-line size summary and a few preview rows, for the form."""
    if isinstance(data, TextData):
        words = [sum(len(x.split()) for x in split) for split in (data.train, data.eval, data.test)]
        summary = (f"{len(data.train):,} lines ({words[0]:,} words) to train, {len(data.test):,} lines "
                   f"({words[2]:,} words) to test. {_sentence(data.note)}")
        return summary, [[line[:300]] for line in data.train[:n_preview]]
    summary = (f"{len(data.train):,} / {len(data.eval):,} / {len(data.test):,} sentences (train / validation / "
               f"test), {len(data.labels)} tags: {' '.join(data.labels)}. {_sentence(data.note)}")
    rows = [[" ".join(f"{w}/{t}" if t != "O" else w for w, t in zip(words, tags, strict=True))[:300]]
            for words, tags in data.train[:n_preview]]
    return summary, rows

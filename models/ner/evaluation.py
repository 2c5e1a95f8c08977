"""Score a tagger on CoNLL-2003 (hub, local data folder, or an uploaded CoNLL file) with seqeval."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from models.core import registry, settings
from models.core.errors import InputError
from models.ner import conll, tagger

HUB_DATASET = "eriktks/conll2003"
SPLITS = {"test": ("test", "test.txt"), "valid": ("validation", "valid.txt")}


@dataclass
class Mistake:
    index: int  # sentence number in the evaluated set
    tokens: list[str]
    gold: list[str]
    predicted: list[str]


@dataclass
class Report:
    model: str
    source: str  # where the sentences came from, in words
    sentences: int
    tokens: int
    scores: conll.Scores  # conlleval-compatible (seqeval's default mode)
    seconds: float
    mistakes: list[Mistake] = field(default_factory=list)
    unknown_types: list[str] = field(default_factory=list)  # gold types the model cannot predict
    strict: conll.Scores | None = None  # the same predictions scored in seqeval's strict IOB2 mode

    @property
    def sentences_per_second(self) -> float:
        return self.sentences / self.seconds if self.seconds else 0.0


def available_splits() -> list[str]:
    """The CoNLL-2003 splits that load here: all of them with the hub, else those in the data folder."""
    if registry.hub_reachable():
        return list(SPLITS)
    folder = settings.data_dir()
    return [s for s, (_, name) in SPLITS.items() if folder is not None and (folder / "conll2003" / name).is_file()]


def missing_note() -> str:
    """What the Evaluate form says when CoNLL-2003 (or a split of it) is not here; "" when all is."""
    missing = [s for s in SPLITS if s not in available_splits()]
    if not missing:
        return ""
    folder = settings.data_dir()
    where = (f"the data folder {folder} has no conll2003/{SPLITS[missing[0]][1]}" if folder else
             f"no data folder is set: {settings.DATA_HINT}")
    return (f"CoNLL-2003 {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not available here: the hub "
            f"is not reachable and {where}. Upload a CoNLL file instead")


def load_conll2003(split: str) -> tuple[list[conll.Sentence], str]:
    """The CoNLL-2003 split from the hub when reachable, else from the local data folder."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose test or valid")
    hub_split, filename = SPLITS[split]
    if registry.hub_reachable():
        try:
            import datasets  # late: datasets is heavy and only this path needs it

            ds = datasets.load_dataset(HUB_DATASET, split=hub_split)
            names = ds.features["ner_tags"].feature.names
            sentences = [conll.Sentence(list(r["tokens"]), [names[t] for t in r["ner_tags"]]) for r in ds]
            return sentences, f"{HUB_DATASET} ({hub_split}, hub)"
        except Exception:  # the hub answered but the dataset did not load: the local copy still works
            pass
    folder = settings.data_dir()
    local = folder / "conll2003" / filename if folder else None
    if local is not None and local.exists():
        return conll.read_file(local), f"CoNLL-2003 {split} (local data folder)"
    raise InputError(f"CoNLL-2003 is not reachable: the hub is offline and there is no conll2003/{filename} in "
                     f"a data folder: {settings.DATA_HINT}. Upload a CoNLL file instead")


def predict(tagger_: tagger.Tagger, sentences: list[conll.Sentence],
            progress: tagger.Progress | None = None) -> list[list[str]]:
    """Predicted BIO tags for each gold token: the tokens are joined by spaces, tagged, and projected back."""
    joined = [s.text_and_spans() for s in sentences]
    # "first": a word takes its first sub-word's label, the convention CoNLL-2003 scores were reported with.
    tagged = tagger_.tag_many([text for text, _ in joined], "first", 0.0, progress)
    return [conll.spans_to_bio(spans, t.entities) for (_, spans), t in zip(joined, tagged, strict=True)]


def evaluate(key: str, dataset: str = "test", upload: str | Path | None = None, limit: int = 0,
             progress: tagger.Progress | None = None, max_mistakes: int = 6) -> Report:
    """seqeval precision/recall/F1 per type, micro and macro, of model ``key`` on a CoNLL set: in the
    conlleval-compatible default mode (``scores``) and in strict IOB2 mode (``strict``)."""
    spec = registry.get(key, registry.TOKEN_CLASSIFICATION)  # an unknown or refused model fails before any data
    if dataset == "upload":
        if not upload:
            raise InputError("choose a CoNLL file to upload, or pick CoNLL-2003 test or valid")
        sentences, source = conll.read_file(upload), f"uploaded file {Path(upload).name}"
    else:
        sentences, source = load_conll2003(dataset)
    if not all(s.tags for s in sentences):
        raise InputError("the evaluation file needs a gold tag on every token (lines like 'Paris B-LOC')")
    if limit and limit > 0:
        sentences = sentences[:limit]
        source += f", first {len(sentences)} sentences"
    model = tagger.load(key)
    gold_types = conll.entity_types(s.tags for s in sentences)
    known = set(model.labels)
    if gold_types and not gold_types & known:
        raise InputError(f"this model tags {', '.join(sorted(known)) or 'no entity types'}, and the file's types are "
                         f"{', '.join(sorted(gold_types))}: none in common, so there is nothing to score. Pick a "
                         f"model trained on these labels")
    started = time.monotonic()
    predicted = predict(model, sentences, progress)
    seconds = time.monotonic() - started
    gold = [s.tags for s in sentences]
    mistakes = [Mistake(i, s.tokens, g, p) for i, (s, g, p) in enumerate(zip(sentences, gold, predicted, strict=True))
                if g != p][:max_mistakes]
    return Report(spec.label, source, len(sentences), sum(len(s.tokens) for s in sentences),
                  conll.score(gold, predicted), seconds, mistakes, sorted(gold_types - known),
                  conll.score(gold, predicted, strict=True))

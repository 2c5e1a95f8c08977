"""Named-entity tagging behind one interface, whichever backend tags.

- ``TransformersTagger``: any token-classification folder or hub id (dslim/bert-base-NER, a fine-tuned run).
  Texts longer than the model's window are cut into overlapping windows (``stride`` tokens shared);
  each sub-word keeps the prediction of the window where it sits farthest from an edge, so an entity
  on a window boundary is seen with context on both sides and comes out once, whole.
- ``SpacyTagger``: the embedded spaCy ``en_core_web_sm`` pipeline, its OntoNotes types mapped to CoNLL's.

Both return ``Tagged``: entities (label, score, character span into the original text) and the
word-piece view (each sub-word with its B-/I-/O tag). The UI and the evaluator never ask which.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import regex

from models.core import adapters, handout, registry, settings, spreadsheet
from models.core.device import pick
from models.core.errors import InputError, LMLabError, ModelUnavailable
from models.engines import engine
from models.engines.batching import DEFAULT_WINDOW_S, Gatherer
from models.ner import conll

AGGREGATIONS = ("none", "simple", "first", "average", "max")
MAX_TEXT_CHARS = 2_000_000  # 1 MB of news text runs in bounded memory; more belongs in a batch file
SPACY_KEY = "spacy-en_core_web_sm"

# OntoNotes -> CoNLL-2003. Dates, times, numbers, money, percentages and quantities have no CoNLL type.
ONTONOTES_TO_CONLL = {
    "PERSON": "PER", "ORG": "ORG", "GPE": "LOC", "LOC": "LOC", "FAC": "LOC",
    "NORP": "MISC", "EVENT": "MISC", "WORK_OF_ART": "MISC", "LAW": "MISC", "LANGUAGE": "MISC", "PRODUCT": "MISC",
}

registry.add_static([
    registry.ModelSpec(SPACY_KEY, "spaCy small English tagger (embedded)",
                       registry.TOKEN_CLASSIFICATION, "embedded", "en_core_web_sm", "MIT",
                       "spaCy's OntoNotes types mapped to PER/ORG/LOC/MISC; no confidence scores"),
    registry.ModelSpec("dslim/bert-base-NER", "BERT-base NER, CoNLL-2003 (hub)", registry.TOKEN_CLASSIFICATION,
                       "hub", "dslim/bert-base-NER", "MIT", "the standard CoNLL-2003 BERT"),
])

Progress = Callable[[float, str], None]


@dataclass
class Entity:
    label: str  # entity type, e.g. PER
    text: str
    start: int  # character offsets into the original text
    end: int
    score: float | None  # None: the backend gives no confidence (spaCy)


@dataclass
class Piece:
    token: str  # the sub-word as the tokenizer writes it, e.g. '##berg'
    tag: str  # B-PER, I-PER, O
    score: float | None
    start: int
    end: int


@dataclass
class Tagged:
    text: str
    entities: list[Entity]
    pieces: list[Piece]
    windows: int = 1  # how many model windows the text needed
    backend: str = ""  # transformers | spacy
    labels: tuple[str, ...] = ()  # the entity types the model can predict
    shared_with: int = 0  # other users' texts tagged in the same model call (gathered, see models.engines.batching)


def split_tag(tag: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', ''); a label without prefix counts as inside (like transformers)."""
    if tag == "O":
        return "O", ""
    if len(tag) > 2 and tag[1] == "-" and tag[0] in "BIES":
        return ("B" if tag[0] in "BS" else "I"), tag[2:]
    return "I", tag


def _group(units: list[tuple[str, float | None, int, int]], text: str) -> list[Entity]:
    """Units (tag, score, start, end) in text order -> entities: B- or a new type starts one, O ends it."""
    entities: list[Entity] = []
    label, scores, start, end = "", [], 0, 0

    def close() -> None:
        if label:
            known = [s for s in scores if s is not None]
            entities.append(Entity(label, text[start:end], start, end, float(np.mean(known)) if known else None))

    for tag, score, s, e in units:
        bi, kind = split_tag(tag)
        if bi == "O" or bi == "B" or kind != label:
            close()
            label, scores, start = ("", [], s) if bi == "O" else (kind, [], s)
        if label:
            scores.append(score)
            end = e
    close()
    return entities


_GRAPHEME = regex.compile(r"\X")


class _Characters:
    """Where the user-perceived characters (grapheme clusters, Unicode UAX #29) of a text begin and end.

    A span cut inside one (between a letter and its combining accent, inside an emoji sequence or a
    CRLF) would leave part of the character outside the highlight; ``snap`` widens it to whole ones.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        # every boundary, unless every character is one on its own (ASCII without CR: the common case)
        simple = text.isascii() and "\r" not in text
        self.bounds = None if simple else [m.start() for m in _GRAPHEME.finditer(text)] + [len(text)]

    def snap(self, start: int, end: int) -> tuple[int, int]:
        if self.bounds is None:
            return start, end
        i = bisect.bisect_right(self.bounds, start) - 1
        j = bisect.bisect_left(self.bounds, end)
        return self.bounds[max(i, 0)], self.bounds[min(j, len(self.bounds) - 1)]


def whole_spans(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Piece spans (sorted by start) widened so that they cover whole characters of ``text``.

    A tokenizer may normalise or strip characters (an uncased BERT drops the combining accent of a
    decomposed "é"; control characters and variation selectors vanish), so no piece's offsets cover
    them. Such a character, with no whitespace between it and a piece, belongs to that piece's word:
    to the piece before it, else to the piece after it. Then every span is widened to grapheme-cluster
    boundaries (``_Characters``). Text under an ``[UNK]`` piece is already inside its offsets.
    """
    out = [list(s) for s in spans]
    for k, span in enumerate(out):  # uncovered characters right after a piece join it
        limit = out[k + 1][0] if k + 1 < len(out) else len(text)
        while span[1] < limit and not text[span[1]].isspace():
            span[1] += 1
    for k, span in enumerate(out):  # uncovered characters right before a piece (after a space) join it
        limit = out[k - 1][1] if k else 0
        while span[0] > limit and not text[span[0] - 1].isspace():
            span[0] -= 1
    chars = _Characters(text)
    return [chars.snap(s, e) for s, e in out]


def _check(aggregation: str, threshold: float) -> None:
    if aggregation not in AGGREGATIONS:
        raise InputError(f"unknown aggregation {aggregation!r}; choose one of {', '.join(AGGREGATIONS)}")
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"the confidence threshold must be between 0 and 1, got {threshold}")


def _keep(entities: list[Entity], threshold: float) -> list[Entity]:
    return [e for e in entities if e.score is None or e.score >= threshold]


class TransformersTagger:
    backend = "transformers"

    def __init__(self, loaded: registry.Loaded, window: int | None = None, stride: int | None = None,
                 batch_size: int = 32) -> None:
        self.loaded = loaded
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        if not getattr(self.tokenizer, "is_fast", False):
            raise ModelUnavailable(f"{loaded.spec.label}: its tokenizer has no fast version, and character "
                                   f"offsets need one")
        limits = [512, getattr(self.model.config, "max_position_embeddings", 512) or 512]
        if 0 < (self.tokenizer.model_max_length or 0) < 100_000:
            limits.append(self.tokenizer.model_max_length)
        self.window = window or min(limits)
        self.stride = stride if stride is not None else self.window // 4
        if not 0 <= self.stride < self.window - 4:
            raise InputError(f"stride {self.stride} must be smaller than the window {self.window} minus special tokens")
        self.batch_size = batch_size
        self.id2label = {int(k): v for k, v in self.model.config.id2label.items()}

    @property
    def labels(self) -> list[str]:
        return sorted({split_tag(t)[1] for t in self.id2label.values()} - {""})

    def tag_many(self, texts: list[str], aggregation: str = "simple", threshold: float = 0.0,
                 progress: Progress | None = None) -> list[Tagged]:
        import torch  # late: torch is heavy and only this path needs it

        _check(aggregation, threshold)
        enc = self.tokenizer(list(texts), return_offsets_mapping=True, truncation=True, max_length=self.window,
                             stride=self.stride, return_overflowing_tokens=True, padding=False)
        n_windows = len(enc["input_ids"])
        owner = enc["overflow_to_sample_mapping"]
        # best[text][(word, start, end)] = (distance from the window edge, token id, probabilities)
        best: list[dict[tuple, tuple]] = [{} for _ in texts]
        windows_per_text = [0] * len(texts)
        order = sorted(range(n_windows), key=lambda w: -len(enc["input_ids"][w]))  # little padding per batch
        pad = self.tokenizer.pad_token_id or 0
        device = self.loaded.device.device
        done = 0
        for b in range(0, n_windows, self.batch_size):
            batch = order[b:b + self.batch_size]
            width = max(len(enc["input_ids"][w]) for w in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, w in enumerate(batch):
                seq = enc["input_ids"][w]
                ids[row, :len(seq)] = torch.tensor(seq)
                mask[row, :len(seq)] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            probs = logits.float().softmax(-1).cpu().numpy()  # (batch, width, labels)
            for row, w in enumerate(batch):
                text_idx = owner[w]
                windows_per_text[text_idx] += 1
                word_ids = enc.word_ids(w)
                content = [i for i, wid in enumerate(word_ids) if wid is not None]
                if not content:
                    continue
                first, last = content[0], content[-1]
                offsets = enc["offset_mapping"][w]
                for i in content:
                    key = (word_ids[i], *offsets[i])
                    centrality = min(i - first, last - i)
                    kept = best[text_idx].get(key)
                    if kept is None or centrality > kept[0]:
                        best[text_idx][key] = (centrality, enc["input_ids"][w][i], probs[row, i])
            done += len(batch)
            if progress:
                progress(done / n_windows, f"tagged {done}/{n_windows} windows")
        return [self._finish(text, best[i], aggregation, threshold, windows_per_text[i])
                for i, text in enumerate(texts)]

    def _finish(self, text: str, tokens: dict, aggregation: str, threshold: float, windows: int) -> Tagged:
        keys = sorted(tokens, key=lambda k: (k[0], k[1], k[2]))
        pieces, prob_rows, word_of = [], [], []
        names = self.tokenizer.convert_ids_to_tokens([tokens[k][1] for k in keys])
        spans = whole_spans(text, [(k[1], k[2]) for k in keys])  # offsets may leave out stripped characters
        for key, name, (start, end) in zip(keys, names, spans, strict=True):
            p = tokens[key][2]
            best = int(p.argmax())
            pieces.append(Piece(name, self.id2label[best], float(p[best]), start, end))
            prob_rows.append(p)
            word_of.append(key[0])
        if aggregation == "none":
            entities = [Entity(split_tag(p.tag)[1], text[p.start:p.end], p.start, p.end, p.score)
                        for p in pieces if p.tag != "O"]
        elif aggregation == "simple":
            entities = _group([(p.tag, p.score, p.start, p.end) for p in pieces], text)
        else:
            entities = _group(self._words(pieces, prob_rows, word_of, aggregation), text)
        return Tagged(text, _keep(entities, threshold), pieces, windows)

    def _words(self, pieces, prob_rows, word_of, aggregation: str) -> list[tuple[str, float, int, int]]:
        """One (tag, score, start, end) per word: the sub-words of a word agree on a label."""
        units, i = [], 0
        while i < len(pieces):
            j = i
            while j + 1 < len(pieces) and word_of[j + 1] == word_of[i]:
                j += 1
            rows = np.stack(prob_rows[i:j + 1])
            if aggregation == "first":
                p = rows[0]
            elif aggregation == "average":
                p = rows.mean(axis=0)
            else:  # max: the sub-word the model is surest about decides
                p = rows[int(rows.max(axis=1).argmax())]
            best = int(p.argmax())
            units.append((self.id2label[best], float(p[best]), pieces[i].start, pieces[j].end))
            i = j + 1
        return units


class SpacyTagger:
    """spaCy's statistical NER. It predicts whole entities, so aggregation does not apply and there are no scores."""

    backend = "spacy"
    labels = sorted(set(ONTONOTES_TO_CONLL.values()))
    CHUNK_CHARS = 100_000  # spaCy's per-doc memory grows with length; cut long texts at line breaks

    def __init__(self, nlp) -> None:
        self.nlp = nlp

    def tag_many(self, texts: list[str], aggregation: str = "simple", threshold: float = 0.0,
                 progress: Progress | None = None) -> list[Tagged]:
        _check(aggregation, threshold)
        chunks = [(chunk, (i, offset)) for i, text in enumerate(texts) for chunk, offset in self._chunks(text)]
        results = [Tagged(text, [], [], 0) for text in texts]
        for n, (doc, (i, offset)) in enumerate(self.nlp.pipe(chunks, as_tuples=True, batch_size=64), 1):
            out = results[i]
            out.windows += 1
            ents = self._entities(doc, offset, out.text)
            out.entities += ents
            # spaCy's tokens are exact substrings, but it may cut one character (a letter and its accent)
            spans = [(s + offset, e + offset)
                     for s, e in whole_spans(doc.text, [(t.idx, t.idx + len(t.text)) for t in doc if not t.is_space])]
            tags = conll.spans_to_bio(spans, ents)
            out.pieces += [Piece(out.text[s:e], tag, None, s, e) for (s, e), tag in zip(spans, tags, strict=True)]
            if progress and (n % 64 == 0 or n == len(chunks)):
                progress(n / len(chunks), f"tagged {n}/{len(chunks)} chunks")
        return results

    def _entities(self, doc, offset: int, text: str) -> list[Entity]:
        entities, chars = [], _Characters(doc.text)
        for ent in doc.ents:
            label = ONTONOTES_TO_CONLL.get(ent.label_)
            if label is None:
                continue
            tokens = list(ent)
            # OntoNotes spans include a leading article ("the European Union"); CoNLL's do not.
            while len(tokens) > 1 and tokens[0].lower_ == "the":
                tokens = tokens[1:]
            start, end = chars.snap(tokens[0].idx, tokens[-1].idx + len(tokens[-1].text))  # whole characters
            start, end = start + offset, end + offset
            entities.append(Entity(label, text[start:end], start, end, None))
        return entities

    def _chunks(self, text: str):
        start = 0
        while len(text) - start > self.CHUNK_CHARS:
            cut = text.rfind("\n", start, start + self.CHUNK_CHARS)
            if cut <= start:
                cut = text.rfind(" ", start, start + self.CHUNK_CHARS)
            if cut <= start:
                cut = start + self.CHUNK_CHARS
            yield text[start:cut], start
            start = cut
        yield text[start:], start


Tagger = TransformersTagger | SpacyTagger


def is_spacy_folder(folder: Path | None) -> bool:
    return folder is not None and (folder / "meta.json").exists() and (folder / "config.cfg").exists()


def gives_scores(key: str) -> bool:
    """False for a spaCy pipeline (the embedded fallback or a spaCy folder): it gives entities without
    probabilities, so the word-piece aggregation and the confidence threshold do not apply to it."""
    if key == SPACY_KEY:
        return False
    try:
        spec = registry.get(key, registry.TOKEN_CLASSIFICATION)
    except LMLabError:
        return True  # an unknown key fails with its own message when tagged
    return not (spec.source == "local" and is_spacy_folder(spec.local_dir()))


def load(key: str, device: str | None = None) -> Tagger:
    """The tagger for a catalogue key, loaded once and kept in the shared model cache."""
    spec = registry.get(key, registry.TOKEN_CLASSIFICATION)
    ok, why = registry.availability(spec)
    if not ok:
        raise ModelUnavailable(why)
    folder = spec.local_dir()
    if is_spacy_folder(folder):
        def spacy_loader() -> registry.Loaded:
            import spacy  # late: spaCy is heavy and only this path needs it

            # Only the NER and its features: tagger, parser and lemmatizer do not change the entities.
            nlp = spacy.load(folder, exclude=["tagger", "parser", "attribute_ruler", "lemmatizer", "senter"])
            nbytes = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            return registry.Loaded(spec, nlp, None, pick("cpu"), nbytes)

        return SpacyTagger(registry.CACHE.get((spec.key, "spacy"), spacy_loader).model)

    info = pick(device)

    def loader() -> registry.Loaded:
        # late: transformers is heavy and only this path needs it
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        kwargs = registry.hub_load_kwargs(spec)
        labels = {}
        if spec.source == "run":  # a LoRA run's folder is an adapter: transformers loads its base, with its labels
            labels = adapters.label_kwargs(kwargs["pretrained_model_name_or_path"])
        try:
            tokenizer = AutoTokenizer.from_pretrained(**kwargs)
            model = registry.from_pretrained(AutoModelForTokenClassification, spec, kwargs, **labels, dtype=info.dtype)
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(f"could not load {spec.label} as a token classifier: {exc}") from exc
        model.to(info.device).eval()
        return registry.Loaded(spec, model, tokenizer, info, registry.model_nbytes(model))

    return TransformersTagger(registry.CACHE.get((spec.key, str(info.device), str(info.dtype)), loader))


def tag(key: str, text: str, aggregation: str = "simple", threshold: float = 0.0,
        progress: Progress | None = None) -> Tagged:
    """Tag one text of any length with the catalogue model ``key``."""
    if not text or not text.strip():
        raise InputError("the text is empty: paste a sentence or a news article to tag")
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(f"the text has {len(text):,} characters; the limit here is {MAX_TEXT_CHARS:,}. "
                         f"Split it into lines and use Batch instead")
    _check(aggregation, threshold)
    model = load(key)
    if len(text) <= GATHER_MAX_CHARS and _gathering():
        out = _gatherer((aggregation, threshold))((model, text))
    else:  # long documents keep their own progress bar
        out = model.tag_many([text], aggregation, threshold, progress)[0]
    out.backend, out.labels = model.backend, tuple(model.labels)
    return out


# Texts tagged at the same moment (a class pressing "Tag entities") go through ``tag_many`` together:
# one padded forward pass (or one spaCy ``pipe``) instead of one each.
GATHER_WINDOW_S = DEFAULT_WINDOW_S  # LMLAB_GATHER_MS
GATHER_MAX_CHARS = 20_000
_gatherers: dict[tuple, Gatherer] = {}


def _gathering() -> bool:
    """Gather only where the local engine shares work between requests (not one-at-a-time reference)."""
    return engine.local().capabilities.shares_steps


def _tag_gathered(items: list[tuple[Tagger, str]], aggregation: str, threshold: float) -> list[Tagged]:
    """``tag_many`` once per model over the gathered (tagger, text) items, results in the items' order."""
    results: list[Tagged | None] = [None] * len(items)
    by_model: dict[int, list[int]] = {}
    for i, (model, _) in enumerate(items):
        # ``load`` wraps the cached model in a new Tagger on every call: group by what it wraps.
        by_model.setdefault(id(getattr(model, "loaded", None) or model.nlp), []).append(i)
    for indices in by_model.values():
        model = items[indices[0]][0]
        for i, tagged in zip(indices, model.tag_many([items[i][1] for i in indices], aggregation, threshold),
                             strict=True):
            tagged.shared_with = len(indices) - 1
            results[i] = tagged
    return results


def _gatherer(settings_key: tuple[str, float]) -> Gatherer:
    """One gatherer per (aggregation, threshold); items carry their tagger, so none is kept alive here."""
    gather = _gatherers.get(settings_key)
    if gather is None:
        aggregation, threshold = settings_key
        gather = _gatherers.setdefault(settings_key, Gatherer(
            lambda items: _tag_gathered(list(items), aggregation, threshold), window_s=GATHER_WINDOW_S, name="ner"))
    return gather


# --- batch files -------------------------------------------------------------------------


@dataclass
class BatchResult:
    kind: str  # "text" (one document per line) or "conll"
    documents: int
    entities: int
    rows: list[list]  # document, text, label, score, start, end
    csv_path: Path
    conll_path: Path
    seconds: float


def tag_file(key: str, path: str | Path, aggregation: str = "simple", threshold: float = 0.0,
             progress: Progress | None = None, out_dir: Path | None = None) -> BatchResult:
    """Tag an uploaded .txt (one document per line) or CoNLL file; write the results as CSV and CoNLL."""
    path = Path(path)
    size = path.stat().st_size
    if size > conll.MAX_FILE_BYTES:
        raise InputError(f"{path.name} is {size / 2**20:.0f} MiB; the limit is {conll.MAX_FILE_BYTES // 2**20} MiB")
    text = conll.decode_upload(path.read_bytes(), path.name)
    _check(aggregation, threshold)
    tagger = load(key)
    started = time.monotonic()
    if path.suffix.lower() in {".conll", ".iob", ".bio"} or conll.looks_like_conll(text):
        kind = "conll"
        sentences = conll.parse(text)
        joined = [s.text_and_spans() for s in sentences]
        tagged = tagger.tag_many([j[0] for j in joined], aggregation, threshold, progress)
        predictions = [conll.spans_to_bio(spans, t.entities) for (_, spans), t in zip(joined, tagged, strict=True)]
        conll_text = conll.write(sentences, predictions)
    else:
        kind = "text"
        documents = [line for line in text.splitlines() if line.strip()]
        tagged = tagger.tag_many(documents, aggregation, threshold, progress)
        out = []
        for t in tagged:
            toks = conll.words(t.text)
            tags = conll.spans_to_bio([(s, e) for _, s, e in toks], t.entities)
            out.append(conll.Sentence([w for w, _, _ in toks], tags))
        conll_text = conll.write([s for s in out if s.tokens])
    rows = [[i + 1, e.text, e.label, None if e.score is None else round(e.score, 4), e.start, e.end]
            for i, t in enumerate(tagged) for e in t.entities]
    out_dir = out_dir or handout.new_folder()  # one visitor's results: a folder named by 128 random bits
    stem = _safe_stem(path.stem)
    csv_path, conll_path = out_dir / f"{stem}.entities.csv", out_dir / f"{stem}.conll"
    # The CSV is for spreadsheets (formula-leading cells neutralised); CoNLL keeps every token as it is.
    spreadsheet.write_csv(csv_path, ["document", "text", "label", "score", "start", "end"], rows)
    settings.atomic_write_text(conll_path, conll_text)
    return BatchResult(kind, len(tagged), len(rows), rows, csv_path, conll_path, time.monotonic() - started)


def _safe_stem(stem: str) -> str:
    """Uploaded names never become paths: keep letters, digits, dash and underscore."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:60] or "upload"

"""Entity spans cover whole characters of the original text: combining marks, characters the tokenizer
normalises or strips, and text under [UNK] pieces belong to their word, on both backends."""

from __future__ import annotations

import math

import pytest
import regex
import torch

from models.core import assets, registry
from models.ner import tagger

LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
# logits each word piece produces in a context-free BERT (every other piece says O)
DESIGN = {"jose": "B-PER", "ortega": "I-PER", "ana": "B-PER", "li": "I-PER", "zurich": "B-LOC",
          "東": "B-LOC", "京": "I-LOC", "[UNK]": "B-MISC", "e": "B-ORG", "x": "B-ORG", "##y": "I-ORG"}
DECOMPOSED = "Jose\u0301 Ortega met Ana Li in Zu\u0308rich."
CJK = "東京の田中さん"
EMOJI = "Ana Li met Bob👍🏽 and 👩\u200d💻 in Paris🇫🇷."
STRIPPED = "e\ufe0f and x\x00y"  # a variation selector and a control character the tokenizer drops


@pytest.fixture(scope="module")
def lookup_tagger() -> tagger.TransformersTagger:
    """MiniLM's uncased, accent-stripping WordPiece tokenizer and a BERT with no layers whose logits
    depend only on the piece (see tests/test_ner.py for the construction)."""
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    tok = AutoTokenizer.from_pretrained(str(assets.path("all-minilm-l6-v2")))
    hidden = 32
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=0, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=512, id2label=dict(enumerate(LABELS)),
                        label2id={v: k for k, v in enumerate(LABELS)})
    model = BertForTokenClassification(config)
    with torch.no_grad():
        emb = model.bert.embeddings
        emb.position_embeddings.weight.zero_()
        emb.token_type_embeddings.weight.zero_()
        emb.word_embeddings.weight.zero_()
        emb.word_embeddings.weight[:, 0] = 1.0
        columns = torch.zeros(len(LABELS), hidden)
        columns[0, 0] = 5.0
        for dim, (piece, label) in enumerate(DESIGN.items(), 1):
            piece_id = tok.convert_tokens_to_ids(piece)
            assert piece_id != tok.unk_token_id or piece == "[UNK]", piece
            emb.word_embeddings.weight[piece_id] = torch.nn.functional.one_hot(torch.tensor(dim), hidden).float()
            columns[LABELS.index(label), dim] = 8.0
        columns *= math.sqrt(hidden - 1) / hidden
        columns[:, -1] = -columns[:, :-1].sum(dim=1)
        model.classifier.weight.copy_(columns)
        model.classifier.bias.zero_()
    spec = registry.ModelSpec("lookup-bert", "lookup BERT", registry.TOKEN_CLASSIFICATION, "local", "")
    return tagger.TransformersTagger(registry.Loaded(spec, model.eval(), tok, registry.pick("cpu"),
                                                     registry.model_nbytes(model)))


def _ents(out: tagger.Tagged) -> list[tuple[str, str, int, int]]:
    return [(e.label, e.text, e.start, e.end) for e in out.entities]


def _assert_whole(text: str, out: tagger.Tagged) -> None:
    """Every span starts and ends on a grapheme-cluster boundary, and shows exactly text[start:end]."""
    bounds = {m.start() for m in regex.finditer(r"\X", text)} | {len(text)}
    for e in out.entities:
        assert e.text == text[e.start:e.end] and e.start in bounds and e.end in bounds, (e, text)
    for p in out.pieces:
        assert p.start in bounds and p.end in bounds, (p, text)


@pytest.mark.parametrize("aggregation", tagger.AGGREGATIONS)
def test_decomposed_accents_stay_inside_the_entity(lookup_tagger, aggregation):
    out = lookup_tagger.tag_many([DECOMPOSED], aggregation)[0]
    expected = [("PER", "Jose\u0301 Ortega", 0, 12), ("PER", "Ana Li", 17, 23), ("LOC", "Zu\u0308rich", 27, 34)]
    if aggregation == "none":  # one entity per piece
        expected = [("PER", "Jose\u0301", 0, 5), ("PER", "Ortega", 6, 12), ("PER", "Ana", 17, 20), ("PER", "Li", 21, 23),
                    ("LOC", "Zu\u0308rich", 27, 34)]
    assert _ents(out) == expected
    _assert_whole(DECOMPOSED, out)


def test_cjk_unk_emoji_and_stripped_characters(lookup_tagger):
    out = lookup_tagger.tag_many([CJK, EMOJI, STRIPPED], "simple")
    assert _ents(out[0]) == [("LOC", "東京", 0, 2)]
    # [UNK] pieces: a word the vocabulary cannot spell is one piece, and all of it is highlighted
    assert _ents(out[1]) == [("PER", "Ana Li", 0, 6), ("MISC", "Bob👍🏽", 11, 16), ("MISC", "👩\u200d💻", 21, 24),
                             ("MISC", "Paris🇫🇷", 28, 35)]
    assert _ents(out[2]) == [("ORG", "e\ufe0f", 0, 2), ("ORG", "x\x00y", 7, 10)]
    for text, tagged in zip([CJK, EMOJI, STRIPPED], out, strict=True):
        _assert_whole(text, tagged)


def test_spans_cut_inside_a_character_are_widened():
    text = "Zu\u0308rich 👍🏽 e\u0301\u0301x"
    # a piece cut inside "ü", inside the emoji with its skin tone, and before two combining accents
    assert tagger.whole_spans(text, [(0, 2), (8, 9), (11, 12)]) == [(0, 7), (8, 10), (11, 15)]
    assert tagger.whole_spans(text, [(3, 7)]) == [(0, 7)]  # characters before a piece join it too
    assert tagger.whole_spans("plain ascii", [(0, 5), (6, 11)]) == [(0, 5), (6, 11)]


def test_spacy_spans_cover_whole_characters():
    sp = tagger.load(tagger.SPACY_KEY)
    texts = [DECOMPOSED, "Ana Li met 田中太郎 in 東京 and Bob👍🏽 in Paris🇫🇷.", "Zoe\u0308 Smith visited Sa\u0303o Paulo."]
    out = sp.tag_many(texts)
    assert ("PER", "Jose\u0301 Ortega", 0, 12) in _ents(out[0])
    for text, tagged in zip(texts, out, strict=True):
        _assert_whole(text, tagged)
    # spaCy cuts 👍🏽 into two tokens; each piece covers the whole character
    emoji = [p for p in out[1].pieces if "👍" in p.token or "🏽" in p.token]
    assert emoji and all(out[1].text[p.start:p.end] == "👍🏽" for p in emoji)

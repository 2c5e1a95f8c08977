"""The mixing coder: each predictor alone, the mixer, determinism of encoder and decoder, the file format."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from models.compression.text import compact_header, lm_codec, mixing
from models.compression.text import container as text_container
from models.compression.text.match_model import MatchModel
from models.compression.text.ngram import TokenNGram
from models.core.errors import CorruptFile, FingerprintMismatch, InputError

SMALL = lm_codec.CodecSettings(window=32, keep=12, lane_tokens=40, max_lanes=4, short_tokens=0, precision="fp32")
REPEATS = ("The Mock Turtle sighed deeply, and drew the back of one flap across his eyes. " * 5).encode()


def test_ngram_predicts_what_followed_each_context():
    model = TokenNGram((1, 2))
    history: list[int] = []
    for token in [5, 6, 7, 5, 6, 8, 5, 6]:
        model.update(history, token)
        history.append(token)
    after_6 = model.predict([1, 6])[0]  # order 1: what followed 6
    assert dict(zip(after_6[0].tolist(), after_6[1].tolist(), strict=True)) == {7: 0.5, 8: 0.5}
    after_5_6 = model.predict([5, 6])[1]  # order 2: what followed 5 6
    assert dict(zip(after_5_6[0].tolist(), after_5_6[1].tolist(), strict=True)) == {7: 0.5, 8: 0.5}
    assert model.predict([9, 9]) == [None, None]  # contexts never seen say nothing
    assert model.predict([]) == [None, None]


def test_match_model_follows_a_repeat_and_grows():
    model = MatchModel(lanes=1, min_len=3)
    text = [1, 2, 3, 4, 5, 6, 9, 1, 2, 3]
    for token in text:
        model.update({0: token})
    assert model.predict(0) == (4, 3)  # "1 2 3" was followed by 4
    model.update({0: 4})
    assert model.predict(0) == (5, 4)  # the prediction came true: the match is one longer
    model.update({0: 7})  # wrong: the match ends
    assert model.predict(0) is None


def test_match_model_finds_a_repeat_in_another_lane():
    model = MatchModel(lanes=2, min_len=2)
    for a, b in zip([1, 2, 3, 4], [8, 1, 2, 9], strict=True):
        model.update({0: a, 1: b})
    # lane 1 wrote "1 2" at its steps 1-2, after lane 0 wrote "1 2 3": lane 0's 3 is the guess
    assert model.histories == [[1, 2, 3, 4], [8, 1, 2, 9]]
    model2 = MatchModel(lanes=2, min_len=2)
    for a, b in zip([1, 2, 3, 4], [8, 8, 1, 2], strict=True):
        model2.update({0: a, 1: b})
    assert model2.predict(1) == (3, 2)


def test_mixer_learns_to_trust_a_predictor_that_is_right():
    """A model that spreads its probability evenly; the text repeats: the mixed bits fall below the model's."""
    vocab, lanes = 50, 1
    mixer = mixing.Mixer(mixing.DEFAULT, lanes, trace=True)
    text = [3, 14, 15, 9, 26, 5, 35, 8, 9, 7] * 20
    model_bits = mixed_bits = 0.0
    for token in text:
        probs = np.full((1, vocab), 1 / vocab, dtype=np.float32)
        mixed = mixer.predict([0], probs)
        assert mixed.dtype == np.float32 and abs(float(mixed.sum()) - 1) < 1e-5
        model_bits -= np.log2(1 / vocab)
        mixed_bits -= np.log2(float(mixed[0, token]))
        mixer.update([0], [token])
    assert mixed_bits < 0.25 * model_bits
    last = mixer.trace[-1]
    assert abs(sum(last.weights) - 1) < 1e-9 and last.weights[0] < 0.5  # the model is no longer trusted alone
    assert last.p_experts[-1] == 1.0  # the match model predicted the token that came


def test_mixer_without_predictors_is_the_model():
    s = dataclasses.replace(mixing.DEFAULT, orders=(), match_min=0)
    mixer = mixing.Mixer(s, 1)
    probs = np.random.default_rng(0).dirichlet(np.ones(20), size=1).astype(np.float32)
    assert np.array_equal(mixer.predict([0], probs), probs)


def test_bad_mixer_settings_are_refused():
    for bad in ({"orders": (0,)}, {"orders": (2, 2)}, {"match_min": -1}, {"rate": 2.0}, {"algorithm": "mix-0"}):
        with pytest.raises(InputError):
            dataclasses.replace(mixing.DEFAULT, **bad).check()


def roundtrip(data: bytes, loaded, s=SMALL, mixer=mixing.DEFAULT) -> lm_codec.LMResult:
    result = lm_codec.compress(data, loaded, s, mixer=mixer)
    assert lm_codec.decompress(result.blob, loaded) == data
    return result


@pytest.mark.parametrize("data", [b"", b"a", b"\x00\xff\xfe" + bytes(range(256)), b"caf\xe9 \xc3( ok", REPEATS])
def test_mixed_round_trips(tiny_gpt2, data):
    result = roundtrip(data, tiny_gpt2)
    assert result.header["n_bytes"] == len(data)


def test_mixing_codes_a_repetitive_text_in_fewer_bits(tiny_gpt2):
    alone = lm_codec.compress(REPEATS, tiny_gpt2, SMALL)
    mixed = roundtrip(REPEATS, tiny_gpt2)
    assert mixed.cross_entropy_bits < 0.6 * alone.cross_entropy_bits
    assert len(mixed.blob) < len(alone.blob)
    assert mixed.model_bits == pytest.approx(alone.cross_entropy_bits)


def test_encoder_and_decoder_states_are_equal_after_every_token(tiny_gpt2, monkeypatch):
    """The mixer's whole state (weights, counts, matches, histories) after every step, encoder vs decoder."""
    rng = np.random.default_rng(7)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "then", "it", "slept", ".", ","]
    data = " ".join(rng.choice(words, size=160)).encode()
    digests: list[list[str]] = []
    original = mixing.Mixer.update

    def recording(self, active, symbols):
        original(self, active, symbols)
        digests[-1].append(self.state_digest())

    monkeypatch.setattr(mixing.Mixer, "update", recording)
    digests.append([])
    result = lm_codec.compress(data, tiny_gpt2, SMALL, mixer=mixing.DEFAULT)
    digests.append([])
    assert lm_codec.decompress(result.blob, tiny_gpt2) == data
    assert result.header["lanes"] == 4 and len(digests[0]) > 20
    assert digests[0] == digests[1]


@pytest.fixture
def catalogued(tiny_gpt2, monkeypatch):
    monkeypatch.setitem(compact_header.MODEL_IDS, "tiny-gpt2", 63)
    return tiny_gpt2


def compact(**kw):
    return dataclasses.replace(lm_codec.PRESETS["compact"], precision="fp32", **kw)


def test_default_mixer_gets_the_compact_version_4_record(catalogued):
    result = roundtrip(REPEATS, catalogued, compact())
    header = lm_codec.read_header(result.blob)
    assert result.blob[4] == 4 and header["mixer_id"] == "mix-1"
    assert header["header_bytes"] <= 25
    plain = lm_codec.compress(REPEATS, catalogued, compact())
    assert plain.blob[4] == 3  # the model alone keeps version 3, byte for byte as before


def test_other_mixer_settings_are_recorded_in_full(catalogued):
    other = dataclasses.replace(mixing.DEFAULT, orders=(2, 3), rate=0.05)
    result = roundtrip(REPEATS, catalogued, compact(), mixer=other)
    header = lm_codec.read_header(result.blob)
    assert result.blob[4] == 2 and header["mixer"]["orders"] == [2, 3] and header["mixer"]["rate"] == 0.05


def test_decoder_with_other_mixer_settings_refuses(catalogued, monkeypatch):
    result = lm_codec.compress(REPEATS, catalogued, compact(), mixer=mixing.DEFAULT)
    monkeypatch.setattr(mixing, "DEFAULT", dataclasses.replace(mixing.DEFAULT, rate=0.03))
    with pytest.raises(FingerprintMismatch, match="codec and its settings"):
        lm_codec.decompress(result.blob, catalogued)


def test_version_2_file_with_an_unknown_mixer_is_refused(tiny_gpt2):
    result = lm_codec.compress(REPEATS, tiny_gpt2, SMALL, mixer=mixing.DEFAULT)
    header, payload = text_container.unpack(result.blob)
    for change in ({"algorithm": "mix-9"}, {"numpy": "0.1"}, {"orders": "x"}):
        forged = {k: v for k, v in header.items() if not k.startswith("payload_")}
        forged["mixer"] = {**header["mixer"], **change}
        with pytest.raises(FingerprintMismatch, match="mixer"):
            lm_codec.decompress(text_container.pack(forged, payload), tiny_gpt2)


def test_damaged_and_truncated_mixed_files_are_refused(catalogued):
    blob = lm_codec.compress(REPEATS, catalogued, compact(), mixer=mixing.DEFAULT).blob
    for bad in (blob[:10], blob[:-3], blob[:22] + bytes([blob[22] ^ 1]) + blob[23:], blob[:5] + b"\x09" + blob[6:]):
        with pytest.raises((CorruptFile, FingerprintMismatch)):
            lm_codec.decompress(bad, catalogued)
    wrong_id = blob[:7] + b"\x05" + blob[8:]
    with pytest.raises(CorruptFile, match="mixer id 5"):
        lm_codec.decompress(wrong_id, catalogued)


def test_the_default_file_is_never_larger_than_the_model_alones(tiny_gpt2):
    """compress_best (the CLI's and the app's default) keeps the smaller of the two files of one pass."""
    for data in (b"A short paragraph: the mixer has almost nothing to learn from here.", REPEATS):
        alone = lm_codec.compress(data, tiny_gpt2, SMALL)
        mixed = lm_codec.compress(data, tiny_gpt2, SMALL, mixer=mixing.DEFAULT)
        best = lm_codec.compress_best(data, tiny_gpt2, SMALL)
        assert len(best.blob) == min(len(alone.blob), len(mixed.blob))
        assert best.blob in (alone.blob, mixed.blob)
        assert lm_codec.decompress(best.blob, tiny_gpt2) == data


def test_mixing_picture_names_a_winner_for_every_token(tiny_gpt2):
    from models.compression.text import mixing_picture

    p = mixing_picture.picture(REPEATS, tiny_gpt2, SMALL)
    assert len(p.tokens) == lm_codec.read_header(lm_codec.compress(REPEATS, tiny_gpt2, SMALL).blob)["n_tokens"]
    assert "".join(t.text for t in p.tokens).encode() == REPEATS  # in text order
    assert sum(p.wins.values()) == len(p.tokens) and p.wins["match"] > 0
    assert all(abs(sum(t.weights) - 1) < 1e-9 for t in p.tokens)
    assert sum(p.bits_saved.values()) == pytest.approx(sum(t.bits_model - t.bits_mixed for t in p.tokens))
    assert p.file_mixed_bytes < p.file_model_bytes
    with pytest.raises(InputError):
        mixing_picture.picture(b"", tiny_gpt2, SMALL)


def test_one_pass_files_of_every_format_decode_in_one_pass(catalogued):
    """The benchmark's rows: version 3 (model alone), 4 (default mixer) and 2 (other settings) together."""
    mixers = [None, mixing.DEFAULT, dataclasses.replace(mixing.DEFAULT, contexts=False)]
    results = lm_codec.compress_many(REPEATS, catalogued, mixers, compact())
    assert [r.blob[4] for r in results] == [3, 4, 2]
    for (data, seconds), result in zip(lm_codec.decompress_many([r.blob for r in results], catalogued), results,
                                       strict=True):
        assert data == REPEATS and seconds > 0
        assert lm_codec.decompress(result.blob, catalogued) == REPEATS
    other = lm_codec.compress(REPEATS[:-5], catalogued, compact())
    with pytest.raises(InputError, match="one pass"):
        lm_codec.decompress_many([results[0].blob, other.blob], catalogued)

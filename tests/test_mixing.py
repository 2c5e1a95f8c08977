"""The mixing coder: each predictor alone, the mixer, determinism of encoder and decoder, the file format."""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np
import pytest

from models.compression.text import compact_header, lm_codec, mixing
from models.compression.text import container as text_container
from models.compression.text.match_model import MatchModel
from models.compression.text.ngram import TokenNGram
from models.core.errors import CorruptFile, FingerprintMismatch, InputError
from tests.codec_helpers import compact_settings

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


def test_bias_stage_learns_the_texts_vocabulary():
    """A model that keeps giving token 7 one chance in 50: the bias raises it, the rows stay distributions,
    and tokens the text never used keep their relative odds."""
    vocab = 50
    bias = mixing.TokenBias(0.05)
    probs = np.full((2, vocab), 1 / vocab, dtype=np.float32)
    for _ in range(40):
        scale, ids, values = bias.adjust(probs)
        full = probs.astype(np.float64) * scale[:, None]
        full[:, ids] = values
        assert np.allclose(full.sum(axis=1), 1.0)
        bias.update(probs, [7, 7])
    scale, ids, values = bias.adjust(probs)
    assert ids.tolist() == [7] and values[0, 0] > 0.2  # from 0.02
    assert scale[0] < 1  # every other token gave up the same share


def test_mixing_with_the_bias_stage_sums_to_one_and_stays_in_float32():
    mixer = mixing.Mixer(mixing.DEFAULT, 2)
    rng = np.random.default_rng(3)
    for step in range(30):
        probs = rng.dirichlet(np.ones(40), size=2).astype(np.float32)
        mixed = mixer.predict([0, 1], probs)
        assert mixed.dtype == np.float32 and np.allclose(mixed.sum(axis=1), 1.0, atol=1e-5)
        mixer.update([0, 1], [step % 5, 3])
    assert mixer.bias is not None and set(mixer.bias.ids.tolist()) == {0, 1, 2, 3, 4}


def test_the_bias_step_shrinks_with_how_often_a_token_came():
    """mix-4's bias stage: token v's step is rate / sqrt(1 + n_v), n_v its count before the step; a new token's
    first step is the full rate; with decay 0 every step is the rate (mix-2, whose files decode as coded)."""
    uniform = np.full((1, 4), 0.25, dtype=np.float32)
    for decay in (0.0, 0.5):
        bias = mixing.TokenBias(0.5, decay)
        for k, x in enumerate([0, 0, 0, 1, 0]):
            before = dict(zip(bias.ids.tolist(), bias.bias.tolist(), strict=True))
            came = dict(zip(bias.ids.tolist(), bias.came.tolist(), strict=True))
            inv_z, ids, values = bias.adjust(uniform)
            p = dict(zip(ids.tolist(), values[0].tolist(), strict=True))
            bias.update(uniform, [x])
            after = dict(zip(bias.ids.tolist(), bias.bias.tolist(), strict=True))
            for v, b in after.items():
                step = 0.5 * (1.0 + came.get(v, 0.0)) ** -decay
                target = 1.0 - p.get(v, 0.25 * float(inv_z[0])) if v == x else -p[v]
                assert b == pytest.approx(before.get(v, 0.0) + step * target, rel=1e-12), (decay, k, v)
        assert bias.came.tolist() == [4.0, 1.0]
    # the fourth 0 moved half as far per unit of gradient as the first with decay 0.5: 0.5 / sqrt(4)


def test_named_mixer_settings_never_change():
    """A compact file (version 4, now 13) stores only the id of its mixer settings: ids and settings are fixed for good."""
    assert compact_header.MIXER_IDS == {"mix-1": 1, "mix-2": 2, "mix-3": 3, "mix-4": 4}
    assert mixing.NAMED["mix-1"] == mixing.MixerSettings(orders=(1, 2, 3, 4), match_min=4, contexts=True, rate=0.1,
                                                         start=-3.0, bias_rate=0.0, confidence=False)
    assert "bias_rate" not in mixing.MIX_1.to_header()  # a mix-1 header reads as before the bias stage existed
    mix_2 = mixing.NAMED["mix-2"]
    assert mix_2 == dataclasses.replace(mixing.MIX_1, bias_rate=0.2)
    for later in ("context_bias_rate", "bias_decay"):  # nor a mix-2 header since the later stages
        assert later not in mix_2.to_header()
    assert mixing.NAMED["mix-3"] == dataclasses.replace(mix_2, bias_rate=0.1, context_bias_rate=0.1)
    assert mixing.NAMED["mix-4"] == dataclasses.replace(mix_2, bias_rate=0.5, bias_decay=0.5)
    assert mixing.name_of(mixing.DEFAULT) == "mix-4" and mixing.name_of(dataclasses.replace(mixing.DEFAULT, rate=0.2)) is None


def test_mixer_without_predictors_is_the_model():
    s = dataclasses.replace(mixing.DEFAULT, orders=(), match_min=0)
    mixer = mixing.Mixer(s, 1)
    probs = np.random.default_rng(0).dirichlet(np.ones(20), size=1).astype(np.float32)
    assert np.array_equal(mixer.predict([0], probs), probs)


def test_bad_mixer_settings_are_refused():
    for bad in ({"orders": (0,)}, {"orders": (2, 2)}, {"match_min": -1}, {"rate": 2.0}, {"algorithm": "mix-0"},
                {"bias_rate": -0.1}, {"bias_rate": 1}, {"confidence": 1}, {"context_bias_rate": 1.5},
                {"context_bias_rate": 1}, {"bias_decay": -0.5}, {"bias_decay": 2.5}, {"bias_decay": 1}):
        with pytest.raises(InputError):
            dataclasses.replace(mixing.DEFAULT, **bad).check()


def roundtrip(data: bytes, loaded, s=SMALL, mixer=mixing.DEFAULT) -> lm_codec.LMResult:
    result = lm_codec.compress(data, loaded, s, mixer=mixer)
    assert lm_codec.decompress(result.blob, loaded) == data
    return result


@pytest.mark.parametrize("mixer", ["mix-2", "mix-3", "mix-4"])
@pytest.mark.parametrize("data", [b"", b"a", b"\x00\xff\xfe" + bytes(range(256)), b"caf\xe9 \xc3( ok", REPEATS])
def test_mixed_round_trips(tiny_gpt2, data, mixer):
    result = roundtrip(data, tiny_gpt2, mixer=mixing.NAMED[mixer])
    assert result.header["n_bytes"] == len(data)


def test_the_context_bias_learns_what_follows_a_token():
    """After "the" the text always says "cat"; elsewhere anything. The context bias of "the" learns it, the
    global bias cannot (the model's rows are uniform), and tokens after other tokens keep their share."""
    vocab, lanes = 8, 1
    mixer = mixing.Mixer(dataclasses.replace(mixing.NAMED["mix-3"], orders=(), match_min=0, bias_rate=0.0), lanes)
    uniform = np.full((1, vocab), 1 / vocab, dtype=np.float32)
    rng = np.random.default_rng(3)
    for _ in range(60):
        for x in (0, 1, int(rng.integers(2, vocab))):  # "the" (0), "cat" (1), something
            mixer.predict([0], uniform)
            mixer.update([0], [x])
        last = mixer.histories[0][-1]
    assert last not in (0, 1)
    mixer.predict([0], uniform)
    mixer.update([0], [0])  # "the"
    after_the = mixer.predict([0], uniform)[0]
    assert after_the[1] > 0.5 and after_the.sum() == pytest.approx(1.0, abs=1e-5)
    assert after_the.dtype == np.float32
    mixer.update([0], [1])  # "cat": after it, "cat" is not expected again
    assert mixer.predict([0], uniform)[0][1] < 1 / vocab


def test_mixing_codes_a_repetitive_text_in_fewer_bits(tiny_gpt2):
    alone = lm_codec.compress(REPEATS, tiny_gpt2, SMALL)
    mixed = roundtrip(REPEATS, tiny_gpt2)
    assert mixed.cross_entropy_bits < 0.6 * alone.cross_entropy_bits
    assert len(mixed.blob) < len(alone.blob)
    assert mixed.model_bits == pytest.approx(alone.cross_entropy_bits)


@pytest.mark.parametrize("mixer", [mixing.MIX_2, mixing.MIX_3, mixing.MIX_4])
def test_encoder_and_decoder_states_are_equal_after_every_token(tiny_gpt2, monkeypatch, mixer):
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
    result = lm_codec.compress(data, tiny_gpt2, SMALL, mixer=mixer)
    digests.append([])
    assert lm_codec.decompress(result.blob, tiny_gpt2) == data
    assert result.header["lanes"] == 4 and len(digests[0]) > 20
    assert digests[0] == digests[1]


def test_default_mixer_gets_the_compact_mixing_record(catalogued):
    result = roundtrip(REPEATS, catalogued, compact_settings())
    header = lm_codec.read_header(result.blob)
    assert result.blob[4] == 26 and header["mixer_id"] == "mix-4"
    assert header["header_bytes"] <= 25
    plain = lm_codec.compress(REPEATS, catalogued, compact_settings())
    assert plain.blob[4] == 22  # the model alone: version 3's fields, a payload length, a checksum, two-step coding
    for earlier in ("mix-1", "mix-2"):  # the earlier defaults still write their ids
        blob = roundtrip(REPEATS, catalogued, compact_settings(), mixer=mixing.NAMED[earlier]).blob
        assert blob[4] == 26 and lm_codec.read_header(blob)["mixer_id"] == earlier


def test_other_mixer_settings_are_recorded_in_full(catalogued):
    other = dataclasses.replace(mixing.DEFAULT, orders=(2, 3), rate=0.05)
    result = roundtrip(REPEATS, catalogued, compact_settings(), mixer=other)
    header = lm_codec.read_header(result.blob)
    assert result.blob[4] == 14 and header["mixer"]["orders"] == [2, 3] and header["mixer"]["rate"] == 0.05


def test_decoder_with_other_mixer_settings_refuses(catalogued, monkeypatch):
    result = lm_codec.compress(REPEATS, catalogued, compact_settings(), mixer=mixing.DEFAULT)
    monkeypatch.setitem(mixing.NAMED, "mix-4", dataclasses.replace(mixing.DEFAULT, rate=0.03))
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
    blob = lm_codec.compress(REPEATS, catalogued, compact_settings(), mixer=mixing.DEFAULT).blob
    for bad in (blob[:10], blob[:-3], blob[:22] + bytes([blob[22] ^ 1]) + blob[23:], blob[:5] + b"\x09" + blob[6:]):
        with pytest.raises((CorruptFile, FingerprintMismatch)):
            lm_codec.decompress(bad, catalogued)
    wrong_id = blob[:7] + b"\x05" + blob[8:-4]  # an unknown mixer id under a valid checksum (a newer LM Lab)
    wrong_id += struct.pack("<I", zlib.crc32(wrong_id))
    with pytest.raises(CorruptFile, match="does not know"):
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
    """The benchmark's rows: version 22 (model alone), 26 (default mixer) and 14 (other settings) together, and
    the same coded in one step (versions 8, 13, 14), all decoded in one pass."""
    mixers = [None, mixing.DEFAULT, dataclasses.replace(mixing.DEFAULT, contexts=False)]
    results = lm_codec.compress_many(REPEATS, catalogued, mixers, compact_settings(),
                                     codings=(lm_codec.TWO_STEP, lm_codec.ONE_STEP))
    assert [r.blob[4] for r in results] == [22, 8, 26, 13, 14, 14]
    for (data, seconds), result in zip(lm_codec.decompress_many([r.blob for r in results], catalogued), results,
                                       strict=True):
        assert data == REPEATS and seconds > 0
        assert lm_codec.decompress(result.blob, catalogued) == REPEATS
    other = lm_codec.compress(REPEATS[:-5], catalogued, compact_settings())
    with pytest.raises(InputError, match="one pass"):
        lm_codec.decompress_many([results[0].blob, other.blob], catalogued)


# --- one megabyte through the command line ----------------------------------------------------------------

# Long words, so that a megabyte is about 110,000 tokens of a few-hundred-token vocabulary: the mixer's
# Python work per token, not the bytes, sets how long a round trip takes.
WORDS = ("wonderland caterpillar mushroom looking-glass tea-party hedgehogs flamingoes executioner gardeners "
         "procession gryphon's dormouse's mock-turtle's treacle-well lobster-quadrille whiting's "
         "shrinking growing curiouser impatiently thoughtfully nervously anxiously trembling remembered "
         "wondered considered explained whispered continued shouted hurriedly melancholy "
         "conversation underneath afterwards somewhere everything something presently particular "
         "remarkable uncomfortable extraordinary sentence evidence jurymen verdict tarts").split()
def prose(n_bytes: int, seed: int) -> bytes:
    """Sentences of Zipf-distributed words (seeded): text the n-gram and match models can learn."""
    rng = np.random.default_rng(seed)
    zipf = 1 / np.arange(1, len(WORDS) + 1)
    zipf /= zipf.sum()
    out, size = [], 0
    while size < n_bytes:
        words = rng.choice(WORDS, size=int(rng.integers(4, 16)), p=zipf)
        sentence = " ".join(words).capitalize() + str(rng.choice([". ", "! ", "? ", ".\n\n", ", "]))
        out.append(sentence)
        size += len(sentence)
    return "".join(out).encode()[:n_bytes]


@pytest.fixture(scope="module")
def small_vocab_model():
    """A 1-layer GPT-2 (random weights) over a byte-level BPE of a few hundred tokens trained on ``prose``:
    a byte token for each of the 256 bytes, so any input codes, and steps cheap enough for a megabyte."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from models.core.device import pick
    from models.core.registry import Loaded, ModelSpec, model_nbytes

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([prose(50_000, seed=1).decode()], trainers.BpeTrainer(
        vocab_size=700, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    torch.manual_seed(0)
    config = GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=1024, vocab_size=len(tok),
                        bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    spec = ModelSpec("tiny-bpe", "tiny GPT-2 with a small vocabulary (test)", "causal-lm", "local", "")
    return Loaded(spec, model, tok, pick("cpu"), model_nbytes(model))


def test_one_megabyte_round_trips_through_the_command_line(small_vocab_model, tmp_path, monkeypatch):
    """1 MB (prose with invalid UTF-8 and every byte value inside) through ``text compress`` and ``text
    decompress`` with their defaults (fast preset, mixing coder): exact, in one record of 96 lanes whose
    contexts were rebuilt, and coded by the mixer with the compact header."""
    from models.compression.text import cli
    from models.core import registry

    monkeypatch.setattr(registry, "load_causal_lm", lambda key, device=None: small_vocab_model)
    monkeypatch.setitem(compact_header.MODEL_IDS, "tiny-bpe", 62)
    body = prose(1_000_000, seed=2)
    data = body[:500_000] + b"\xff\xfe\xc3(" + bytes(range(256)) + body[500_000:]
    data = data[:1_000_000]
    src = tmp_path / "big.txt"
    src.write_bytes(data)
    assert cli.main(["compress", str(src), "--precision", "fp32", "--threads", "1"]) == 0
    packed = tmp_path / "big.txt.lmlt"
    records = lm_codec.read_records(packed.read_bytes())
    assert len(records) == 1
    header = records[0][0]
    assert header["version"] == 26 and header["mixer_id"] == "mix-4" and header["mode"] == "mixed"
    lanes = lm_codec.PRESETS["fast"].lane_count(header["n_tokens"])  # the rule the decoder derives them by
    assert lanes == 96 and header["n_tokens"] / lanes > lm_codec.PRESETS["fast"].window  # every lane rebuilt
    src.unlink()
    assert cli.main(["decompress", str(packed)]) == 0
    assert src.read_bytes() == data
    assert len(packed.read_bytes()) < len(data) // 3

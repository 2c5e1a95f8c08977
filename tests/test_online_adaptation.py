"""Online adaptation (dynamic evaluation) inside the text coder: the model learns from the tokens both
sides have coded, identically when decoding, without touching the shared model."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch

from models.compression.text import adaptation, lm_codec, mixing
from models.core.errors import CorruptFile, InputError
from tests.test_lm_codec import SMALL

ADAPTING = dataclasses.replace(SMALL, adapt_every=4, adapt_lr=1e-2, adapt_blocks=2)
TEXT = (b"The Mock Turtle sighed deeply, and drew the back of one flapper across his eyes. "
        b"Beautiful Soup, so rich and green, waiting in a hot tureen! ") * 4


def _weights(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        digest.update(name.encode() + p.detach().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _probabilities(loaded, s: lm_codec.CodecSettings, ids: list[int]) -> list[np.ndarray]:
    """Every step's probabilities as the coder sees them, the input's tokens fed back."""
    opening, lengths = s.layout(len(ids))
    seen = []

    def choose(positions, active, probs):
        seen.append(probs.copy())
        return np.array([ids[p] for p in positions])

    lm_codec._code_tokens(lm_codec._runner(loaded, s.precision), opening, lengths,
                          lm_codec._start_id(loaded.tokenizer), s.window, s.keep, choose, adapt=s.adapt)
    return seen


def test_adapting_round_trips_with_and_without_the_mixer_and_records_its_settings(tiny_gpt2):
    for mixer in (None, mixing.DEFAULT):
        result = lm_codec.compress(TEXT, tiny_gpt2, ADAPTING, mixer=mixer)
        assert result.header["adapt"] == {"every": 4, "lr": 1e-2, "blocks": 2}
        assert result.header["lanes"] == 4
        assert lm_codec.decompress(result.blob, tiny_gpt2) == TEXT
    assert "adapt" not in lm_codec.compress(TEXT, tiny_gpt2, SMALL).header


def test_the_model_learns_the_text_and_the_shared_model_is_untouched(tiny_gpt2):
    """A repetitive text costs fewer model bits when the model learns online; the loaded model and the cached
    runner keep their weights (other users of the app share them)."""
    before = (_weights(tiny_gpt2.model), _weights(lm_codec._runner(tiny_gpt2, "fp32").body))
    frozen = lm_codec.compress(TEXT, tiny_gpt2, SMALL)
    adapted = lm_codec.compress(TEXT, tiny_gpt2, ADAPTING)
    assert adapted.model_bits < 0.995 * frozen.model_bits  # a random model over 50,257 tokens learns slowly
    assert (_weights(tiny_gpt2.model), _weights(lm_codec._runner(tiny_gpt2, "fp32").body)) == before


def test_encoder_and_decoder_see_the_same_probabilities_at_every_step(tiny_gpt2):
    """Two runs over the same tokens (what the encoder and the decoder do) give bit-identical probabilities at
    every step; they equal the frozen model's until the first update, and differ after it."""
    ids, _, _ = lm_codec.TokenMap(tiny_gpt2.tokenizer).to_tokens(TEXT)
    first, second = _probabilities(tiny_gpt2, ADAPTING, ids), _probabilities(tiny_gpt2, ADAPTING, ids)
    frozen = _probabilities(tiny_gpt2, SMALL, ids)
    assert len(first) == len(second) == len(frozen) > 3 * ADAPTING.adapt_every
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    every = ADAPTING.adapt_every
    assert all(np.array_equal(a, b) for a, b in zip(first[:every], frozen[:every], strict=True))
    assert not np.allclose(first[every + 1], frozen[every + 1])


def test_filler_tokens_of_finished_lanes_are_not_learned(tiny_gpt2):
    """Lanes of unequal length: the update's mask leaves out the start tokens a finished lane carries."""
    masks = []
    original = adaptation.Adapter.update

    def recording(self, rows, mask):
        masks.append((rows.clone(), mask.clone()))
        return original(self, rows, mask)

    adaptation.Adapter.update = recording
    try:
        lm_codec._adapt(adaptation.Adapter(lm_codec._runner(tiny_gpt2, "fp32").body,
                                           lm_codec._runner(tiny_gpt2, "fp32").logits, ADAPTING.adapt),
                        [[5, 6, 7, 8, 9, 10], [1, 2, 3, 0, 0, 0]], [6, 3], 6, 0)
    finally:
        adaptation.Adapter.update = original
    rows, mask = masks[0]
    assert rows.tolist() == [[6, 7, 8, 9, 10], [2, 3, 0, 0, 0]]
    assert mask.tolist() == [[True] * 4, [True, False, False, False]]


@pytest.mark.parametrize("changes", [dict(adapt_every=-1), dict(adapt_lr=0.0),
                                     dict(adapt_blocks=-1), dict(adapt_blocks=3), dict(adapt_lr=0.02)])
def test_impossible_settings_are_refused(tiny_gpt2, changes):
    with pytest.raises(InputError):
        lm_codec.compress(TEXT, tiny_gpt2, dataclasses.replace(ADAPTING, **changes))


@pytest.mark.parametrize("adapt", [{"every": 4, "lr": "x", "blocks": 1}, {"every": 4, "lr": 3e-3}, [4, 3e-3, 1],
                                   {"every": 0, "lr": 3e-3, "blocks": 1}, {"every": 4, "lr": 3e-3, "blocks": 1.5}, {"every": 4, "lr": 3e-3, "blocks": 99}])
def test_a_header_with_malformed_adaptation_settings_is_refused(tiny_gpt2, adapt):
    from tests.test_fuzz_readers import _repack

    blob = lm_codec.compress(TEXT, tiny_gpt2, ADAPTING).blob
    with pytest.raises(CorruptFile, match="adaptation"):
        lm_codec.decompress(_repack(blob, adapt=adapt), tiny_gpt2)


def test_a_file_decoded_with_other_adaptation_settings_is_refused(tiny_gpt2):
    """Other settings compute other probabilities: the checksum catches the wrong text, nothing is returned."""
    from tests.test_fuzz_readers import _repack

    blob = lm_codec.compress(TEXT, tiny_gpt2, ADAPTING).blob
    with pytest.raises(CorruptFile):
        lm_codec.decompress(_repack(blob, adapt={"every": 4, "lr": 1e-3, "blocks": 1}), tiny_gpt2)


def test_the_command_line_adapts_when_asked(tiny_gpt2, tmp_path, monkeypatch):
    from models.compression.text import cli
    from models.core import registry

    monkeypatch.setattr(registry, "load_causal_lm", lambda key, device=None: tiny_gpt2)
    src = tmp_path / "soup.txt"
    src.write_bytes(TEXT)
    assert cli.main(["compress", str(src), "--precision", "fp32", "--threads", "1", "--lanes", "2", "--window", "64",
                     "--adapt-every", "8", "--adapt-lr", "0.001", "--adapt-blocks", "2"]) == 0
    packed = tmp_path / "soup.txt.lmlt"
    assert lm_codec.read_header(packed.read_bytes())["adapt"] == {"every": 8, "lr": 0.001, "blocks": 2}
    src.unlink()
    assert cli.main(["decompress", str(packed)]) == 0
    assert src.read_bytes() == TEXT

"""The lesson's step 3 says "the same probabilities compress": a token Generate showed with probability p
must cost -log2 p in the Compress tab. On a CPU the app generates in float32; the coder chose bfloat16 for
speed wherever the CPU has bf16 units, and a short text's tokens then cost other bits (' wise' after "Once
upon a time, there was a": 1.07 % in Generate, 0.73 % in Compress's step view). A text coded in one lane now
runs in float32; several lanes keep bfloat16, where it pays."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from components.tokens import visible
from models.compression.text import lm_codec
from models.core import torch_internals

CPU = torch.device("cpu")


@pytest.fixture
def bf16_units(monkeypatch):
    """A CPU with bf16 matrix units, whatever this machine has."""
    monkeypatch.setattr(torch_internals, "cpu_runs_bf16", lambda: True)


def test_auto_precision_on_a_cpu_with_bf16_units(bf16_units):
    resolve = lm_codec._resolve_precision
    assert resolve("auto", CPU, lanes=1) == "fp32"  # one lane: the precision Generate runs in
    assert resolve("auto", CPU, lanes=3) == "bf16"  # a batch of lanes: bf16 pays
    assert resolve("auto", CPU) == "bf16"  # lanes not known: the speed choice, as before
    assert resolve("bf16", CPU, lanes=1) == "bf16" and resolve("fp32", CPU, lanes=3) == "fp32"  # asked for
    assert resolve("auto", torch.device("cuda"), lanes=1) == "bf16"  # a GPU generates in bf16 too


def test_auto_precision_without_bf16_units(monkeypatch):
    monkeypatch.setattr(torch_internals, "cpu_runs_bf16", lambda: False)
    assert lm_codec._resolve_precision("auto", CPU, lanes=3) == "fp32"


@pytest.mark.parametrize(("lanes", "precision"), [(0, "fp32"), (3, "bf16")])
def test_the_file_records_the_precision_it_was_coded_in(tiny_gpt2, bf16_units, lanes, precision):
    """Through ``compress``/``decompress`` as the command line and the Compress tab call them: a short text
    (one automatic lane) is coded in float32, a text in lanes in bfloat16, and each decodes."""
    data = ("A short paragraph, the kind a teacher pastes into the page. " * 4).encode()
    s = lm_codec.CodecSettings(window=64, keep=16, lanes=lanes)
    result = lm_codec.compress(data, tiny_gpt2, s)
    assert result.header["lanes"] == (lanes or 1)
    assert lm_codec.read_header(result.blob)["fingerprint"]["precision"] == precision
    assert lm_codec.decompress(result.blob, tiny_gpt2) == data
    again = lm_codec.compress(data, tiny_gpt2, dataclasses.replace(s, precision=precision))
    assert again.blob == result.blob  # "auto" is that precision, nothing else


def _p(table_html: str, row: int) -> float:
    cells = re.findall(r"<tr><td>(\d+)</td><td><b>.*?</b></td><td>([0-9.e-]+)</td>", table_html)
    return float(dict(cells)[str(row)])


@pytest.mark.slow
def test_a_token_has_the_same_probability_in_generate_and_compress(client):
    """Generate's next-token table and Compress's step-by-step view, through the app's API, for the token
    after the lesson's story opening. The coder floors every probability at 2^-24 (a token never costs
    infinite bits), which takes up to 0.3 % of the mass from SmolLM2's 49,152 tokens: hence the 1 % margin;
    bfloat16 moved ' wise' by 31 %."""
    prompt, token, model = "Once upon a time, there was a", " wise", "smollm2-135m-instruct"
    _plot, table, _context = client.predict(prompt, "", model, 1.0, 1.0, 0, api_name="/next_token")
    shown = {row[1]: row[2] for row in table["data"]}
    assert visible(token) in shown, "the token is among the candidates Generate lists"
    _fig, steps, _note = client.predict(prompt + token, None, model, 20, api_name="/arithmetic_steps")
    n = steps.count("<tr>") - 1  # the start token is not a row: the last row is the last token
    assert visible(token) == "␣wise" and "␣wise" in steps, "both views write the token alike"
    assert _p(steps, n) == pytest.approx(shown[visible(token)], rel=0.01)


def test_a_token_has_one_colour_in_every_view():
    """Generate coloured a token by its probability (linearly: red below 20 %) and Compress by its bits, so ' wise'
    at 1 % was red in one view and yellow-green in the other. Now both use the bits scale, legends included."""
    import math
    from types import SimpleNamespace

    from components.compress_text import heat_map
    from components.tokens import GrowingStrip

    colours = re.compile(r"class='tok' style='background:([^']+)'")
    for p in (0.95, 0.3, 0.0107, 1e-5):
        chip = SimpleNamespace(text=" wise", prob=p, bits=-math.log2(p), alternatives=[])
        generate, compress = GrowingStrip()([chip]), heat_map([lm_codec.TokenCost(" wise", -math.log2(p))])
        assert colours.findall(generate) == colours.findall(compress) and len(colours.findall(generate)) == 1
        legend = re.compile(r"tokview-legend'>.*?</div>")
        assert re.findall(r"background:([^']+)'", legend.search(generate).group(0)) == \
            re.findall(r"background:([^']+)'", legend.search(compress).group(0))

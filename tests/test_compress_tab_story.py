"""The Compress tab's "Every coder" view tells one true story: through the handler the page calls
(``compress_text``), with the embedded SmolLM2.

A teacher found a Latin-1 file coded with LZMA shown as "language model ... ✅ verified" rows and orange model
bars; a 16 kB text held the page for 11 minutes (the payload row with another row's timings, a header said to
"dominate" 0.6 % of a file); and the over-limit notice sent students to a command line.
"""

from __future__ import annotations

import re
from pathlib import Path

import gradio as gr
import pytest

from components import compress_text as ct
from models.compression.text import compare as text_compare
from models.compression.text import lm_codec

MODEL = "smollm2-135m-instruct"
SHORT = "Alice was beginning to get very tired of sitting by her sister on the bank."
ORANGE = {"#f59e0b", "#fcd34d"}  # the model's bars (its files, their payloads)


def _compress(text, upload=None, coder=ct.MIXING):
    status, rows, bars, heat, curve, _lz, _huff, download = ct.compress_text(text, upload, MODEL, coder,
                                                                             progress=lambda *a, **k: None)
    return status, rows, bars, heat, curve, download


def test_latin1_bytes_the_model_cannot_spell_get_no_model_rows_or_model_charts(tmp_path):
    """"û" is the byte FB in Latin-1 and SmolLM2 has no token for it: the .lmlt file holds LZMA's output. No row,
    bar, heat map or line may say the model coded it; the one row for that file is named for what it is."""
    path = tmp_path / "creme.txt"
    path.write_bytes(b"caf\xe9 cr\xe8me br\xfbl\xe9e\n" * 40)
    status, rows, bars, heat, curve, download = _compress(None, str(path))
    coders = [r[0] for r in rows]
    assert not any(c.startswith("language model") for c in coders), coders
    assert coders[-1] == text_compare.LZMA_FILE and "LZMA" in rows[-1][1] and rows[-1][-1] == "✅ verified"
    assert rows[-1][3] == len(Path(download).read_bytes())  # the row is the file offered for download
    assert "did not code this input" in status and text_compare.LZMA_FILE in status
    assert "language-model rows" not in status and "cross-entropy **" not in status
    (trace,) = bars.data
    assert not any("model" in str(name) and "LZMA" not in str(name) for name in trace.x), trace.x
    assert not ORANGE & set(trace.marker.color)  # grey: nothing here is the model's
    assert "class='tok'" not in heat and "tokview-legend" not in heat and "No heat map" in heat
    names = [t.name for t in curve.data]
    assert not any(n.startswith("language model") for n in names), names
    assert all(len(t.x) == 2 for t in curve.data)  # every line listed is drawn (straight, from 0 to the end)


def test_the_payload_row_names_its_file_and_carries_that_files_times():
    """The "payload only" row is the downloadable file less its header: it names that file's coder and shows
    that file's seconds (it showed the mixing coder's times under a name that read as the model alone's)."""
    status, rows, bars, _heat, _curve, download = _compress(SHORT)
    by_name = {r[0]: r for r in rows}
    (payload,) = [r for r in rows if "payload only" in r[0]]
    (source,) = [r for name, r in by_name.items() if name.startswith("language model") and "payload" not in name
                 and r[3] == len(Path(download).read_bytes())]
    assert payload[0].startswith(source[0].split(" (")[0] + ",")
    assert payload[5:7] == source[5:7] and payload[1] == source[1]
    header = lm_codec.read_header(Path(download).read_bytes())
    whose = "mixing coder's" if "mixer" in header else "model alone's"
    assert f"The file to download is the {whose}" in status
    assert f"It took {source[5]:.1f} s to compress" in status
    assert "dominates" not in status
    labels = list(bars.data[0].x)
    assert len(set(labels)) == len(labels)


@pytest.mark.slow
def test_a_long_text_is_coded_in_short_lanes_and_says_so(monkeypatch):
    """Above ``UI_LANES_FROM_CPU`` tokens the page codes in lanes of about 450 tokens (the preset gave a 16 kB
    text 2 lanes of ~1,900 steps: 11 minutes on two cores). The threshold is lowered here so that ~700 tokens
    show it in seconds, not minutes; a text under it keeps one lane and the compact header."""
    text = " ".join([SHORT, "She had peeped into the book her sister was reading, but it had no pictures or "
                     "conversations in it, and what is the use of a book without pictures or conversations?"] * 16)
    monkeypatch.setattr(text_compare, "UI_LANES_FROM_CPU", 300, raising=False)  # absent before the fix
    status, rows, *_rest, download = _compress(text, coder=ct.MODEL_ONLY)
    header = lm_codec.read_header(Path(download).read_bytes())
    assert header["n_tokens"] > 600 and header.get("prime") == 128 and header["lanes"] >= 2
    assert all(n <= 450 for n in lm_codec.lane_lengths(header["n_tokens"] - 128, header["lanes"]))
    assert f"coded it in {header['lanes']} pieces side by side" in status
    share = re.search(r"header \(the model's fingerprint, checksums\) is ([\d.]+)% of it", status)
    blob = Path(download).read_bytes()
    assert share and float(share.group(1)) == pytest.approx(100 * (len(blob) - header["payload_bytes"]) / len(blob),
                                                            abs=0.06)
    assert all(r[-1] == "✅ verified" for r in rows)


def test_over_the_limit_says_what_to_do_in_the_page():
    """The notice ended "use the command line ...: python -m models.compression text compress FILE": students
    read it. It says what the page takes and that a shorter piece works; the API gets the same text."""
    with pytest.raises(gr.Error) as refused:
        _compress("x" * 16_001)
    message = str(refused.value.message)
    assert "at most 4,000 tokens and 16,000 bytes" in message and "16,001 bytes" in message
    assert "shorter piece" in message and "python -m" not in message and "FILE" not in message

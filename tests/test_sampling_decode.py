"""Step 4, "Sampling is decompression": the decode ends where the model ends its text, both views show the
same tokens and bits, and token text is escaped exactly once. A teacher saw, with the defaults,
"What can I offer?<|im_end|>↵ <|im_start|>assistant↵ It&#x27;s an exciting endeavor" on the projector."""

from __future__ import annotations

import html
import re
from fractions import Fraction
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest

from models.compression.text import coding_steps

MODEL = "smollm2-135m-instruct"
START = "Once upon a time"
ENDING_SEED = 22  # decodes 30 tokens after START, the last SmolLM2's end of turn


def test_bits_read_is_the_shortest_prefix_whose_numbers_all_lie_in_the_interval():
    assert coding_steps.bits_read("0110" + "0" * 60, Fraction(1, 4), Fraction(1, 4)) == 2  # [0.01, 0.10) in binary
    # [0.3, 0.55), u = 0.01101: "01" covers [0.25, 0.5), partly outside; "011" covers [0.375, 0.5), inside
    assert coding_steps.bits_read("01101", Fraction(3, 10), Fraction(1, 4)) == 3
    assert coding_steps.bits_read("1000", Fraction(1, 4), Fraction(1, 4)) is None  # u = 0.5 is not in it
    tiny = Fraction(1, 2**1500)  # narrower than any float: counted without log2
    assert coding_steps.bits_read("0" * 1600, Fraction(0), tiny) == 1500


def test_text_end_ids(gpt2_tokenizer):
    assert gpt2_tokenizer.eos_token_id in coding_steps.text_end_ids(gpt2_tokenizer)  # <|endoftext|>
    assert gpt2_tokenizer.encode(" the")[0] not in coding_steps.text_end_ids(gpt2_tokenizer)


def test_the_decode_stops_at_the_end_of_the_text(tiny_gpt2, monkeypatch):
    """The same arithmetic decode, cut at the first end token: that token is the last step, writes no text,
    and its bits count."""
    _, free = coding_steps.sampling_steps(tiny_gpt2, seed=3, n_tokens=12, precision="fp32")
    assert not any(s.end for s in free)
    end_id = free[4].token_id  # pretend the random model's fifth token is its end of text
    first = next(i for i, s in enumerate(free) if s.token_id == end_id)
    monkeypatch.setattr(coding_steps, "text_end_ids", lambda tokenizer: frozenset({end_id}))
    _, ended = coding_steps.sampling_steps(tiny_gpt2, seed=3, n_tokens=12, precision="fp32")
    assert len(ended) == first + 1 and ended[-1].end and ended[-1].token == ""
    assert not any(s.end for s in ended[:-1])
    assert [(s.token_id, s.low, s.width) for s in ended] == [(s.token_id, s.low, s.width) for s in free[:first + 1]]
    assert all(o.token == "" for s in ended for o in s.others if o.end)


def test_the_bits_read_decide_the_decode(tiny_gpt2, monkeypatch):
    """Any u that starts with the bits the page says were read decodes to the same tokens."""
    bits, steps = coding_steps.sampling_steps(tiny_gpt2, seed=3, n_tokens=8, precision="fp32")
    k = coding_steps.bits_read(bits, steps[-1].low, steps[-1].width)
    assert steps[-1].total_bits - 1e-9 <= k <= len(bits) and k >= len(steps[-1].settled)
    for tail in "01":
        monkeypatch.setattr(coding_steps, "random_bits", lambda seed, t=tail: bits[:k] + t * (len(bits) - k))
        _, again = coding_steps.sampling_steps(tiny_gpt2, seed=3, n_tokens=8, precision="fp32")
        assert [s.token_id for s in again] == [s.token_id for s in steps]


def test_pictures_escape_token_text_once_and_name_the_end():
    """Plotly reads labels as its own markup (it turns &lt; &gt; &amp; back); the table is HTML; a note is Markdown."""
    import markdown

    from components.common import md_literal
    from components.compress_text import steps_table
    from components.plots import END_OF_TEXT, interval_figure

    def step(token, end=False):
        return SimpleNamespace(token=token, end=end, p=0.5, start=0.25, bits=1.0, total_bits=1.0, settled="01",
                               u_position=0.3, others=[SimpleNamespace(token=token, end=end, start=0.0, p=0.2)])

    steps = [step("<br>"), step("&amp;"), step("'s"), step("", end=True)]
    fig = interval_figure(steps, "t")
    assert list(fig.data[1].y) == ["1. &lt;br&gt;", "2. &amp;amp;", "3. 's", f"4. {END_OF_TEXT}"]
    cells = re.findall(r"<b>(.*?)</b>", steps_table(steps, sampling=True))
    assert [html.unescape(c) for c in cells] == ["<br>", "&amp;", "'s", END_OF_TEXT]
    assert markdown.markdown(md_literal("It's <b>&amp;")) == "<p>It's &lt;b&gt;&amp;amp;</p>"


class _Cells(HTMLParser):
    """The text of each element of one tag, as a browser shows it."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag, self.open, self.out = tag, 0, []

    def handle_starttag(self, tag, attrs):
        if tag == self.tag:
            self.open += 1
            self.out.append("")

    def handle_endtag(self, tag):
        if tag == self.tag:
            self.open -= 1

    def handle_data(self, data):
        if self.open:
            self.out[-1] += data


def _texts(markup: str, tag: str) -> list[str]:
    parser = _Cells(tag)
    parser.feed(markup)
    return parser.out


@pytest.mark.slow
def test_a_decode_ends_where_the_model_ends_its_text():
    """The handlers both buttons call, with the tab's defaults but a seed that reaches SmolLM2's end of turn
    (the default seed did when the decoder ran in bfloat16; seed 22 does in float32, the precision a one-lane
    decode runs in now): the page names it in plain words, shows no chat-template token, and the two views
    agree token for token."""
    from components import sampling_decode

    text, heat, note = sampling_decode.sample_bits(MODEL, ENDING_SEED, 40, START)
    fig, table, steps_note = sampling_decode.sampling_steps(MODEL, ENDING_SEED, 40, START)
    labels = [str(v) for d in fig.data for v in [*(d.y if d.y is not None else []), *(d.text or [])]]
    shown = [text, heat, note, table, steps_note, *labels]
    for page_text in shown:
        assert "<|im_" not in page_text and "&lt;|im_" not in page_text and "assistant" not in page_text
        assert "&amp;#" not in page_text and "&\\#" not in page_text
    from components.plots import END_OF_TEXT  # after the checks above, which need nothing new

    rows = _texts(table, "tr")[1:]
    n = len(rows)
    assert n < 40  # the model ended its text first
    for said in (note, steps_note):
        assert f"ended its text here, after {n - 1} tokens" in said and f"token {n} is its end-of-text token" in said
    heat_tokens = _texts(heat.split("tokview-legend")[0], "span")
    table_tokens = _texts(table, "b")
    assert len(heat_tokens) == n and heat_tokens[-1] == table_tokens[-1] == END_OF_TEXT
    assert [t.replace(" ", "␣").replace("\n", "↵") for t in heat_tokens[:-1]] == table_tokens[:-1]
    assert text == START + "".join(heat_tokens[:-1])
    assert re.findall(r"data-tip='([\d.]+) bits'", heat) == [re.findall(r"<td>([\d.]+)</td>", r)[-2] for r in
                                                                re.findall(r"<tr><td>\d+</td>.*?</tr>", table)]
    assert list(fig.data[1].y)[-1] == f"{n}. {END_OF_TEXT}" and len(fig.data[1].y) == n
    read = re.search(r"read the first \*\*(\d+) bits\*\* of u", note).group(1)
    assert f"read the first **{read} bits** of u" in steps_note


@pytest.mark.slow
def test_an_apostrophe_prints_as_an_apostrophe():
    """Seed 5 decodes ", Mars is named after the sun. That's crucial…": the note printed "That&#x27;s" (escaped
    for HTML, its '#' then escaped for Markdown); the table and the chart show it once escaped, as the browser
    needs."""
    import markdown

    from components import sampling_decode

    fig, table, note = sampling_decode.sampling_steps(MODEL, 5, 30, START)
    assert "That's" in note and "&#x27;" not in note and "&\\#" not in note
    assert "That's" in html.unescape(markdown.markdown(note))
    assert "'s" in _texts(table, "b")
    assert any(str(y).endswith(". 's") for y in fig.data[1].y)

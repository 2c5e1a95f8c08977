"""Step 3 of the lesson, the Compress tab: classic coders vs the language model on one text, all verified;
inside LZ77 and LZ78; arithmetic coding step by step; restoring a file."""

from __future__ import annotations

import html
import json
from pathlib import Path

import gradio as gr
import plotly.graph_objects as go

from components import mixing_view, model_note
from components.common import COLUMN_MIN_WIDTH, WholeSlider, explain, guard
from components.plots import END_OF_TEXT, FONT, bar_figure, interval_figure
from components.tokens import TIP_INSIDE_JS, bits_colour, legend_chips, visible
from models.compression.text import byte_pieces, coding_steps, lm_codec, mixing
from models.compression.text import compare as text_compare
from models.core import registry
from models.core.errors import InputError, ModelUnavailable

# The app codes with the default settings (the "fast" preset): a text up to 16 kB gets few long lanes,
# and a catalogue model's file gets the compact header.
UI_CODEC = lm_codec.PRESETS["fast"]

EXPLANATION = """
**Entropy.** If a source emits symbols with probabilities p, no lossless code can average fewer than
H = −Σ p·log₂ p bits per symbol. A symbol of probability p ideally costs −log₂ p bits (its *surprisal*).

**Huffman vs arithmetic coding.** Huffman gives every symbol a whole number of bits (at least 1), from one
fixed table. An **arithmetic (range) coder** narrows an interval by each symbol's probability, so it spends
−log₂ p bits — fractions of a bit for likely symbols — and the probabilities may change at every step.

**Why a better model compresses better.** Feed the coder a language model's next-token probabilities: the
file size is the model's cross-entropy on the text (the table shows both; the gap is the coder's own
overhead, a header and the last 32-bit word). Deflate, bzip2, LZMA and zstd find repeated strings; a
language model also knows grammar, facts and style, so the common words cost almost nothing and names and
numbers cost the most (see the heat map). Decoding runs the same model and needs the **exact** same
probabilities: the file records a fingerprint of the model, tokenizer, precision, device and library
versions and refuses to decode elsewhere rather than produce garbage.

**Sampling is decompression.** Give the decoder random bits instead of a compressed file: it "decodes"
them into text the model finds likely — a sample at temperature 1. The same seed gives the same text.
"""

# The "Coder" choice: the mixing coder (the default) or the language model alone (the lesson's comparison).
MIXING, MODEL_ONLY = "mixing", "model only"
CODER_CHOICES = [("Model + n-gram + match (mixing coder)", MIXING), ("Model only", MODEL_ONLY)]

_HEADERS = ["coder", "kind", "bytes in", "bytes out", "bits/byte", "seconds to compress", "seconds to decompress", "verified"]


def model_choices() -> list[tuple[str, str]]:
    return [(s.label, s.key) for s in registry.catalogue(registry.CAUSAL_LM)]


def _input_bytes(text: str | None, upload) -> bytes:
    if upload:
        return Path(upload if isinstance(upload, str) else upload.name).read_bytes()
    return (text or "").encode("utf-8")


def heat_map(tokens: list[lm_codec.TokenCost], limit: int = 4000, dom_id: str = "ct-heat") -> str:
    parts = []
    for t in tokens[:limit]:
        text = html.escape(t.text).replace("\n", "↵<br>")
        parts.append(f"<span class='tok' style='background:{bits_colour(t.bits)}' "
                     f"data-tip='{t.bits:.2f} bits'>{text}</span>")
    more = f" · first {limit:,} of {len(tokens):,} tokens shown" if len(tokens) > limit else ""
    legend = ("<div class='tokview-legend'>colour = bits the coder spent on the token (the same colours as Generate): "
              f"{legend_chips()} · hover a token for its cost{more}</div>")
    return f"<div class='tokview' id='{dom_id}'>{''.join(parts)}</div>{legend}"


def _cumulative_figure(c: text_compare.Comparison) -> go.Figure:
    """The model's running total of bits (when it coded the input) and each other row's average rate."""
    fig = go.Figure()
    if c.model_coded:
        xs, ys, total, pos = [0], [0.0], 0.0, 0
        for t in c.lm.tokens:
            pos += len(t.text.encode("utf-8", "replace"))
            total += t.bits
            xs.append(pos)
            ys.append(total)
        fig.add_scatter(x=xs, y=ys, mode="lines", name="language model (cumulative −log₂ p)", line=dict(width=3))
    n = c.lm.n_bytes
    others = [row for row in c.rows if not text_compare.is_model_row(row.coder)]
    # the bars' labels: the long name of the LZMA file's row squeezed the chart to a strip beside its legend
    for row, name in zip(others, _bar_names([row.coder for row in others]), strict=True):
        fig.add_scatter(x=[0, n], y=[0, row.compressed_bytes * 8], mode="lines", name=f"{name} (average)",
                        line=dict(dash="dot"))  # a straight line: the coder's average rate
    fig.update_layout(font=FONT, height=420, margin=dict(l=60, r=10, t=50, b=40), title="Cumulative bits along the text",
                      xaxis_title="bytes of input", yaxis_title="bits", legend=dict(font=dict(size=12)))
    return fig


def _piece_html(piece: byte_pieces.Piece, visible=lambda t: html.escape(t).replace("\n", "↵<br>")) -> str:
    """One piece of a byte range: whole characters as they are; part of a character as that character with
    "which bytes of how many" (the parse is over bytes, so a phrase may end inside "ö"); a byte that is not
    UTF-8 as its value in hex."""
    hexed = " ".join(f"{b:02X}" for b in piece.raw)
    if piece.whole:
        return visible(piece.text)
    if not piece.of:
        return (f"<span class='byte-part' data-tip='byte {hexed}: not part of any UTF-8 character'>"
                f"‹{hexed}›</span>")
    which = f"{piece.first}" if piece.first == piece.last else f"{piece.first}–{piece.last}"
    whole = " ".join(f"{b:02X}" for b in piece.text.encode("utf-8"))
    tip = (f"byte{'s' if piece.last > piece.first else ''} {which} of the {piece.of} bytes of "
           f"“{piece.text}” (UTF-8 {whole}): the phrase boundary falls inside this character")
    return (f"<span class='byte-part' data-tip='{html.escape(tip)}'>{html.escape(piece.text)}"
            f"<sup>{which}/{piece.of}</sup></span>")


def _bytes_html(chars: byte_pieces.CharMap, start: int, end: int, **kw) -> str:
    return "".join(_piece_html(p, **kw) for p in chars.pieces(start, end))


PARTS_NOTE = ("A character of several bytes cut by a phrase boundary is shown in both phrases, boxed, with the "
              "bytes each holds: <span class='byte-part'>ö<sup>1/2</sup></span> is the first of its 2 bytes.")


def _lz77_parse(data: bytes, ops) -> tuple[str, int, int]:
    """The parse as HTML spans (copies marked with their (distance, length); neighbouring literals in one
    span, so a character spelled by several literal bytes reads whole), literal count, copy count."""
    chars = byte_pieces.CharMap(data)
    parts, refs, literal_from = [], 0, None
    for k, op in enumerate(ops):
        if not op.distance:
            literal_from = op.start if literal_from is None else literal_from
            if k + 1 < len(ops) and not ops[k + 1].distance:
                continue
            parts.append(f"<span class='lz-lit'>{_bytes_html(chars, literal_from, op.start + op.length)}</span>")
            literal_from = None
            continue
        refs += 1
        piece = _bytes_html(chars, op.start, op.start + op.length)
        parts.append(f"<span class='lz-ref' data-tip='copy {op.length} bytes from {op.distance} back'>{piece}"
                     f"<sub>({op.distance},{op.length})</sub></span>")
    return "".join(parts), len(ops) - refs, refs


def _lz77_html(c: text_compare.Comparison) -> str:
    if c.lz77 is None:
        return f"<p>The LZ77 view draws inputs up to {text_compare.text_baselines.LZ77_MAX_INPUT:,} bytes.</p>"
    parse, lits, refs = _lz77_parse(c.data, c.lz77)
    return (f"<p><b>{lits:,} literals</b> and <b>{refs:,} back-references</b> "
            "<span class='lz-ref'>(distance, length)</span>: repeats become pointers to earlier text."
            f"</p><div class='tokview' id='ct-lz77'>{parse}</div>")


def _lz77_view(v: text_compare.DictionaryView) -> str:
    parse, lits, refs = _lz77_parse(v.data, v.lz77)
    parts = f" {PARTS_NOTE}" if "byte-part" in parse else ""
    return (f"<h3>LZ77: pointers back into the text</h3><p><b>{lits:,} literals</b> and "
            f"<b>{refs:,} copies</b> <span class='lz-ref'>(distance, length)</span>.{parts}</p>"
            f"<div class='tokview lz-view' id='ct-lz77-parse'>{parse}</div>")


def _lz78_view(v: text_compare.DictionaryView) -> str:
    chars = byte_pieces.CharMap(v.data)
    shown = dict(visible=_show)  # as the dictionary table below writes the same phrases
    parts = []
    for p in v.lz78:
        cut = p.start + p.length - (p.byte is not None)
        parts.append(f"<span class='lz78-phrase' data-tip='phrase {p.index} = phrase {p.parent} + one byte'>"
                     f"<span class='lz78-old'>{_bytes_html(chars, p.start, cut, **shown)}</span>"
                     f"<span class='lz78-new'>{_bytes_html(chars, cut, p.start + p.length, **shown)}</span>"
                     f"<sub>{p.index}</sub></span>")
    body = "".join(parts)
    note = f" {PARTS_NOTE}" if "byte-part" in body else ""
    return (f"<h3>LZ78: pointers into a growing dictionary</h3><p><b>{len(v.lz78):,} phrases</b>, each "
            "<span class='lz78-old'>a phrase seen before</span> + <span class='lz78-new'>one new byte</span> (a "
            f"character, or one byte of a longer one); the small number is the new phrase's index.{note}</p>"
            f"<div class='tokview lz-view' id='ct-lz78-parse'>{body}</div>")


def _show(text: str) -> str:
    """Spaces and line ends made visible: a phrase is often just " t"."""
    return html.escape(visible(text))


def _dictionary_table(v: text_compare.DictionaryView) -> str:
    chars = byte_pieces.CharMap(v.data)
    shown = dict(visible=_show)
    body = []
    for r in v.rows:
        p = v.lz78[r.index - 1]  # phrase i is the i-th parsed (lz78.dictionary_rows)
        cut = p.start + p.length - (p.byte is not None)
        old = _bytes_html(chars, p.start, cut, **shown)
        new = _bytes_html(chars, cut, p.start + p.length, **shown)
        body.append(f"<tr><td>{r.index}</td><td class='lz78-cell'><span class='lz78-old'>{old}</span>"
                    f"<span class='lz78-new'>{new}</span></td><td>= #{r.parent} "
                    f"<span class='lz78-old'>{old or '∅'}</span> + <span class='lz78-new'>{new or 'end'}</span>"
                    f"</td></tr>")
    more = f" (the first {len(v.data):,} of {v.total_bytes:,} bytes)" if v.total_bytes > len(v.data) else ""
    return (f"<h3>The LZ78 dictionary growing: its first {len(v.rows)} phrases{more}</h3>"
            "<p>Each new phrase is an old phrase (blue, by its number) plus one byte (orange). The file stores "
            "only the pair (old number, byte); the decoder rebuilds the same dictionary as it reads. LZW starts "
            "with all 256 single bytes in the dictionary, so it stores only numbers.</p>"
            f"<div class='lz78-scroll'><table class='lz78-table' id='ct-lz78-dict'><thead><tr><th>#</th><th>phrase</th>"
            f"<th>made of</th></tr></thead><tbody>{''.join(body)}</tbody></table></div>")


@guard
def dictionary_coders(text, upload):
    """LZ77 and LZ78 on the same text: both parses and the LZ78 dictionary's first hundred phrases."""
    v = text_compare.dictionary_view(_input_bytes(text, upload))
    return _lz77_view(v), _lz78_view(v), _dictionary_table(v)


def _slice(start: float, p: float) -> str:
    """[start, start + p) with as many decimals as it takes (4 to 12) for its two ends to differ: at 4 a token of
    p = 4e-5 read "[0.9348, 0.9348)", an empty slice to a class."""
    digits = 4
    while digits < 12 and f"{start:.{digits}f}" == f"{start + p:.{digits}f}":
        digits += 1
    return f"[{start:.{digits}f}, {start + p:.{digits}f})"


def steps_table(steps, sampling: bool = False) -> str:
    head = "<th>u falls at</th>" if sampling else ""
    body = "".join(
        f"<tr><td>{i + 1}</td><td><b>{END_OF_TEXT if getattr(s, 'end', False) else _show(s.token)}</b></td>"
        f"<td>{s.p:.4g}</td>"
        + (f"<td>{s.u_position:.4f}</td>" if sampling else "")
        + f"<td>{_slice(s.start, s.p)}</td><td>{s.bits:.2f}</td><td>{s.total_bits:.1f}</td>"
        f"<td class='ac-bits'>{len(s.settled)}: {s.settled[-48:] if len(s.settled) <= 48 else '…' + s.settled[-47:]}</td></tr>"
        for i, s in enumerate(steps))
    return ("<table class='lz78-table ac-table'><thead><tr><th>step</th><th>token</th><th>p</th>" + head
            + "<th>its slice of the interval</th><th>−log₂ p</th><th>bits so far</th><th>bits settled</th></tr></thead>"
            f"<tbody>{body}</tbody></table>")


@guard
def arithmetic_steps(text, upload, model_key, n_steps):
    """The first tokens of the text coded step by step: interval, slices, probabilities, settled bits."""
    loaded = registry.load_causal_lm(model_key)
    steps = coding_steps.encode_steps(_input_bytes(text, upload), loaded, int(n_steps or 20))
    last = steps[-1]
    note = (f"After {len(steps)} tokens the interval is 2<sup>−{last.total_bits:.1f}</sup> wide: the product of the "
            f"{len(steps)} probabilities. Any number inside it identifies these tokens, and writing one takes about "
            f"{last.total_bits:.0f} bits; **{len(last.settled)} bits** are already settled (low and high agree on them). "
            "The probabilities are the ones the compressor feeds its range coder.")
    fig = interval_figure(steps, "Arithmetic coding: each token narrows the interval")
    return fig, steps_table(steps), with_model_note(note, loaded)


def with_model_note(note: str, loaded: registry.Loaded) -> str:
    """``note``, then what loading the model changed (ids its tokenizer cannot spell left out), if anything."""
    return f"{note}\n\n**Note:** {loaded.note}" if loaded.note else note


def _huffman_md(c: text_compare.Comparison) -> str:
    st = c.huffman.stats

    def byte(symbol: int) -> str:  # a "|" would end the markdown table's cell
        return html.escape(visible(chr(symbol))).replace("|", "\\|")

    rows = "\n".join(f"| {byte(t['symbol'])} | {t['p']:.3f} | {t['bits']:.2f} | {t['length']} | `{t['code']}` |"
                     for t in st.top[:8])
    return (f"**Order-0 Huffman on bytes**: entropy {st.entropy:.3f} bits/byte, average code {st.avg_length:.3f} "
            f"(efficiency {st.efficiency:.1%}), {st.leaves} distinct bytes, longest code {st.depth} bits.\n\n"
            "| byte | p | −log₂ p | length | code |\n|---|---|---|---|---|\n" + rows)


def _short(coder: str) -> str:
    """A chart label: the coder's name without its parenthesis; the model's rows by the names the "Language-model
    coder" choice uses. Each label must differ: plotly draws bars of the same name on one spot, one over the other."""
    if text_compare.is_model_row(coder):
        if text_compare.PAYLOAD_ONLY in coder:  # short, so the labels lie at a slant; its table row names the file
            return "payload, no header"
        return "model + n-gram + match" if coder.startswith(text_compare.MIXING_CODER.split(" (")[0]) else "model only"
    if coder == text_compare.LZMA_FILE:
        return "LZMA in .lmlt file"
    return coder.split(" (")[0]


def _bar_colour(coder: str) -> str:
    """Orange: a file the model coded; light orange: its payload without the header; grey: everything else
    (the LZMA file the model did not code included)."""
    if not text_compare.is_model_row(coder):
        return "#94a3b8"
    return "#fcd34d" if text_compare.PAYLOAD_ONLY in coder else "#f59e0b"


def _bar_names(coders: list[str]) -> list[str]:
    """Short labels, or the full name wherever two short ones would be the same bar."""
    short = [_short(c) for c in coders]
    return [s if short.count(s) == 1 else c for s, c in zip(short, coders, strict=True)]


@guard
def compress_text(text, upload, model_key, coder=MIXING, progress=gr.Progress()):
    """Compress with every coder, verify each by decoding, and show where the model spends its bits.
    ``coder``: "mixing" (the model alone and the mixing coder from one pass, the smaller file offered)
    or "model only" (the language model alone)."""
    if coder not in (MIXING, MODEL_ONLY):
        raise InputError(f"unknown coder {coder!r}: choose {MIXING!r} or {MODEL_ONLY!r}")
    data = _input_bytes(text, upload)
    loaded = registry.load_causal_lm(model_key)
    c = text_compare.compare(data, loaded, UI_CODEC, limit=text_compare.ui_limit(loaded),
                             max_tokens=text_compare.ui_token_limit(loaded), progress=lambda f, m: progress(f, desc=m),
                             mixer=None if coder == MODEL_ONLY else mixing.DEFAULT,
                             lanes_from=text_compare.ui_lanes_from(loaded), name=_file_name(upload) or "text")
    rows = [[r.coder, r.family, r.original_bytes, r.compressed_bytes, round(r.bpb, 3), round(r.compress_s, 3),
             round(r.decompress_s, 3), "✅ verified" if r.verified else "❌"] for r in c.rows]
    best = min((r for r in c.rows if text_compare.PAYLOAD_ONLY not in r.coder), key=lambda r: r.compressed_bytes)
    colors = [_bar_colour(r.coder) for r in c.rows]
    fig = bar_figure(_bar_names([r.coder for r in c.rows]), [r.bpb for r in c.rows], "Bits per byte (lower is better; raw text = 8)",
                     "bits per byte", colors, [f"{r.bpb:.2f}" for r in c.rows])
    lm = c.lm
    head = (f"✅ {_input_name(text, upload)}: {lm.n_bytes:,} bytes; every row decoded and compared byte for byte. "
            f"Smallest file: **{best.coder}** at {best.bpb:.3f} bits/byte.")
    if not c.model_coded:
        # No token was coded, so there is no cross-entropy, heat map or per-token cost to report: say so, with
        # the reason, and name the one row that is there for what it is (the model's rows claimed a "LM + range
        # coder" file and drew orange bars for LZMA's bytes).
        header_bytes = len(lm.blob) - lm.header["payload_bytes"]
        status = (f"{head}\n\n⚠️ The model did not code this input: {lm.note}. So the table has no language-model "
                  f"row: its last row, **{text_compare.LZMA_FILE}**, is LZMA's output (the LZMA row above) plus the "
                  f"file's {header_bytes:,}-byte header. There is no model cross-entropy, no heat map and no model line "
                  "in the cumulative chart.")
        heat = ("<p id='ct-heat-none'>No heat map: the model did not code this input, so no token has a cost "
                "(see the note above the table).</p>")
        return (status, rows, fig, heat, _cumulative_figure(c), _lz77_html(c), _huffman_md(c), str(c.path))
    ce_bpb = lm.cross_entropy_bits / lm.n_bytes
    header_bytes = len(lm.blob) - lm.header["payload_bytes"]
    share = header_bytes / len(lm.blob)
    whose = "mixing coder's" if "mixer" in lm.header else "model alone's"
    # The tokens' bits are under the distribution the file was coded with: the mixing coder's, when its file won.
    ce_name = ("The mixing coder's cross-entropy" if "mixer" in lm.header else "Model cross-entropy")
    alone = f" (the model alone's: {lm.model_bits / lm.n_bytes:.3f})" if "mixer" in lm.header else ""
    status = (f"{head} The model read it as {lm.header['n_tokens']:,} tokens.\n\n"
              f"{ce_name} **{ce_bpb:.3f}** bits/byte{alone}; range-coder payload "
              f"{lm.payload_bits / lm.n_bytes:.3f} (overhead {lm.overhead:+.2%}). The file to download is the "
              f"{whose}: its {header_bytes:,}-byte header (the model's fingerprint, checksums) is {share:.1%} of it"
              + (", more than the text's own bits: a header weighs on short texts" if share > 0.5 else "")
              + f". It took {lm.seconds:.1f} s to compress and {c.lm_decode_s:.1f} s to decompress: the model runs "
              "once per token each way.")
    if c.short_lanes:
        opening = lm.header.get("prime", 0)
        reads = f", each reading the text's first {opening:,} tokens before its own piece" if opening else ""
        status += (f"\n\nℹ️ A long text: to answer in a minute or two, the model coded it in {lm.header['lanes']} "
                   f"pieces side by side{reads} (a text up to {text_compare.UI_LANES_FROM_CPU:,} tokens goes in one "
                   "piece). Each piece starts without the text before it, which costs a few percent more bits, and "
                   "the file records these settings in full, so its header is larger.")
    if lm.note:
        status += f"\n\nℹ️ {lm.note[0].upper()}{lm.note[1:]}."
    if lm.breaks is not None:
        said = lm.breaks.describe()
        status += f"\n\nℹ️ {said[0].upper()}{said[1:]}."
    return (status, rows, fig, heat_map(lm.tokens), _cumulative_figure(c), _lz77_html(c), _huffman_md(c),
            str(c.path))


@guard
def decompress_text(upload, progress=gr.Progress()):
    """Restore an uploaded .lmlt file (fingerprint and checksum checked) and show its text."""
    if not upload:
        raise InputError("upload a .lmlt file first: the file the Every coder view offers for download, or one "
                         "made with LM Lab's command line")
    path = Path(upload if isinstance(upload, str) else upload.name)
    data, out, header = text_compare.decompress_file(path.read_bytes(), path.name,
                                                     progress=lambda f, m: progress(f, desc=m))
    return _shown(data), str(out), (f"✅ restored {len(data):,} bytes as **{html.escape(out.name)}**, {_coded_by(header)}; "
                                    "its checksum matches the original's: every byte is the same.")


def _shown(data: bytes) -> str:
    """What the Restored text box shows: the text; for bytes that are mostly not text, a note instead of their
    noise (a Latin-1 letter here and there still shows, as a replacement mark)."""
    text = data.decode("utf-8", "replace")
    if text_compare.is_utf8(data):
        return text
    odd = sum(c == "\ufffd" or (c < " " and c not in "\t\n\r") for c in text)
    if odd > 0.05 * len(text):
        return (f"[{len(data):,} bytes that are not text, so they are not shown here: download the restored file "
                "to open it]")
    return text + "\n\n[some of the restored bytes are not valid UTF-8 (shown as �); download the file]"


def _coded_by(header: dict) -> str:
    """How the file was coded, in words: the model by its name, or LZMA where the model could not spell the input."""
    if header.get("mode") == "lzma":
        return "coded with LZMA (the model could not spell this input)"
    key = header.get("fingerprint", {}).get("model", "")
    try:
        name = registry.get(key).label
    except ModelUnavailable:  # a model this server does not list: its id is all the file says
        name = key
    return f"coded by {name}"


def _stale(button: str) -> str:
    return (f"⚠️ **The text, file or model changed since these results were computed**: they describe the input "
            f"coded before. Press **{button}** for the current one.\n\n")


# A status line that shows a result (it starts with ✅) gets the note once; any other line stays as it is.
_STALE_JS = ("(status, mix) => [status && status.startsWith('✅') ? "
             f"{json.dumps(_stale('Compress with every coder'))} + status : status, mix && mix.startsWith('✅') ? "
             f"{json.dumps(_stale('Mix the model with the n-gram and match predictors'))} + mix : mix]")


# The results start below the fold at 1400x900: the page moves to them as coding starts, so a class sees the
# progress bar and then the table (a teacher clicked again, thinking nothing had started).
# From the lesson path ("Compress this text →" on Generate) the Compress tab is still being drawn when this runs,
# so it waits (up to 2 s) for the views to be there.
_SHOW_RESULTS_JS = """() => {
  let tries = 0;
  const show = () => {
    const views = document.getElementById('ct-views');
    if (views && views.offsetHeight > 0) views.scrollIntoView({behavior: 'smooth', block: 'start'});
    else if (tries++ < 20) setTimeout(show, 100);
  };
  show();
}"""


def _starting(text, upload):
    """Shown the moment Compress is pressed, before the coding is queued: the last text's results go (they stayed
    on screen for the 11 minutes a long text once took, read as this text's), and the status says what runs
    and how long it may take. Empty table, charts, heat map and download."""
    try:
        n = len(_input_bytes(text, upload))
    except OSError:  # gone or unreadable: compress_text says so
        n = 0
    long = " A long text can take a minute or two." if n > 2_000 else ""
    status = (f"⏳ Compressing {_input_name(text, upload)} ({n:,} bytes) with every coder, then decoding every file "
              f"to check it: the model takes one step per token each way.{long} The bar below shows the progress, "
              "or your place in the queue: the page codes one text at a time for everyone.")
    return status, None, None, "", None, None


def _not_compressed():
    """The status after a refused or failed Compress (the message itself is the notice at the top of the page)."""
    return ("⚠️ Nothing was compressed: the notice at the top of the page says why. The last results were "
            "cleared, so nothing here describes another text.")


def _no_restore():
    """Empty the Restore view's text, file and status."""
    return "", None, ""


_ASIDE = "Your text is set aside while a file is uploaded: remove the file to bring it back."


def _set_aside(text: str, kept: str):
    """An upload replaces the box's text as the input: the text is kept (a second upload keeps the first text)."""
    return gr.Textbox(value="", placeholder=_ASIDE), text or kept


def _bring_back(kept: str, text: str):
    """The upload was removed: the text set aside comes back, unless something new was typed meanwhile."""
    return gr.Textbox(value=text or kept, placeholder=""), ""


def _example(name: str | None):
    if not name:  # cleared because the box holds other text (see _picker_for): the box stays as it is
        return gr.update(), gr.update()
    return text_compare.example_text(name), None


def _picker_for(text: str, name: str | None):
    """The Example picker names an example only while the box holds exactly that example's text: after
    "Compress this text →", an upload or an edit it is emptied, so it never names what was not compressed."""
    if name in text_compare.EXAMPLES and text == text_compare.example_text(name):
        return gr.update()
    return None


def _file_name(upload) -> str | None:
    """The uploaded file's own name (Gradio keeps it as the last part of its temporary path)."""
    return Path(upload if isinstance(upload, str) else upload.name).name if upload else None


def _input_name(text: str | None, upload) -> str:
    """Which input was compressed, for the status line (an upload wins over the text box)."""
    if upload:
        return f"the uploaded file **{html.escape(_file_name(upload))}**"
    return "the text in the box"


def build() -> dict:
    """Lay out and wire the tab. Returns the text box, upload, model and ``compress_after(event)``, which
    chains "compress with every coder" after another event (the lesson path's "compress this text")."""
    names = list(text_compare.EXAMPLES)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=COLUMN_MIN_WIDTH):
            text = gr.Textbox(label="Text to compress", lines=5, value=text_compare.example_text(names[-1]),
                              elem_id="ct-text", max_lines=10)
        with gr.Column(scale=2, min_width=COLUMN_MIN_WIDTH):
            example = gr.Dropdown(names, value=names[-1], label="Example", elem_id="ct-example")
            choices = model_choices()
            model = gr.Dropdown(choices=choices, value=choices[0][1], label="Model", elem_id="ct-model")
            coder = gr.Radio(CODER_CHOICES, value=MIXING, label="Language-model coder", elem_id="ct-coder",
                             info="the mixing coder also learns from the text itself; model only is the plain model")
            go_btn = gr.Button("Compress with every coder", variant="primary", elem_id="ct-go")
            upload = gr.File(label="…or upload a file (any bytes)", elem_id="ct-upload")
    with gr.Tabs(elem_id="ct-views", overflow_behavior="wrap") as views:
        with gr.Tab("Every coder", id="ct-every"):
            status = gr.Markdown(f"Press **Compress with every coder**. The app codes {text_compare.UI_LIMITS_TEXT}: "
                                 "the model takes one step per token and each result is decoded again to verify it.",
                                 elem_id="ct-status", elem_classes=["lmlab-status"])
            # Wrapped cells in fixed shares of the width: sized by content, the coders' names pushed "bytes out"
            # past the right edge at 1400 px.
            # Tall enough for every row: the language-model rows come last and are the point of the table, so a
            # scroll box (Gradio's default 500 px) must not hide them.
            table = gr.Dataframe(headers=_HEADERS, label="Every coder on the same bytes", interactive=False,
                                 elem_id="ct-table", wrap=True, max_height=1200,
                                 column_widths=["16%", "15%", "9%", "9%", "13%", "12%", "14%", "12%"])
            with gr.Row():
                bars = gr.Plot(label="Bits per byte", show_label=False, elem_id="ct-bars", min_width=COLUMN_MIN_WIDTH)
                curve = gr.Plot(label="Cumulative bits", show_label=False, elem_id="ct-curve", min_width=COLUMN_MIN_WIDTH)
            heat = gr.HTML(label="Bits per token", elem_id="ct-heatmap", js_on_load=TIP_INSIDE_JS)
            download = gr.File(label="The compressed file to download (.lmlt)", interactive=False, elem_id="ct-download")
        with gr.Tab("LZ77 and LZ78", id="ct-dictionary"):
            dict_btn = gr.Button("Show LZ77 and LZ78 on this text", elem_id="ct-dict-go")
            with gr.Row(equal_height=False):
                lz77_view = gr.HTML(elem_id="ct-lz77-view", js_on_load=TIP_INSIDE_JS)
                lz78_view = gr.HTML(elem_id="ct-lz78-view", js_on_load=TIP_INSIDE_JS)
            lz78_table = gr.HTML(elem_id="ct-lz78-table")
            lz = gr.HTML(visible=False)  # compress_text's LZ77 output, kept for API callers
            huff = gr.Markdown(elem_id="ct-huffman")
        with gr.Tab("Arithmetic coding", id="ct-arithmetic"):
            with gr.Row():
                ac_steps = WholeSlider(5, coding_steps.MAX_STEPS, value=20, label="Tokens to show", elem_id="ct-ac-n")
                ac_btn = gr.Button("Code the first tokens step by step", variant="primary", elem_id="ct-ac-go")
            ac_note = gr.Markdown(elem_id="ct-ac-note")
            ac_plot = gr.Plot(label="The coding interval, step by step", show_label=False, elem_id="ct-ac-plot")
            ac_table = gr.HTML(elem_id="ct-ac-table")
        with gr.Tab("Model + n-gram + match", id="ct-mixing"):
            mix_status = mixing_view.build(text, upload, model)  # the classic predictors mixed with the model
        with gr.Tab("Restore a file", id="ct-restore-tab"):
            with gr.Row():
                restore_in = gr.File(label="Upload a .lmlt file", file_types=[".lmlt"], elem_id="ct-restore-in")
                restore_out = gr.File(label="Restored file", interactive=False)
            restore_btn = gr.Button("Decompress", elem_id="ct-restore")
            restore_status = gr.Markdown(elem_id="ct-restore-status")
            restored = gr.Textbox(label="Restored text", lines=6, interactive=False, elem_id="ct-restored")
    explain("Entropy, Huffman vs arithmetic coding, and why a better model compresses better", EXPLANATION)

    example.change(_example, [example], [text, upload], api_visibility="private", queue=False)
    text.change(_picker_for, [text, example], [example], api_visibility="private", queue=False)
    # One input at a time, so it is plain which one is compressed: an upload sets the box's text aside (removing
    # the file brings it back: a pasted text is never lost), typing in the box removes the upload.
    kept = gr.State("")
    upload.upload(_set_aside, [text, kept], [text, kept], api_visibility="private", queue=False)
    upload.clear(_bring_back, [kept, text], [text, kept], api_visibility="private", queue=False)
    text.input(lambda: None, None, [upload], api_visibility="private", queue=False)
    model_note.attach(model, registry.CAUSAL_LM)
    # Results say so when the text, file or model they describe has changed (an example picked after compressing
    # the paragraph showed the paragraph's numbers under the new text): in the browser, no server call.
    for changed in (text.change, upload.change, model.change):
        changed(None, [status, mix_status], [status, mix_status], js=_STALE_JS, queue=False, api_visibility="private")
    compress_outputs = [status, table, bars, heat, curve, lz, huff, download]
    dict_outputs = [lz77_view, lz78_view, lz78_table]
    # Coding a whole text runs up to UI_TOKENS_* model steps twice: its own lane, so the shared model queue
    # (steps, sampling, beam search) never waits behind it.
    # Progress (and Gradio's timer) on the table under the status line, not on the line itself.
    # The view and the scroll first: Gradio's page runs one trigger's handlers in the order they were added,
    # and these waited for the whole coding when added after it.
    go_btn.click(lambda: gr.Tabs(selected="ct-every"), None, views, js=_SHOW_RESULTS_JS, queue=False,
                 api_visibility="private")
    # The last results go and the status says what runs, at once (not queued behind the class); then the coding.
    cleared = [status, table, bars, heat, curve, download]
    go = go_btn.click(_starting, [text, upload], cleared, queue=False, api_visibility="private", show_progress="hidden").then(
        compress_text, [text, upload, model, coder], compress_outputs, api_name="compress_text",
        concurrency_id="text_coding", concurrency_limit=1, show_progress_on=[table])
    go.failure(_not_compressed, None, [status], queue=False, api_visibility="private", show_progress="hidden")
    dict_btn.click(dictionary_coders, [text, upload], dict_outputs, api_name="dictionary_coders")
    go.then(dictionary_coders, [text, upload], dict_outputs, api_visibility="private")
    ac_btn.click(arithmetic_steps, [text, upload, model, ac_steps], [ac_plot, ac_table, ac_note],
                 api_name="arithmetic_steps", concurrency_id="model", show_progress_on=[ac_plot])
    # The last result goes first, so a refused file never shows next to the previous file's success.
    restore_outputs = [restored, restore_out, restore_status]
    restore_in.change(_no_restore, None, restore_outputs, api_visibility="private", queue=False)
    restore_btn.click(_no_restore, None, restore_outputs, api_visibility="private", queue=False).then(
        decompress_text, [restore_in], restore_outputs, api_name="decompress_text", concurrency_id="text_coding",
        show_progress_on=[restored])

    def compress_after(event) -> None:
        shown = event.then(lambda: gr.Tabs(selected="ct-every"), None, views, js=_SHOW_RESULTS_JS, queue=False,
                           api_visibility="private")
        started = shown.then(_starting, [text, upload], cleared, queue=False, api_visibility="private", show_progress="hidden")
        done = started.then(compress_text, [text, upload, model, coder], compress_outputs, api_visibility="private",
                            concurrency_id="text_coding", show_progress_on=[table])
        done.failure(_not_compressed, None, [status], queue=False, api_visibility="private", show_progress="hidden")
        done.then(dictionary_coders, [text, upload], dict_outputs, api_visibility="private")

    return {"text": text, "upload": upload, "model": model, "compress_after": compress_after}

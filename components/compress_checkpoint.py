"""The Checkpoint half of the Compress tab: Huffman statistics of the weights and verified savings."""

from __future__ import annotations

import gradio as gr
import plotly.graph_objects as go

from components.common import COLUMN_MIN_WIDTH, explain, guard
from components.plots import FONT, bar_figure, heading
from models.compression.checkpoint import analysis as ca
from models.compression.checkpoint import as_model
from models.core import handout, registry

EXPLANATION = """
**Entropy** H = −Σ p·log₂ p is the fewest bits per symbol any code can average for symbols drawn
independently with probabilities p. **Huffman** coding gets within one bit of it: repeatedly merge
the two rarest symbols into a node; the path from the root to a leaf (0 = left, 1 = right) is that
symbol's code, so frequent symbols get short codes. The **Kraft sum** Σ 2^−length is 1 for a full tree.

A float is sign · 2^exponent · 1.mantissa. Trained weights are small numbers of similar size, so the
**exponent** takes a handful of values (about 2.6 bits of entropy in 8) and compresses well; the
**mantissa** bits are close to random (about 7.97 bits in 8) and barely compress. This codec rotates
each value's bits so the exponent fills one byte, cuts the bytes into planes, and Huffman-codes each
plane in chunks of 128 Ki symbols with their own tables (neighbouring weights look alike), keeping a
chunk raw when coding would save under 4 %. Huffman spends a whole number of bits per symbol, so a
symbol as common as the top exponent (p ≈ 0.29) costs more than its share; coding **pairs** of
neighbouring exponents as one symbol (a few hundred pairs per chunk) brings the code within 1 % of the
entropy. General-purpose codecs (deflate = LZ77 + Huffman, LZMA, zstd)
look for repeats, which weights rarely have. Every number here comes from decoding the compressed
file and comparing it byte for byte (sha256) with the original.
"""

_DTYPE_BIAS = {"BF16": 127, "F32": 127, "F16": 15, "F64": 1023}


def _sources():
    return ca.sources()


def _path(source: str | None, upload) -> str:
    if upload:
        return upload if isinstance(upload, str) else upload.name
    if not source:
        raise gr.Error("Choose a checkpoint or upload a .safetensors file.")
    return str(ca.allowed_source(source))


def _exponent_label(symbol: int, dtype: str) -> str:
    """The exponent byte (after rotating the sign out) as the power of two it stands for."""
    if dtype == "F16":  # top byte = 5 exponent bits + 3 mantissa bits
        return f"2^{(symbol >> 3) - 15}·m{symbol & 7}"
    if dtype == "F64":
        return str(symbol)
    return "zero/denormal" if symbol == 0 else "inf/NaN" if symbol == 255 else f"2^{symbol - 127}"


def _stats_markdown(a: ca.Analysis) -> str:
    s = a.stats
    lengths = ", ".join(f"{n}×{ln}" for ln, n in sorted(s.length_histogram.items()))
    return (
        f"**Exponent plane of {a.name}** ({a.stats_dtype or 'no float tensors'}, {s.symbols:,} values, one Huffman "
        f"tree for the whole checkpoint)\n\n"
        f"| entropy H | average length L | redundancy L − H | efficiency H / L | Kraft sum | depth | leaves |\n"
        f"|---|---|---|---|---|---|---|\n"
        f"| {s.entropy:.4f} bits | {s.avg_length:.4f} bits | {s.redundancy:.4f} bits | {s.efficiency:.2%} | "
        f"{s.kraft:g} | {s.depth} | {s.leaves} |\n\n"
        f"Code lengths (symbols × bits): {lengths}. The codec itself uses a table per chunk and codes neighbouring "
        f"bytes as pairs where that is smaller; over the symbols it Huffman-coded (bytes or pairs) it spent "
        f"**{a.report.huffman_overhead:.2%}** more bits than their chunk-local entropy "
        f"({a.report.huffman_overhead_bytes:+.2%} against the entropy of single bytes)."
    )


def _status(a: ca.Analysis) -> str:
    r = a.report
    return (f"✅ **verified bit-exact**: decoding the compressed file gives back {r.raw_bytes:,} bytes with sha256 "
            f"`{a.sha256}` · **{r.raw_bytes / 1e6:,.2f} MB → {r.coded_bytes / 1e6:,.2f} MB** "
            f"(**{r.ratio:.2%}** of the original, saving {1 - r.ratio:.2%}) · compress "
            f"{r.raw_bytes / 1e6 / max(r.seconds, 1e-9):,.0f} MB/s, decompress + sha256 check "
            f"{r.raw_bytes / 1e6 / max(a.decompress_seconds, 1e-9):,.0f} MB/s")


def _length_figure(a: ca.Analysis) -> go.Figure:
    hist = a.stats.length_histogram
    xs = list(range(1, max(hist, default=1) + 1))
    return bar_figure([str(x) for x in xs], [hist.get(x, 0) for x in xs], "Code-length histogram",
                      "symbols with this code length", text=[str(hist.get(x, 0)) for x in xs])


def _exponent_figure(a: ca.Analysis) -> go.Figure:
    hist = a.exponent_hist
    present = [i for i in range(256) if hist[i]]
    total = max(1, int(hist.sum()))
    fig = go.Figure(go.Bar(x=[_exponent_label(i, a.stats_dtype) for i in present], y=[hist[i] / total for i in present],
                           marker_color="#6366f1", hovertemplate="%{x}: p = %{y:.4f}<extra></extra>"))
    fig.update_layout(font=FONT, height=400, margin=dict(l=50, r=10, t=50, b=90), yaxis_title="share of values",
                      title=f"Exponent histogram: entropy {a.stats.entropy:.3f} bits of 8", xaxis_tickangle=-45)
    return fig


def _tree_figure(a: ca.Analysis) -> go.Figure:
    """The top of the canonical tree; a node sits at the middle of its code interval [code, code + 2^-depth)."""
    nodes = a.stats.tree
    total = max(1, nodes[0]["weight"]) if nodes else 1

    def x(node):
        d = node["depth"]
        return (int(node["id"], 2) + 0.5) / 2**d if d else 0.5

    fig = go.Figure()
    ex, ey = [], []
    by_id = {n["id"]: n for n in nodes}
    for n in nodes[1:]:
        parent = by_id.get(n["parent"])
        if parent is not None:
            ex += [x(parent), x(n), None]
            ey += [-parent["depth"], -n["depth"], None]
    fig.add_scatter(x=ex, y=ey, mode="lines", line=dict(color="#cbd5e1"), hoverinfo="skip", showlegend=False)
    leaves = [n for n in nodes if n["symbol"] is not None]
    inner = [n for n in nodes if n["symbol"] is None]
    fig.add_scatter(x=[x(n) for n in inner], y=[-n["depth"] for n in inner], mode="markers", name="internal node",
                    marker=dict(size=[8 + 22 * (n["weight"] / total) ** 0.5 for n in inner], color="#94a3b8"),
                    text=[f"prefix {n['id'] or '(root)'}<br>{n['weight'] / total:.2%} of values" for n in inner],
                    hovertemplate="%{text}<extra></extra>")
    # Neighbouring leaves of one depth sit 1/2^depth apart, narrower than a label: their labels alternate
    # below and above the marker, so no two labels of a row share a place.
    leaves.sort(key=lambda n: (n["depth"], x(n)))
    side: list[str] = []
    for i, n in enumerate(leaves):
        flip = i > 0 and leaves[i - 1]["depth"] == n["depth"] and side[-1] == "bottom center"
        side.append("top center" if flip else "bottom center")
    fig.add_scatter(x=[x(n) for n in leaves], y=[-n["depth"] for n in leaves], mode="markers+text", name="leaf (symbol)",
                    marker=dict(size=[10 + 26 * (n["weight"] / total) ** 0.5 for n in leaves], color="#f59e0b"),
                    text=[_exponent_label(n["symbol"], a.stats_dtype) for n in leaves], textposition=side,
                    textfont=dict(size=14),
                    customdata=[[n["id"], n["weight"] / total] for n in leaves],
                    hovertemplate="%{text}: code %{customdata[0]}, p = %{customdata[1]:.4f}<extra></extra>")
    fig.update_layout(font=FONT, height=560, margin=dict(l=40, r=10, b=40),
                      xaxis=dict(visible=False, range=[-0.02, 1.02]), yaxis=dict(title="depth = code length",
                      tickvals=list(range(0, -7, -1)), ticktext=[str(d) for d in range(7)]))
    heading(fig, "Top of the Huffman tree (0 = left, 1 = right)", legend_rows=1)
    return fig


def _code_rows(a: ca.Analysis) -> list[list]:
    return [[t["symbol"], _exponent_label(t["symbol"], a.stats_dtype), f"{t['p']:.4f}", f"{t['bits']:.2f}", t["length"], t["code"]]
            for t in a.stats.top]


def _tensor_rows(a: ca.Analysis) -> list[list]:
    return [[r.name, "×".join(map(str, r.shape)) or "scalar", r.dtype, r.raw_bytes, r.coded_bytes, round(r.ratio, 4),
             "" if r.exponent_entropy is None else round(r.exponent_entropy, 3),
             r.modes.replace("/", " / ")] for r in a.report.rows]  # spaced: a cell wraps at a space


def _baseline_outputs(a: ca.Analysis):
    if not a.baselines:
        return None, []
    r = a.report
    names = ["raw", *[b.name + (" *" if b.sampled else "") for b in a.baselines], "this codec (planes + Huffman)"]
    sizes = [r.raw_bytes / 1e6, *[b.coded_bytes / 1e6 for b in a.baselines], r.coded_bytes / 1e6]
    speeds = ["", *[f"{b.compress_mbs:,.0f}/{b.decompress_mbs:,.0f} MB/s" for b in a.baselines],
              f"{r.raw_bytes / 1e6 / r.seconds:,.0f}/{r.raw_bytes / 1e6 / a.decompress_seconds:,.0f} MB/s"]
    colors = ["#94a3b8", *["#818cf8"] * len(a.baselines), "#f59e0b"]
    fig = bar_figure(names, sizes, "Whole-checkpoint size (label: compress/decompress speed)", "MB", colors, speeds)
    rows = [[b.name, round(b.ratio, 4), round(b.coded_bytes / 1e6, 2), round(b.compress_mbs), round(b.decompress_mbs),
             "yes" if b.verified else "NO", b.note] for b in a.baselines]
    rows.append(["this codec", round(r.ratio, 4), round(r.coded_bytes / 1e6, 2), round(r.raw_bytes / 1e6 / r.seconds),
                 round(r.raw_bytes / 1e6 / a.decompress_seconds), "yes (sha256)", "whole file"])
    return fig, rows


def _run(source, upload, dtype_view, with_baselines: bool, progress):
    a = ca.analyse(_path(source, upload), dtype_view, with_baselines, lambda f, m: progress(f, desc=m))
    fig, rows = _baseline_outputs(a)
    return (_status(a), _stats_markdown(a), _length_figure(a), _exponent_figure(a), _tree_figure(a), _code_rows(a),
            _tensor_rows(a), fig, rows, str(a.compressed_path))


@guard
def inspect_checkpoint(source, upload, dtype_view, progress=gr.Progress()):
    """Huffman statistics and the per-tensor table (compressed and verified, no baselines)."""
    return _run(source, upload, dtype_view, False, progress)


@guard
def compress_checkpoint(source, upload, dtype_view, progress=gr.Progress()):
    """Everything in inspect, plus zlib/LZMA/zstd/byte-Huffman baselines and the compressed file."""
    return _run(source, upload, dtype_view, True, progress)


@guard
def decompress_checkpoint(upload, progress=gr.Progress()):
    """Restore the safetensors file from an uploaded .lmhz file (every sha256 checked)."""
    if not upload:
        raise gr.Error("Upload a .lmhz file first: the file this tab offers after compressing a checkpoint, or one "
                       "made with LM Lab's command line.")
    out = ca.decompress_file(upload if isinstance(upload, str) else upload.name,
                             progress=lambda f, m: progress(f, desc=m), folder=handout.new_folder())
    return str(out), f"✅ restored **{out.name}** ({out.stat().st_size:,} bytes); every CRC32 and sha256 matched."


@guard
def use_as_model(compressed):
    """Offer the compressed file just made as a model in the Generate or NER picker, for every session."""
    if not compressed:
        raise gr.Error("Compress a checkpoint first: its .lmhz file is what runs as a model.")
    spec = as_model.use_as_model(compressed if isinstance(compressed, str) else compressed.name)
    tab = "Generate" if spec.task == registry.CAUSAL_LM else "NER"
    return (f"✅ **{spec.label}** is now in the {tab} tab's model list, for everyone using this app: it is "
            f"decompressed in memory and checked when it loads.")


def build() -> None:
    choices = _sources()
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=COLUMN_MIN_WIDTH):
            with gr.Row():
                source = gr.Dropdown(choices=choices, value=choices[0][1] if choices else None, label="Checkpoint",
                                     scale=4, min_width=300, elem_id="ck-source", info="embedded models and fine-tuned runs")
                refresh = gr.Button("Refresh the list", scale=1, size="sm", elem_id="ck-refresh")
            upload = gr.File(label="…or upload a .safetensors / PyTorch .bin file", file_types=[".safetensors", ".bin"],
                             elem_id="ck-upload")
        with gr.Column(scale=2, min_width=COLUMN_MIN_WIDTH):
            dtype_view = gr.Radio(list(ca.DTYPE_VIEWS), value="as stored", label="dtype view",
                                  info="cast float tensors to bf16 or fp16 first to see how the savings change")
            with gr.Row():
                inspect_btn = gr.Button("Inspect", variant="primary", elem_id="ck-inspect")
                compress_btn = gr.Button("Compress + compare codecs", elem_id="ck-compress")
    status = gr.Markdown("Pick a checkpoint and press **Inspect**.", elem_id="ck-status", elem_classes=["lmlab-status"])
    stats = gr.Markdown(elem_id="ck-stats")
    with gr.Row():
        exp_plot = gr.Plot(label="Exponent histogram", show_label=False, elem_id="ck-exp-plot",
                           min_width=COLUMN_MIN_WIDTH)
        len_plot = gr.Plot(label="Code lengths", show_label=False, elem_id="ck-len-plot", min_width=COLUMN_MIN_WIDTH)
    with gr.Row():
        # The tree takes the whole width (its table below it): beside the table its leaf labels ran into each other.
        tree_plot = gr.Plot(label="Huffman tree", show_label=False, elem_id="ck-tree-plot", min_width=1100)
        codes = gr.Dataframe(headers=["symbol", "meaning", "p", "−log₂ p", "length", "code"], label="Most frequent symbols",
                             interactive=False, elem_id="ck-codes", min_width=COLUMN_MIN_WIDTH, wrap=True)
    tensors = gr.Dataframe(headers=["tensor", "shape", "dtype", "raw bytes", "coded bytes", "ratio", "exponent entropy",
                                    "plane modes"], label="Per tensor", interactive=False, max_height=360,
                           elem_id="ck-tensors", wrap=True,
                           column_widths=["19%", "11%", "8%", "11%", "11%", "10%", "13%", "17%"])
    # The chart above its table: seven columns beside a chart ran past the window's edge at 1400 px.
    base_plot = gr.Plot(label="Codecs compared", show_label=False, elem_id="ck-base-plot")
    base_rows = gr.Dataframe(headers=["codec", "ratio", "MB", "compress MB/s", "decompress MB/s", "verified", "note"],
                             label="Codecs compared (* = measured on a sample)", interactive=False, wrap=True,
                             elem_id="ck-base-rows",
                             column_widths=["17%", "11%", "10%", "12%", "15%", "13%", "22%"])
    download = gr.File(label="Compressed file (.lmhz)", interactive=False, elem_id="ck-download")
    with gr.Row():
        use_btn = gr.Button("Use as a model (Generate / NER)", elem_id="ck-use", scale=0)
        use_status = gr.Markdown(elem_id="ck-use-status")
    with gr.Accordion("Restore a compressed checkpoint", open=False):
        with gr.Row():
            restore_in = gr.File(label="Upload a .lmhz file", file_types=[".lmhz"])
            restore_out = gr.File(label="Restored .safetensors", interactive=False)
        restore_btn = gr.Button("Decompress", elem_id="ck-decompress")
        restore_status = gr.Markdown()
    explain("Why do exponents compress and mantissas not?", EXPLANATION)

    inputs = [source, upload, dtype_view]
    outputs = [status, stats, len_plot, exp_plot, tree_plot, codes, tensors, base_plot, base_rows, download]
    # Progress (and Gradio's timer) on the first chart, not on the status line above it.
    inspect_btn.click(inspect_checkpoint, inputs, outputs, api_name="inspect_checkpoint", concurrency_id="compress",
                      show_progress_on=[exp_plot])
    compress_btn.click(compress_checkpoint, inputs, outputs, api_name="compress_checkpoint", concurrency_id="compress",
                       show_progress_on=[exp_plot])
    restore_btn.click(decompress_checkpoint, [restore_in], [restore_out, restore_status], api_name="decompress_checkpoint",
                      concurrency_id="compress", show_progress_on=[restore_out])
    refresh.click(lambda: gr.Dropdown(choices=_sources()), None, [source], api_visibility="private", queue=False)
    use_btn.click(use_as_model, [download], [use_status], api_name="use_as_model", concurrency_id="compress",
                  show_progress="hidden")

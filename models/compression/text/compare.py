"""What the Text half of the Compress tab and the benchmark show: every coder on the same bytes.

``compare`` runs the classic coders and the language model, decodes each result and
compares it with the input before reporting any size, and writes the model's compressed
file (atomically) under the data folder so the user can download it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from models.compression.text import baselines as text_baselines
from models.compression.text import container as text_container
from models.compression.text import lm_codec, lz78, mixing
from models.core import assets, handout, registry, settings
from models.core.device import pick
from models.core.errors import InputError
from models.core.filenames import safe_name

# The app (not the CLI) refuses longer inputs. The work is model steps, one per token (coded, then decoded
# again to verify), so the limit that bounds it counts tokens: 4,000 tokens is ~16 kB of English but only
# 4,000 bytes of binary, which SmolLM2 codes a token per byte (16,000 NUL bytes held the model > 16 min).
# The byte limit only bounds the classic coders and the tokenizer.
UI_TOKENS_CPU = 4_000
UI_TOKENS_GPU = 50_000
UI_LIMIT_CPU = 16_000
UI_LIMIT_GPU = 200_000


# Above this many tokens the app codes a text on a CPU in lanes of about 450 tokens side by side (the fast
# preset's rule for texts over 4,500 tokens), not the preset's one lane per 2,000 tokens: a step of the model
# for 9 lanes costs less than twice a step for one (two cores, SmolLM2: 52 ms for one lane, 98 ms for nine).
# WikiText-2's first 15,900 bytes (3,943 tokens) took 300 s here (11 minutes on a teacher's busy machine)
# in 2 lanes, and take 135 s in 9 (compress, decode, classic coders). The price: a 6 % larger payload (each
# lane starts without context) and a JSON header (236 bytes instead of ~30: no preset names this rule),
# 2,336 bytes against 2,010. A text up to this size keeps the preset's one lane and compact header: 984
# tokens take 125 s, about the same as the longest text in lanes.
UI_LANES_FROM_CPU = 1_000


def ui_lanes_from(loaded: registry.Loaded) -> int | None:
    """Token count above which ``compare`` codes in short lanes for speed (None: never, on a GPU)."""
    return None if loaded.device.device.type == "cuda" else UI_LANES_FROM_CPU


def ui_limit(loaded: registry.Loaded) -> int:
    return UI_LIMIT_GPU if loaded.device.device.type == "cuda" else UI_LIMIT_CPU


def ui_token_limit(loaded: registry.Loaded | None = None) -> int:
    device = loaded.device.device.type if loaded is not None else pick().device.type
    return UI_TOKENS_GPU if device == "cuda" else UI_TOKENS_CPU


def _limit(tokens: int | None, nbytes: int | None) -> str:
    return " and ".join(part for part in (tokens and f"{tokens:,} tokens", nbytes and f"{nbytes:,} bytes") if part)


# The one wording of the app's limit, for the hint and both errors: two numbers are checked, and quoting only
# one of them (tokens in the hint, bytes in an error) read as different limits.
UI_LIMITS_TEXT = (f"at most {_limit(UI_TOKENS_CPU, UI_LIMIT_CPU)} on a CPU ({_limit(UI_TOKENS_GPU, UI_LIMIT_GPU)} "
                  f"on a GPU); {UI_LIMIT_CPU:,} letters of English are about {UI_LIMIT_CPU // 4:,} tokens")


# The model's rows, by name (the UI colours and labels them by these). The "payload only" row is the downloadable
# file without its header and names whose file that is: it carries that file's timings.
MODEL_ALONE = "language model alone"
MIXING_CODER = "language model + n-gram + match (mixing coder)"
PAYLOAD_ONLY = "payload only (no header)"
# When the model cannot spell the input's bytes (lm_codec.TokenMap.to_tokens, mode "lzma"), the .lmlt file holds
# LZMA's output, not the model's: its one row says so, and no row names the model.
LZMA_FILE = "LZMA inside the .lmlt file (the model did not code this input)"


def is_model_row(coder: str) -> bool:
    """Whether a row's coder is the language model (alone or mixed, whole file or payload)."""
    return coder.startswith("language model")


@dataclass
class Comparison:
    rows: list[text_baselines.CoderRow]
    lm: lm_codec.LMResult
    lm_decode_s: float
    path: Path  # the model's compressed file
    huffman: text_baselines.HuffmanBytes | None
    lz77: list[text_baselines.LZ77Op] | None  # only for short inputs
    data: bytes = field(repr=False)
    short_lanes: bool = False  # coded in short lanes for speed (``compare``'s ``lanes_from``)

    @property
    def model_coded(self) -> bool:
        """False when the model could not spell the input and the .lmlt file holds LZMA's output (``LZMA_FILE``):
        then there are no tokens, no cross-entropy and no model rows."""
        return self.lm.header["mode"] != "lzma"

    @property
    def lm_row(self) -> text_baselines.CoderRow:
        """The row of the downloadable file (the smaller of the model alone's and the mixing coder's, or the
        ``LZMA_FILE`` row)."""
        return next(r for r in reversed(self.rows) if (is_model_row(r.coder) or r.coder == LZMA_FILE)
                    and PAYLOAD_ONLY not in r.coder and r.compressed_bytes == len(self.lm.blob))


def _too_long(limit: int | None, max_tokens: int | None) -> str:
    """What a learner can do in the page when the input is over the limit; the command line only as a short
    note for whoever hosts the app (the message reaches API callers as it is)."""
    letters = min(x for x in (max_tokens and 4 * max_tokens, limit) if x) if max_tokens or limit else 0
    english = f" (about {letters:,} letters of English)" if letters else ""
    return (f"this page compresses at most {_limit(max_tokens, limit)}{english} with the model on this computer: "
            "the model takes one step per token, and every file is decoded again to check it. Compress a shorter "
            "piece of the text (the first few paragraphs, say) and it works. Longer files can be compressed with "
            "LM Lab's command line by whoever runs it.")


def _check_input(data: bytes, limit: int | None, max_tokens: int | None = None) -> None:
    if not data:
        raise InputError("there is nothing to compress: paste some text, pick an example or upload a file")
    if limit is not None and len(data) > limit:
        raise InputError(f"the input has {len(data):,} bytes; " + _too_long(limit, max_tokens))


def compare(data: bytes, loaded: registry.Loaded, codec: lm_codec.CodecSettings | None = None,
            limit: int | None = None, progress=None, mixer: mixing.MixerSettings | None = mixing.DEFAULT,
            max_tokens: int | None = None, lanes_from: int | None = None, name: str = "text") -> Comparison:
    """Classic coders + the LM codec on ``data``; every row verified by decode-and-compare. With ``mixer``
    (the default) the model alone and the mixing coder share one pass of the model and both are shown;
    the downloadable file is the smaller of the two. ``mixer=None``: the model alone.

    ``limit`` bytes and ``max_tokens`` tokens (model steps) at most: InputError, with the counts, before any
    coder runs. ``lanes_from``: a text of more tokens is coded in lanes of about ``codec.lane_tokens`` tokens
    (``UI_LANES_FROM_CPU``; ``Comparison.short_lanes`` says so), whatever ``codec``'s rule for short texts.
    ``name``: the input's file name; the download is that name plus ``.lmlt`` (``notes.txt.lmlt``), as gzip
    names its files, so that restoring it gives the name back."""
    _check_input(data, limit, max_tokens)
    n_tokens = None
    if max_tokens is not None or lanes_from is not None:  # refused before the classic coders spend anything either
        n_tokens = len(lm_codec.TokenMap(loaded.tokenizer).to_tokens(bytes(data))[0])
        if max_tokens is not None and n_tokens > max_tokens:
            raise InputError(f"the input is {n_tokens:,} tokens for {loaded.spec.label} ({len(data):,} bytes); "
                             + _too_long(limit, max_tokens))
    short_lanes = lanes_from is not None and n_tokens > lanes_from
    if short_lanes:
        codec = replace(codec or lm_codec.CodecSettings(), short_tokens=0)
    rows = text_baselines.run_all(data)
    huff = text_baselines.huffman_bytes(data)
    mixers = [None] if mixer is None else [None, mixer]
    results = lm_codec.compress_many(data, loaded, mixers, codec, progress=_stage(progress, "compressing with the model"))
    decoded = lm_codec.decompress_many([r.blob for r in results], loaded, _stage(progress, "decoding to verify"))
    if any(out != data for out, _ in decoded):  # decompress_many already checked each sha256
        raise InputError("a decoded file differs from the input")
    if results[0].header["mode"] == "lzma":
        # Every result is the same LZMA output in the same container (no mixer ran): one row, named for what it is.
        # No payload row either: the payload is LZMA's own output, the "LZMA (xz -9e)" row above.
        lm, decode_s = results[0], decoded[0][1]
        rows.append(text_baselines.CoderRow(LZMA_FILE, "LZMA + the .lmlt header (fingerprint)", len(data),
                                            len(lm.blob), lm.seconds, decode_s, True))
    else:
        names = [f"{MODEL_ALONE} ({loaded.spec.label})", MIXING_CODER]
        kinds = ["LM + range coder", "LM mixed with classic predictors + range coder"]
        for k, (result, (_out, seconds)) in enumerate(zip(results, decoded, strict=True)):
            rows.append(text_baselines.CoderRow(names[k], kinds[k], len(data), len(result.blob), result.seconds,
                                                seconds, True))
        # the download: the mixing coder's file unless the model alone's is smaller (a short text can be)
        k = min(range(len(results)), key=lambda i: (len(results[i].blob), -i))
        lm, decode_s = results[k], decoded[k][1]
        # The same verified file without its fixed-size header (fingerprint, hashes): what the text itself cost.
        # Named for the file it comes from, with that file's timings.
        rows.append(text_baselines.CoderRow(f"{names[k].split(' (')[0]}, {PAYLOAD_ONLY}", kinds[k], len(data),
                                            lm.header["payload_bytes"], lm.seconds, decode_s, True))
    # the visitor's download, in an unguessable folder
    path = handout.new_folder() / (safe_name(name, "text") + text_container.SUFFIX)
    settings.atomic_write_bytes(path, lm.blob)
    lz = text_baselines.lz77_parse(data) if len(data) <= text_baselines.LZ77_MAX_INPUT else None
    return Comparison(rows, lm, decode_s, path, huff, lz, data, short_lanes)


@dataclass
class DictionaryView:
    """LZ77 and LZ78 on the same text: the two ways of pointing at earlier text."""
    data: bytes  # the bytes drawn (the first LZ77_MAX_INPUT of the input)
    total_bytes: int  # the whole input
    lz77: list[text_baselines.LZ77Op]
    lz78: list[lz78.Phrase]
    rows: list[lz78.DictionaryRow]  # the first phrases, each an old phrase + one character


def dictionary_view(data: bytes, rows: int = 100) -> DictionaryView:
    """The LZ77 parse, the LZ78 parse and the LZ78 dictionary's first ``rows`` phrases of ``data``
    (at most its first LZ77_MAX_INPUT bytes are drawn)."""
    _check_input(data, None)
    head = bytes(data[:text_baselines.LZ77_MAX_INPUT])
    return DictionaryView(head, len(data), text_baselines.lz77_parse(head), lz78.lz78_parse(head),
                          lz78.dictionary_rows(head, rows))


# A learner cannot run a command; whoever hosts the app can (python -m models.compression text decompress FILE).
_ELSEWHERE = "Whoever runs LM Lab can decode longer files with its command line; nothing was decoded here."


def decompress_file(blob: bytes, name: str = "restored", progress=None) -> tuple[bytes, Path, dict]:
    """Decode an uploaded .lmlt file (one record, or several as the command line writes for a long input)
    with the model named in its header (fingerprint checked); the restored bytes are written only after
    every record's checksum matched. Returns (bytes, path, the first record's header). The restored file is
    ``name`` less ``.lmlt`` (``notes.txt.lmlt`` -> ``notes.txt``); a name left without an extension gets
    ``.txt`` for UTF-8 text and ``.bin`` for other bytes."""
    records = lm_codec.read_records(blob)
    sizes = [h.get("n_bytes") for h, _ in records]
    limit = UI_LIMIT_GPU if pick().device.type == "cuda" else UI_LIMIT_CPU
    if not all(isinstance(n, int) and n >= 0 for n in sizes) or sum(sizes) > limit:  # the decoder runs per token
        shown = f"{sum(sizes):,}" if all(isinstance(n, int) for n in sizes) else repr(sizes)[:40]
        raise InputError(f"this file restores {shown} bytes; this page decodes at most {limit:,} bytes with the "
                         f"model on this computer. {_ELSEWHERE}")
    tokens = [h.get("n_tokens") for h, _ in records]
    token_limit = ui_token_limit()
    if not all(isinstance(n, int) and n >= 0 for n in tokens) or sum(tokens) > token_limit:  # one model step each
        shown = f"{sum(tokens):,}" if all(isinstance(n, int) for n in tokens) else repr(tokens)[:40]
        raise InputError(f"this file holds {shown} tokens; this page decodes at most {token_limit:,} tokens with the "
                         f"model on this computer (one step of the model each). {_ELSEWHERE}")
    data = lm_codec.decompress_records(records, None, _stage(progress, "decoding"))
    header = records[0][0]
    stem = safe_name(Path(str(name)).name.removesuffix(text_container.SUFFIX), "restored")
    if not Path(stem).suffix:
        stem += ".txt" if is_utf8(data) else ".bin"
    path = handout.new_folder() / stem
    settings.atomic_write_bytes(path, data)
    return data, path, header


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _stage(progress, label: str):
    if progress is None:
        return None

    def callback(done: int, total: int) -> None:
        progress(done / max(total, 1), f"{label}: {done:,}/{total:,} tokens")

    return callback


# --- examples the UI offers ---------------------------------------------------------------------

PARAGRAPH = (
    "On 14 March 1879, Albert Einstein was born in Ulm, in the Kingdom of Württemberg. The boy who would later "
    "explain the photoelectric effect was, by his own account, slow to speak. In 1905, while working at the patent "
    "office in Bern, he published four papers that changed physics: on the photoelectric effect, on Brownian motion, "
    "on special relativity, and on the equivalence of mass and energy, E = mc². The common words in this paragraph "
    "cost the model almost nothing; the names, places and numbers are where the bits go."
)


# "This is the house that Jack built" (English nursery rhyme, traditional, public domain): each verse adds one
# line and repeats all the others, the classic picture of a text that repeats itself. Each pair: a verse's new
# subject and what it did to the one before.
_JACK = (("the house", ""), ("the malt", "lay in"), ("the rat", "ate"), ("the cat", "killed"), ("the dog", "worried"),
         ("the cow with the crumpled horn", "tossed"), ("the maiden all forlorn", "milked"),
         ("the man all tattered and torn", "kissed"), ("the priest all shaven and shorn", "married"),
         ("the cock that crowed in the morn", "waked"), ("the farmer sowing his corn", "kept"))


def house_that_jack_built() -> str:
    """The rhyme's eleven verses (1,926 characters): "This is the malt / That lay in the house that Jack built." ..."""
    verses = []
    for i, (subject, _) in enumerate(_JACK):
        lines = [f"This is {subject}"] + [f"That {_JACK[j][1]} {_JACK[j - 1][0]}" for j in range(i, 0, -1)]
        verses.append("\n".join(lines) + " that Jack built.")
    return "\n\n".join(verses) + "\n"


RHYME = "This is the house that Jack built (a rhyme that repeats itself)"
EXAMPLES = {
    "alice29.txt (Canterbury corpus, first 3 kB)": ("canterbury", "alice29.txt", 3000),
    "plrabn12.txt (Paradise Lost, first 3 kB)": ("canterbury", "plrabn12.txt", 3000),
    "lcet10.txt (technical lecture, first 3 kB)": ("canterbury", "lcet10.txt", 3000),
    RHYME: (None, "rhyme", 0),
    "A paragraph with names and numbers": (None, None, 0),  # the last one is the tab's first text
}


def example_text(name: str) -> str:
    """The text of one of ``EXAMPLES`` (Canterbury files come from the embedded assets)."""
    if name not in EXAMPLES:
        raise InputError(f"unknown example {name!r}")
    key, filename, nbytes = EXAMPLES[name]
    if key is None:
        return house_that_jack_built() if filename == "rhyme" else PARAGRAPH
    raw = (assets.path(key) / filename).read_bytes()[:nbytes]
    return raw.decode("utf-8", "ignore")

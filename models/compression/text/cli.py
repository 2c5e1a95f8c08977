"""``python -m models.compression text compress|decompress|sample`` (also runs as
``python -m models.compression.text.cli``).

Long files are coded in chunks (``--chunk-bytes``), each a complete record, so memory stays
bounded and progress is shown as it goes; the output is written atomically only after every
chunk was coded (and, on decompression, matched its checksum).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from models.compression.text import coding_steps, lm_codec, mixing
from models.compression.text import container as text_container
from models.core import registry, settings
from models.core.errors import InputError, LMLabError


def _progress(label: str, nbytes: int, started: float):
    def callback(done: int, total: int) -> None:
        elapsed = max(time.perf_counter() - started, 1e-9)
        rate = nbytes * done / max(total, 1) / elapsed
        print(f"\r{label}: {done:,}/{total:,} tokens, {rate:,.0f} B/s", end="", file=sys.stderr, flush=True)

    return callback


def _compress(args: argparse.Namespace) -> int:
    src = Path(args.input)
    if not src.is_file():
        raise InputError(f"input file {src} does not exist")
    out = Path(args.output or f"{src}{text_container.SUFFIX}")
    loaded = registry.load_causal_lm(args.model, device=args.device)
    codec = dataclasses.replace(lm_codec.PRESETS[args.preset], lanes=args.lanes, precision=args.precision,
                                threads=args.threads)
    if args.window is not None:
        codec = dataclasses.replace(codec, window=args.window, keep=args.keep if args.keep is not None else args.window // 2)
    elif args.keep is not None:
        codec = dataclasses.replace(codec, keep=args.keep)
    if args.prime is not None:
        codec = dataclasses.replace(codec, prime=args.prime)
    elif codec.window:  # a smaller context than the preset's keeps less: the opening shrinks with it
        codec = dataclasses.replace(codec, prime=min(codec.prime, codec.keep))
    if args.adapt_every:
        codec = dataclasses.replace(codec, adapt_every=args.adapt_every, adapt_lr=args.adapt_lr,
                                    adapt_blocks=args.adapt_blocks)
    mixer = None if args.model_only else lm_codec.PRESET_MIXERS.get(args.preset, mixing.DEFAULT)
    started, total_in, blobs, ce, model_ce, payload = time.perf_counter(), 0, [], 0.0, 0.0, 0
    with src.open("rb") as fh:
        index = 0
        while True:
            chunk = fh.read(args.chunk_bytes)
            if not chunk and index:
                break
            index += 1
            step = _progress(f"chunk {index}", len(chunk), time.perf_counter())
            unwrap = not args.keep_lines
            result = (lm_codec.compress(chunk, loaded, codec, step, unwrap=unwrap) if mixer is None
                      else lm_codec.compress_best(chunk, loaded, codec, step, mixer, unwrap=unwrap))
            blobs.append(result.blob)
            total_in += len(chunk)
            ce += result.cross_entropy_bits
            model_ce += result.model_bits
            payload += result.payload_bits
            if result.note:
                print(f"\nnote: {result.note}", file=sys.stderr)
            if result.breaks is not None:
                print(f"\nnote: {result.breaks.describe()}", file=sys.stderr)
            if not chunk:
                break
    blob = text_container.join_records(blobs)
    settings.atomic_write_bytes(out, blob)
    seconds = time.perf_counter() - started
    bpb = 8 * len(blob) / total_in if total_in else 0.0
    mixed = "" if mixer is None else f", as coded {ce / max(total_in, 1):.3f}"
    print(f"\n{src} -> {out}: {total_in:,} -> {len(blob):,} bytes ({bpb:.3f} bits/byte; model cross-entropy "
          f"{model_ce / max(total_in, 1):.3f}{mixed}, payload {payload / max(total_in, 1):.3f}); {seconds:.1f} s, "
          f"{total_in / max(seconds, 1e-9):,.0f} B/s")
    return 0


def _decompress(args: argparse.Namespace) -> int:
    src = Path(args.input)
    if not src.is_file():
        raise InputError(f"input file {src} does not exist")
    out = Path(args.output or (src.with_suffix("") if src.suffix == text_container.SUFFIX else f"{src}.out"))
    records = lm_codec.read_records(src.read_bytes())
    started = time.perf_counter()
    label = f"{len(records)} record{'s' if len(records) > 1 else ''}"
    data = lm_codec.decompress_records(records, None, _progress(label, sum(int(h["n_bytes"]) for h, _ in records),
                                                                started), args.device)
    settings.atomic_write_bytes(out, data)  # only reached when every chunk matched its checksum
    seconds = time.perf_counter() - started
    print(f"\n{src} -> {out}: {len(data):,} bytes, verified; {seconds:.1f} s, {len(data) / max(seconds, 1e-9):,.0f} B/s")
    return 0


def _sample(args: argparse.Namespace) -> int:
    """The page's decode (step 4 of the lesson): the same seed gives the same text here and there, and it
    ends where the model ends its text."""
    loaded = registry.load_causal_lm(args.model, device=args.device)
    bits, steps = coding_steps.sampling_steps(loaded, args.seed, args.tokens, args.prompt)
    print(args.prompt + "".join(s.token for s in steps))  # an end token writes nothing
    ended = " (the last is the model's end of text)" if steps[-1].end else ""
    read = coding_steps.bits_read(bits, steps[-1].low, steps[-1].width)
    print(f"\n[{len(steps)} tokens decoded from the random bits of seed {args.seed}{ended}; they cost "
          f"{steps[-1].total_bits:.0f} bits under the model"
          + (f", and the decoder read the first {read} bits]" if read is not None else "]"), file=sys.stderr)
    return 0


def add_cli(subparsers) -> None:
    text = subparsers.add_parser("text", help="compress text with a language model and arithmetic coding")
    sub = text.add_subparsers(dest="text_command", required=True, metavar="ACTION")
    c = sub.add_parser("compress", help="compress a file (any bytes) with a causal LM")
    c.add_argument("input")
    c.add_argument("-o", "--output", help=f"output file (default INPUT{text_container.SUFFIX})")
    c.add_argument("--model", default="smollm2-135m-instruct", help="model key from the catalogue")
    c.add_argument("--device", default=None, help="auto, cuda, mps or cpu; decoding needs the same device type")
    c.add_argument("--preset", default="fast", choices=list(lm_codec.PRESETS),
                   help="fast: up to 96 short lanes, each reading the text's opening first (about 1.5 kB/s on two CPU "
                        "cores); compact: few lanes that see the model's whole context (smaller files, several "
                        "times slower); two-models: compact with SmolLM2-135M reading along and mixed in, for "
                        "--model gemma-3-270m (the smallest files, about a fifth of compact's speed)")
    c.add_argument("--window", type=int, default=None, help=lm_codec.CodecSettings.__dataclass_fields__["window"].metadata["help"]
                   + " (default: the preset's)")
    c.add_argument("--keep", type=int, default=None, help="tokens kept when the context is rebuilt (default half the window)")
    c.add_argument("--lanes", type=int, default=0, help="pieces coded side by side (0 = automatic)")
    c.add_argument("--prime", type=int, default=None,
                   help="tokens of the text's opening that every lane reads before its own piece (fast preset: "
                        f"{lm_codec.PRESETS['fast'].prime}; 0: the lanes start cold)")
    c.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    c.add_argument("--adapt-every", type=int, default=0,
                   help="online adaptation (dynamic evaluation): the model takes one training step on every lane's "
                        "latest tokens after this many steps, identically when decoding; slower (0: off, the default)")
    c.add_argument("--adapt-lr", type=float, default=lm_codec.CodecSettings.adapt_lr,
                   help="online adaptation: AdamW learning rate")
    c.add_argument("--adapt-blocks", type=int, default=lm_codec.CodecSettings.adapt_blocks,
                   help="online adaptation: transformer blocks trained, counted from the top (0: all)")
    c.add_argument("--threads", type=int, default=0,
                   help="CPU threads while coding (0 = all); decoding uses the same number, recorded in the file")
    c.add_argument("--model-only", action="store_true",
                   help="code with the model's probabilities alone (default: the smaller of that and the model mixed "
                        "with an n-gram and a match model, both from one pass of the model)")
    c.add_argument("--keep-lines", action="store_true",
                   help="code every line break as it is (default: a hard-wrapped text is coded as paragraphs, its "
                        "CR LF line ends as LF, and the decoder wraps it again)")
    c.add_argument("--chunk-bytes", type=int, default=1 << 20, help="code the file in independent chunks of this size")
    c.set_defaults(func=_compress)
    d = sub.add_parser("decompress", help=f"restore a {text_container.SUFFIX} file (checks the fingerprint and checksum)")
    d.add_argument("input")
    d.add_argument("-o", "--output", help="output file (default: the input name without its suffix)")
    d.add_argument("--device", default=None)
    d.set_defaults(func=_decompress)
    s = sub.add_parser("sample", help="sampling is decompression: decode random bits into text")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--tokens", type=int, default=60, help=f"at most this many (1-{coding_steps.SAMPLE_MAX}); fewer "
                   "where the model ends its text")
    s.add_argument("--prompt", default="")
    s.add_argument("--model", default="smollm2-135m-instruct")
    s.add_argument("--device", default=None)
    s.set_defaults(func=_sample)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.compression.text.cli")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["text", *(argv if argv is not None else sys.argv[1:])])
    try:
        return int(args.func(args) or 0)
    except LMLabError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The checkpoint commands of ``python -m models.compression``: compress, decompress, verify, inspect."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from models.compression import huffman
from models.compression.checkpoint import analysis as checkpoint_analysis
from models.compression.checkpoint import codec as checkpoint


class _Bar:
    """A one-line progress bar on stderr (quiet when stderr is not a terminal, except the last line)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet or not sys.stderr.isatty()

    def __call__(self, fraction: float, message: str) -> None:
        if self.quiet:
            return
        filled = int(30 * fraction)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%} {message[:60]:<60}")
        if fraction >= 1:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _mb(n: int) -> str:
    return f"{n / 1e6:,.2f} MB"


def cmd_compress(args) -> int:
    dst, rep = checkpoint_analysis.compress_file(args.input, args.output, args.dtype, not args.no_verify, _Bar(args.quiet))
    print(f"{args.input} -> {dst}: {_mb(rep.raw_bytes)} -> {_mb(rep.coded_bytes)} ({rep.ratio:.4f}) in {rep.seconds:.2f}s"
          + ("" if args.no_verify else ", round-trip verified") + f"\nsha256 {rep.sha256}")
    return 0


def cmd_decompress(args) -> int:
    dst = checkpoint_analysis.decompress_file(args.input, args.output, _Bar(args.quiet))
    print(f"{args.input} -> {dst} (every CRC32 and sha256 checked)")
    return 0


def cmd_verify(args) -> int:
    res = checkpoint_analysis.verify_file(args.input, args.original, _Bar(args.quiet))
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        extra = "" if "matches_original" not in res else (
            ", identical to " + str(args.original) if res["matches_original"] else ", DIFFERENT from " + str(args.original))
        print(f"{args.input}: OK, decodes to {res['source']} ({_mb(res['original_bytes'])}, sha256 {res['sha256']}){extra}")
    return 0 if res["ok"] else 1


def cmd_inspect(args) -> int:
    path = Path(args.input)
    if not path.is_file():
        print(f"error: {path.name}: no such file", file=sys.stderr)
        return 2
    blob = path.read_bytes()
    if blob[:8] != checkpoint.container.MAGIC:  # a checkpoint: analyse it (compress + verify) instead
        res = checkpoint_analysis.analyse(path, args.dtype, with_baselines=False, progress=_Bar(args.quiet))
        info = {"source": res.name, "original_bytes": res.report.raw_bytes, "compressed_bytes": res.report.coded_bytes,
                "ratio": res.report.ratio, "original_sha256": res.sha256, "verified": res.verified,
                "tensors": [dict(name=r.name, dtype=r.dtype, shape=list(r.shape), raw_bytes=r.raw_bytes,
                                 coded_bytes=r.coded_bytes, ratio=r.ratio, modes=r.modes) for r in res.report.rows]}
        stats = res.stats
    else:
        info = checkpoint.inspect(blob, path.name)
        stats = None
    if args.json:
        if stats is not None:
            info["exponent_huffman"] = {k: v for k, v in stats.as_dict().items() if k != "tree"}
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"{info['source']}: {_mb(info['original_bytes'])} -> {_mb(info['compressed_bytes'])} ({info['ratio']:.4f})")
    if stats is not None:
        print(_stats_text(stats))
    print(f"\n{'tensor':<60} {'dtype':>5} {'raw':>12} {'coded':>12} {'ratio':>7}  planes")
    for r in info["tensors"][: args.limit or None]:
        print(f"{r['name'][:60]:<60} {r['dtype']:>5} {r['raw_bytes']:>12,} {r['coded_bytes']:>12,} {r['ratio']:>7.4f}  {r['modes']}")
    return 0


def _stats_text(s: huffman.HuffmanStats) -> str:
    lines = [f"\nexponent plane, {s.symbols:,} symbols: entropy H = {s.entropy:.4f} bits, Huffman L = {s.avg_length:.4f} bits, "
             f"redundancy {s.redundancy:.4f}, efficiency {s.efficiency:.2%}, Kraft sum {s.kraft:g}, depth {s.depth}, "
             f"{s.leaves} leaves",
             "code lengths: " + ", ".join(f"{n} x {ln} bits" for ln, n in sorted(s.length_histogram.items())),
             f"{'symbol':>7} {'p':>8} {'-log2 p':>8} {'code':>14}"]
    lines += [f"{t['symbol']:>7} {t['p']:>8.4f} {t['bits']:>8.2f} {t['code']:>14}" for t in s.top[:12]]
    return "\n".join(lines)


def add_cli(sub: argparse._SubParsersAction) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        p.set_defaults(func=None)

    p = sub.add_parser("compress", help="compress a .safetensors (or PyTorch .bin) checkpoint to .lmhz")
    p.add_argument("input")
    p.add_argument("-o", "--output", help="output file (default: input with .lmhz)")
    p.add_argument("--dtype", default="as stored", choices=checkpoint_analysis.DTYPE_VIEWS,
                   help="cast float tensors first (the output then restores the cast file)")
    p.add_argument("--no-verify", action="store_true", help="skip the decode-and-compare before writing")
    common(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("decompress", help="restore the byte-identical .safetensors file from .lmhz")
    p.add_argument("input")
    p.add_argument("-o", "--output", help="output file (default: the original name under the data folder)")
    common(p)
    p.set_defaults(func=cmd_decompress)

    p = sub.add_parser("verify", help="decode a .lmhz file and check every CRC32 and sha256")
    p.add_argument("input")
    p.add_argument("--original", help="also compare with this original file")
    p.add_argument("--json", action="store_true")
    common(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("inspect", help="per-tensor table of a .lmhz file; for a checkpoint also the Huffman statistics")
    p.add_argument("input")
    p.add_argument("--dtype", default="as stored", choices=checkpoint_analysis.DTYPE_VIEWS)
    p.add_argument("--limit", type=int, default=0, help="show only the first N tensors")
    p.add_argument("--json", action="store_true")
    common(p)
    p.set_defaults(func=cmd_inspect)

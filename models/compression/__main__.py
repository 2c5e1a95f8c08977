"""Command line of the compression tools: ``python -m models.compression COMMAND ...``.

Each tool module exposes ``add_cli(subparsers)``, which adds its commands and sets ``func`` on
them; this file only collects the modules listed in ``COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from models.core.errors import LMLabError

# checkpoint commands: compress, decompress, verify, inspect. Text tools register a `text` group
# here too: a module listed here but not present yet is skipped.
COMMAND_MODULES = ("models.compression.checkpoint.cli", "models.compression.text.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m models.compression",
                                     description="Lossless compression of checkpoints and texts, verified by round-trip.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LMLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no output file was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

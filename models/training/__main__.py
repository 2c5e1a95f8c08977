"""``python -m models.training [--run-dir DIR | --resume RUN_ID | flags]``: one fine-tuning run.

The app launches ``--run-dir`` with a prepared folder; by hand (or under
``accelerate launch -m models.training ...`` on several GPUs or machines) pass the
run settings as flags and a new run folder is created under ``$LMLAB_HOME/runs``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from models.core.errors import InputError, LMLabError
from models.training.config import RunConfig


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m models.training", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run-dir", default=None, help="an existing run folder with config.json (what the app passes)")
    p.add_argument("--resume", default=None, metavar="RUN_ID",
                   help="continue a stopped run (its id, or its folder) from its newest checkpoint")
    p.add_argument("--run-id", default=None, help="name of the new run folder (default: time + random suffix)")
    p.add_argument("--config", default=None, help="a config.json to start from (flags override it)")
    for f in fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                           help=f.metadata["help"] + f" (default {f.default})")
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            p.add_argument(flag, dest=f.name, type=kind, default=None,
                           help=f.metadata["help"] + (f" (default {f.default})" if f.default is not MISSING else ""))
    return p


def _refuse_changes(args: argparse.Namespace, cfg: RunConfig, why: str) -> None:
    """Settings given beside --resume or --run-dir are never ignored silently: one that differs from the
    run's config.json is refused, with the reason and the command that would apply it."""
    changed = [(f.name, getattr(args, f.name), getattr(cfg, f.name)) for f in fields(RunConfig)
               if getattr(args, f.name) is not None and getattr(args, f.name) != getattr(cfg, f.name)]
    extra = [flag for flag, value in (("--config", args.config), ("--run-id", args.run_id)) if value is not None]
    if not changed and not extra:
        return
    said = [f"--{name.replace('_', '-')} {new} (the run has {old})" for name, new, old in changed] + extra
    flags = " ".join(f"--{name.replace('_', '-')} {new}" for name, new, _ in changed)
    raise InputError(f"{', '.join(said)}: {why}, so this cannot change. To train with a change, start a new run "
                     f"from its settings: python -m models.training --config <run folder>/config.json {flags}".rstrip())


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # here: torch and transformers load only once the arguments parse (--help stays instant)
    from models.training import runs

    runs.register()  # a fine-tuned run can be the base of another

    rank = int(os.environ.get("RANK", "0"))
    try:
        if args.resume:
            folder = runs.run_folder(args.resume)
            cfg = RunConfig.from_dict(json.loads((folder / "config.json").read_text()))
            _refuse_changes(args, cfg, "a resumed run continues with the settings it was started with, from a "
                            "checkpoint made under them")
            runs.last_checkpoint(folder)  # a missing or damaged checkpoint is refused here, with the reason
            print(f"resuming run folder: {folder}", flush=True)
            return runs.run_in_folder(folder, cfg, resume=True)
        if args.run_dir:
            folder = runs.run_folder(args.run_dir)
            cfg = RunConfig.from_dict(json.loads((folder / "config.json").read_text()))
            _refuse_changes(args, cfg, "a prepared run folder trains with the settings in its config.json")
        else:
            if args.run_id is not None:
                runs.check_run_id(args.run_id)  # before any work: the same check as the app's
            base = json.loads(Path(args.config).read_text()) if args.config else {}
            base |= {f.name: getattr(args, f.name) for f in fields(RunConfig) if getattr(args, f.name) is not None}
            cfg = RunConfig.from_dict(base).validate()
            # The main process owns the folder; the others train and leave the writing to it.
            folder = runs.new_run_dir(cfg, args.run_id) if rank == 0 else None
            if folder is not None:
                print(f"run folder: {folder}", flush=True)
    except (LMLabError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return runs.run_in_folder(folder, cfg)


if __name__ == "__main__":
    sys.exit(main())

"""One check of run ids and run folders for every entry point: the training command line, the API, the view.

A run id names a folder directly under ``$LMLAB_HOME/runs``; '../escaped' or an absolute path never reaches
the file system, whichever door it came through.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from models.core.errors import InputError
from models.training import runs, view
from tests.conftest import ROOT

BAD_IDS = ["../escaped", "/tmp/escaped", "..", ".hidden", "a/b", "-flag", "x" * 81, "caf\u00e9"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_the_one_check_refuses_paths_and_odd_names(bad):
    with pytest.raises(InputError, match="not a run id"):
        runs.check_run_id(bad)
    with pytest.raises(InputError):
        runs.run_dir(bad)
    with pytest.raises(InputError):
        view.export_kinds(bad)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "models.training", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ))


@pytest.mark.parametrize("bad", ["../escaped", "ABSOLUTE"])
def test_the_training_command_refuses_a_run_id_that_is_a_path(bad, lmlab_home, tmp_path):
    absolute = tmp_path / "escaped-abs"
    bad = str(absolute) if bad == "ABSOLUTE" else bad
    text = tmp_path / "t.txt"
    text.write_text("hello world. " * 200)
    proc = _cli("--run-id", bad, "--task", "causal-lm", "--base", "scratch-gpt2", "--dataset", "upload",
                "--upload", str(text), "--scratch-size", "tiny", "--max-steps", "1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "not a run id" in proc.stderr
    assert not (lmlab_home / "escaped").exists() and not absolute.exists()
    assert not any(p.name in ("escaped", "escaped-abs") for p in runs.runs_root().iterdir())


def test_resume_and_run_dir_take_only_this_apps_run_folders(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "config.json").write_text("{}")  # looks like a run folder, but is not one of ours
    for flag in ("--resume", "--run-dir"):
        for arg in (str(outside), "../elsewhere"):
            proc = _cli(flag, arg)
            assert proc.returncode == 2, (flag, arg, proc.stderr)
            assert "not a run" in proc.stderr or "no run" in proc.stderr


def test_the_api_says_the_same(client):
    for bad in ("../escaped", "/etc"):
        with pytest.raises(Exception, match="not a run id"):
            client.predict(bad, api_name="/train_status")

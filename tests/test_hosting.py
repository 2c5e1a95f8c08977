"""Hosting on a Hugging Face Space: the README front matter, and a fresh environment from requirements.txt alone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.app_process import running_app

ROOT = Path(__file__).resolve().parent.parent


def _front_matter() -> dict:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md must start with a '---' YAML block (the Space's configuration)"
    return yaml.safe_load(match.group(1))


def _pin(package: str) -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        name, _, version = line.split("#", 1)[0].strip().partition("==")
        if name.strip().lower() == package:
            return version.strip()
    pytest.fail(f"requirements.txt does not pin {package}")


def test_readme_front_matter_configures_a_gradio_space():
    meta = _front_matter()
    assert meta["sdk"] == "gradio"
    assert str(meta["sdk_version"]) == _pin("gradio"), "sdk_version must equal the gradio pin in requirements.txt"
    assert meta["app_file"] == "app.py" and (ROOT / meta["app_file"]).is_file()
    assert meta.get("license") and meta.get("title")
    assert 0 < len(meta.get("short_description", "")) <= 60  # the hub refuses longer ones
    if "python_version" in meta:
        assert re.fullmatch(r"3\.\d+", str(meta["python_version"]))


def test_requirements_are_all_pinned():
    """A Space installs requirements.txt as is: an unpinned line can change the app under it."""
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.+\-]+", line), f"not pinned: {line}"


@pytest.mark.app  # also slow (conftest): a fresh virtual environment, then the app
def test_fresh_environment_from_requirements_serves_the_app(tmp_path):
    """python -m venv + pip install -r requirements.txt, nothing else: the app imports, builds and serves its page."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    install = subprocess.run([str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r",
                              str(ROOT / "requirements.txt")], capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    # Run from a copy-free checkout path, but with the fresh interpreter: only requirements.txt is installed.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    env.update(PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", LMLAB_OFFLINE="1", PYTHONNOUSERSITE="1")
    build = subprocess.run([str(py), "-c", "import app; demo = app.build_demo(); print(len(demo.fns))"], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0 and int(build.stdout.split()[-1]) > 5, build.stderr[-3000:]
    log = tmp_path / "app.log"
    with running_app("--offline", log_path=log, python=str(py), base_env=env) as (url, _proc):
        with urllib.request.urlopen(url, timeout=60) as resp:
            status, body = resp.status, resp.read()
    assert status == 200, f"the app did not serve its page:\n{log.read_text()[-3000:]}"
    assert b"<html" in body.lower() or b"gradio" in body.lower()

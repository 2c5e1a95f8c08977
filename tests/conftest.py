"""Shared fixtures: offline hub, an isolated data folder, tiny and real models, the app, a browser."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Tests never touch the network, and never write into the user's data folder: the embedded
# assets are shared (read-only use), everything else goes to a per-session temporary home.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["LMLAB_OFFLINE"] = "1"
_real_home = Path(os.environ.get("LMLAB_HOME") or Path.home() / ".cache" / "lmlab").expanduser()
os.environ.setdefault("LMLAB_ASSETS_DIR", str(_real_home / "assets"))
SHARED_DATA = ROOT.parent / "shared" / "data"
if SHARED_DATA.is_dir():
    os.environ.setdefault("LMLAB_DATA_DIR", str(SHARED_DATA))


@pytest.fixture(scope="session", autouse=True)
def lmlab_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("lmlab-home")
    os.environ["LMLAB_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    from models import registry

    return registry.gpt2_tokenizer()


@pytest.fixture(scope="session")
def tiny_gpt2(gpt2_tokenizer):
    """A 2-layer GPT-2 (random weights, seed 0) with the real GPT-2 tokenizer, as a registry.Loaded."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from models.device import pick
    from models.registry import Loaded, ModelSpec, model_nbytes

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=64, n_head=2, n_positions=128, vocab_size=len(gpt2_tokenizer))
    model = GPT2LMHeadModel(config).eval()
    tok = gpt2_tokenizer
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    spec = ModelSpec("tiny-gpt2", "tiny GPT-2 (test)", "causal-lm", "local", "")
    return Loaded(spec, model, tok, pick("cpu"), model_nbytes(model))


@pytest.fixture(scope="session")
def smollm():
    from models import registry

    return registry.load_causal_lm("smollm2-135m-instruct", device="cpu")


_APP: dict[str, int] = {}


@pytest.fixture(scope="session")
def app_url(lmlab_home, tmp_path_factory):
    """The real app, launched as `python app.py --offline` in a subprocess on a free port."""
    from tests.app_process import running_app

    log_path = tmp_path_factory.mktemp("app-log") / "app.log"
    try:
        with running_app("--offline", log_path=log_path, timeout=180) as (url, proc):
            _APP["pid"] = proc.pid
            yield url
    except RuntimeError as exc:  # the app exited early or never listened: show its log
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def app_pid(app_url) -> int:
    """Process id of the launched app (to check it stops working when asked)."""
    return _APP["pid"]


@pytest.fixture(scope="session")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(app_url)
    pg.wait_for_selector("button", timeout=120_000)
    yield pg
    context.close()


ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture
def screenshot_dir() -> Path:
    """Where browser tests save screenshots (the README's images are copied from here)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS

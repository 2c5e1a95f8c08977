"""Shared fixtures: offline hub, an isolated data folder, tiny and real models, the app, a browser.

Tests use the small data sets under tests/data. Those whose point is the real data sets (CoNLL-2003,
WikiText-2) read the folder named by LMLAB_DATA_DIR and skip, saying what is missing, when it is not
there; LMLAB_REQUIRE_DATA=1 (set by CI) turns that skip into a failure. Browser tests skip when no
Chromium is installed, and fail instead under LMLAB_REQUIRE_BROWSER=1.
"""

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
os.environ.setdefault("LMLAB_ENGINES_DIR", str(_real_home / "engines"))  # vLLM, installed by `make engines`
SAMPLE_DATA = ROOT / "tests" / "data"


def missing(reason: str, require: str) -> None:
    """Skip the test because something outside the repository is missing; fail instead when ``require``=1."""
    if os.environ.get(require) == "1":
        pytest.fail(f"{reason} ({require}=1: this must run here)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def sample_data(monkeypatch) -> Path:
    """tests/data as the data folder: the local-copy loaders on a few hand-written sentences."""
    monkeypatch.setenv("LMLAB_DATA_DIR", str(SAMPLE_DATA))
    return SAMPLE_DATA


def real_data(title: str, name: str, filename: str) -> Path:
    """``<LMLAB_DATA_DIR>/<name>/``, for tests whose point is the real data set; skips when it is not there."""
    from models.core import settings

    folder = settings.data_dir()
    if folder is None:
        missing(f"needs the real {title} ({name}/{filename}): LMLAB_DATA_DIR is not set (tests never use the hub); "
                "run `make test LMLAB_DATA_DIR=/path/to/data`", "LMLAB_REQUIRE_DATA")
    if not (folder / name / filename).is_file():
        missing(f"needs the real {title}: LMLAB_DATA_DIR={folder} has no {name}/{filename}", "LMLAB_REQUIRE_DATA")
    return folder / name


@pytest.fixture
def conll2003_dir() -> Path:
    return real_data("CoNLL-2003", "conll2003", "test.txt")


@pytest.fixture
def wikitext2_dir() -> Path:
    return real_data("WikiText-2", "wikitext-2", "test.txt")


@pytest.fixture(scope="session", autouse=True)
def lmlab_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("lmlab-home")
    os.environ["LMLAB_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    from models.core import registry

    return registry.gpt2_tokenizer()


@pytest.fixture(scope="session")
def tiny_gpt2(gpt2_tokenizer):
    """A 2-layer GPT-2 (random weights, seed 0) with the real GPT-2 tokenizer, as a registry.Loaded."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from models.core.device import pick
    from models.core.registry import Loaded, ModelSpec, model_nbytes

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=64, n_head=2, n_positions=128, vocab_size=len(gpt2_tokenizer))
    model = GPT2LMHeadModel(config).eval()
    tok = gpt2_tokenizer
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    spec = ModelSpec("tiny-gpt2", "tiny GPT-2 (test)", "causal-lm", "local", "")
    return Loaded(spec, model, tok, pick("cpu"), model_nbytes(model))


@pytest.fixture
def catalogued(tiny_gpt2, monkeypatch):
    """The tiny test model under a catalogue id (63), so that its files get the compact header."""
    from models.compression.text import compact_header

    monkeypatch.setitem(compact_header.MODEL_IDS, "tiny-gpt2", 63)
    return tiny_gpt2


@pytest.fixture(scope="session")
def smollm():
    from models.core import registry

    return registry.load_causal_lm("smollm2-135m-instruct", device="cpu")


_APP: dict[str, object] = {}


# Fixtures that start an app process with tests.app_process.running_app (here and in test modules).
APP_FIXTURES = {"app_url", "public_client", "padded_app"}


def pytest_collection_modifyitems(config, items) -> None:
    """A test that starts the app (through one of ``APP_FIXTURES``, or marked ``app`` because it calls
    ``tests.app_process.running_app`` itself) is marked ``app`` and ``slow``: `-m "not slow"` is the fast
    set, with no app process."""
    for item in items:
        if APP_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("app"):
            item.add_marker(pytest.mark.app)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def app_url(lmlab_home, tmp_path_factory):
    """The real app, launched as `python app.py --offline` in a subprocess on a free port."""
    from tests.app_process import running_app

    log_path = tmp_path_factory.mktemp("app-log") / "app.log"
    try:
        with running_app("--offline", log_path=log_path, timeout=180) as (url, proc):
            _APP["pid"], _APP["log"] = proc.pid, log_path
            yield url
    except RuntimeError as exc:  # the app exited early or never listened: show its log
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def app_pid(app_url) -> int:
    """Process id of the launched app (to check it stops working when asked)."""
    return _APP["pid"]


@pytest.fixture(scope="session")
def app_log(app_url) -> Path:
    """The launched app's log (its stdout and stderr)."""
    return _APP["log"]


@pytest.fixture(scope="session")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BROWSER_HINT = ("no Chromium here, so the browser tests skip; `make browser` installs it (Debian's chromium as "
                "root or with sudo, else Playwright's own download)")


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # Debian's chromium first (what CI runs); else the build `playwright install chromium` downloaded.
        if Path(CHROMIUM).exists():
            executable = CHROMIUM
        elif Path(pw.chromium.executable_path).exists():
            executable = None
        else:
            missing(BROWSER_HINT, "LMLAB_REQUIRE_BROWSER")
        b = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
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

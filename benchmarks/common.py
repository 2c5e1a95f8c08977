"""What the benchmarks share: launching the app on a free port, its peak memory, percentiles, medians.

Every benchmark measures both sides it compares in the same run; these helpers only start, watch and
summarise. The tables and their method are in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_app(log_path: Path, extra_args: list[str] | None = None,
               extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """``python app.py --offline`` on a free port, its output to ``log_path``; returns the process and its URL."""
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", LMLAB_OFFLINE="1", **(extra_env or {}))
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "app.py", "--offline", "--port", str(port), *(extra_args or [])],
                                cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the app exited:\n{log_path.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, f"http://127.0.0.1:{port}/"
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the app did not start in 300 s")


def stop_app(proc: subprocess.Popen) -> None:
    """Terminate the app, killing it after 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


class MemorySampler(threading.Thread):
    """Peak resident memory (RSS) of the app and its children (training runs, started with exec, so
    they share no pages with the app).

    The app's own peak is the kernel's high-water mark (``VmHWM``), reset when sampling starts
    (``/proc/PID/clear_refs``): exact, and free while the app works. Children are sampled every
    ``CHILDREN_S`` seconds. Why not proportional set size: reading it (``smaps_rollup``) walks the
    app's page tables, ~19 ms of kernel time under the app's memory-map lock per read; sampled every
    0.2 s that took ~9 % of a core from a two-core machine during the runs it measured, and stalled
    the app's own allocations meanwhile."""

    CHILDREN_S = 0.5

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc, self.peak, self.stop = psutil.Process(pid), 0, threading.Event()

    def memory(self) -> int:
        """Resident bytes of the app and its children now."""
        return self.proc.memory_info().rss + self._children()

    def _children(self) -> int:
        total = 0
        for p in self.proc.children(recursive=True):
            try:
                total += p.memory_info().rss
            except psutil.Error:  # a child that has just ended
                pass
        return total

    def _reset_high_water_mark(self) -> bool:
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")  # 5: reset the peak RSS (Linux >= 4.0)
            return True
        except OSError:
            return False

    def _high_water_mark(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def run(self) -> None:
        exact = self._reset_high_water_mark()
        own = self._high_water_mark if exact else (lambda: self.proc.memory_info().rss)
        done = False
        while not done:  # the last look comes after stop, so the peak covers the whole run
            done = self.stop.wait(self.CHILDREN_S if exact else 0.1)
            try:
                self.peak = max(self.peak, own() + self._children())
            except (OSError, psutil.Error):  # the app has ended
                return


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values`` by nearest rank; NaN for none."""
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def medians(runs: list[dict], keys: Iterable[str]) -> dict:
    """One row for several runs of a path: the first run's fields, each of ``keys`` replaced by its median
    over the runs that have it (None where none has), and ``runs``, their number."""
    row = dict(runs[0], runs=len(runs))
    for key in keys:
        values = [r[key] for r in runs if r.get(key) is not None]
        row[key] = statistics.median(values) if values else None
    return row

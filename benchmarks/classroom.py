"""A class presses Generate at the same moment: every way of serving it, in the same run.

Launches ``python app.py --offline`` on free ports two ways: with ``--no-batching`` (each request
alone, one after another) and with the default iteration-level batching. Against each, N ``gradio_client`` clients (default 30) wait at a barrier,
then all submit ``/generate`` with the tab's default settings (embedded SmolLM2, 80 new tokens,
temperature 0.8, top-p 0.95, top-k 50), each with its own seed, and stream the result. A third path,
``no-web-server``, sends the same requests straight to the scheduler in a process with no app: the
model's own time, the floor under the others. Per path: latency from the press to the last token (first /
p50 / p95 / last), time to first token (p50 / p95), aggregate generated tokens/s, errors, and the app's
peak resident memory (RSS of the app and its children) above its idle figure after warm-up. The path
``vllm-cpu`` serves the same class through the app from a vLLM server on this machine's CPU (the remote
engine, ``--engine-url``; ``make engines`` installs vLLM): the server starts once before the first run
(its start time is printed, not counted), and its memory is counted with the app's. ``--repeat K`` runs the
paths in turn K times and reports each figure's median and the p95's range. Prints a markdown table and
writes benchmarks/results/classroom.json (classroom_N.json for another N, ..._distinct.json with
``--distinct-prompts``).

    python -m benchmarks.classroom [--clients 30[,100]] [--paths no-web-server,unbatched,batched,vllm-cpu]
                                   [--repeat 1] [--distinct-prompts] [--no-save]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import MemorySampler, launch_app, medians, percentile, stop_app

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "classroom.json"
PROMPT = "Once upon a time, in a small village by the sea,"  # the tab's default prompt
SETTINGS = dict(model_key="smollm2-135m-instruct", temperature=0.8, top_p=0.95, top_k=50, max_new_tokens=80,
                repetition_penalty=1.0, chat=False)
POLL_S = 0.02  # how often each of 30 clients looks for new output (the time to first token is measured to this)
# unbatched: each request alone (--no-batching); batched: the default. The path no-web-server
# (``benchmarks.classroom_floor``) sends the same requests to the scheduler with no app around it.
PATHS = {"unbatched": (["--no-batching"], {}), "batched": ([], {}), "vllm-cpu": ([], {})}
SERVED = "smollm2-135m-instruct"  # the name the vLLM path serves the embedded SmolLM2 under
_server: dict = {}  # the vLLM path's server, started on first use and stopped by main()


def vllm_url() -> str:
    """The API root of this run's vLLM server (started once, ``models.engines.vllm_server``)."""
    if "url" not in _server:
        from benchmarks.common import free_port
        from models.core import assets
        from models.engines import vllm_server

        port = free_port()
        log = Path(tempfile.mkdtemp(prefix="lmlab-classroom-vllm-")) / "vllm.log"
        started = time.monotonic()
        _server["proc"] = vllm_server.start(assets.path("smollm2-135m-instruct") / "model", port, SERVED, log_path=log)
        _server["start_s"] = round(time.monotonic() - started, 1)
        _server["url"] = f"http://127.0.0.1:{port}/v1"
        print(f"vLLM (CPU) started in {_server['start_s']} s", flush=True)
    return _server["url"]


def _stop_vllm() -> None:
    if "proc" in _server:
        from models.engines import vllm_server

        vllm_server.stop(_server.pop("proc"))
        _server.pop("url", None)


def prompt_for(k: int, distinct: bool) -> str:
    """Student k's prompt: the tab's default for everyone, or (``--distinct-prompts``) one of their own,
    so that no two prompts can share a prefill (``models.engines.scheduler`` reads identical prompts once)."""
    return f"Story {k + 1}. {PROMPT}" if distinct else PROMPT


def _tokens(status: str) -> int:
    m = re.search(r"· (\d+) tokens ·", status)
    return int(m.group(1)) if m else 0


def press_together(clients: int, student) -> float:
    """Run ``student(k)`` for every k on its own thread, all released at one moment; seconds until the last ends."""
    barrier = threading.Barrier(clients + 1)

    def released(k: int) -> None:
        barrier.wait()
        student(k)

    threads = [threading.Thread(target=released, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    began = time.monotonic()
    for t in threads:
        t.join()
    return time.monotonic() - began


def figures(name: str, clients: int, records: list[dict], wall: float, alone_s: float, alone_tokens: int) -> dict:
    """Latency, time to first token and throughput of one class from its per-student records
    (``latency_s``, ``first_token_s``, ``tokens``; ``error`` for a failed one)."""
    ok = [r for r in records if "error" not in r]
    lat = [r["latency_s"] for r in ok]
    ttft = [r["first_token_s"] for r in ok if "first_token_s" in r]
    return {
        "path": name, "clients": clients, "alone_s": round(alone_s, 2), "alone_tokens": alone_tokens,
        "first_s": round(min(lat), 2) if lat else None, "p50_s": round(percentile(lat, 0.5), 2),
        "p95_s": round(percentile(lat, 0.95), 2), "last_s": round(max(lat), 2) if lat else None,
        "ttft_p50_s": round(percentile(ttft, 0.5), 2), "ttft_p95_s": round(percentile(ttft, 0.95), 2),
        "saw_queue_position": sum(bool(r.get("queued")) for r in ok),
        "tokens": sum(r["tokens"] for r in ok), "tokens_per_s": round(sum(r["tokens"] for r in ok) / wall, 1),
        "errors": clients - len(ok), "error_samples": sorted({r["error"] for r in records if "error" in r})[:3],
    }


def run_path(name: str, clients: int, distinct: bool = False) -> dict:
    if name == "no-web-server":
        return _run_no_web_server(clients, distinct)
    from gradio_client import Client

    log_path = Path(tempfile.mkdtemp(prefix=f"lmlab-classroom-{name}-")) / "app.log"
    settings, server = SETTINGS, None
    if name == "vllm-cpu":
        flags = ["--engine-url", vllm_url(), "--engine-model", SERVED]
        proc, url = launch_app(log_path, flags, {})
        settings, server = dict(SETTINGS, model_key="remote:" + SERVED), MemorySampler(_server["proc"].pid)
    else:
        proc, url = launch_app(log_path, *PATHS[name])
    try:
        warm = Client(url, verbose=False)
        warm.predict(PROMPT, seed=0, api_name="/generate", **settings)  # loads the model
        t0 = time.monotonic()
        _, _, status = warm.predict(PROMPT, seed=0, api_name="/generate", **settings)
        alone = time.monotonic() - t0
        # ssl_verify=False: the app is plain http on this machine, so no certificate is ever checked, but
        # gradio_client builds a fresh httpx client per request and, with verification on, loads the CA
        # bundle each time (~57 ms of CPU): thirty students' presses cost the benchmark process ~3.4 s on
        # the server's two cores, time a class's browsers spend on their own machines.
        # A browser waits for the server's answer to the press; gradio_client gives up after httpx's 5 s.
        # The latency measured includes the wait either way; only a request the app drops is an error.
        pool = [Client(url, verbose=False, ssl_verify=False, httpx_kwargs={"timeout": 300})
                for _ in range(clients)]
        poll = POLL_S * max(1.0, clients / 30)  # all clients together look ~1,500 times a second
        sampler = MemorySampler(proc.pid)
        idle = sampler.memory() + (server.memory() if server else 0)
        sampler.start()
        if server:
            server.start()
        records: list[dict] = [{} for _ in range(clients)]

        def student(k: int) -> None:
            rec = records[k]
            start = time.monotonic()
            try:
                job = pool[k].submit(prompt_for(k, distinct), seed=k + 1, api_name="/generate", **settings)
                # Not ``for update in job``: gradio_client's iterator polls every millisecond, and thirty
                # such loops on the server's two cores cost it ~40 % of a core that a classroom's
                # browsers (on their own machines) never take. Look every 20 ms for the first token, then
                # wait for the end without looking (thirty clients polling to the end cost ~0.8 s of CPU).
                while not job.done():
                    if any(text for text, _h, _s in job.outputs()):
                        rec["first_token_s"] = time.monotonic() - start
                        break
                    time.sleep(poll)
                try:
                    job.result()  # blocks on the job's future, no polling; a failure is reported below
                except Exception:  # noqa: BLE001 - the outputs and job.exception() say what happened
                    pass
                outputs = job.outputs()
                if not outputs:  # the job ended without a single update: report why
                    raise job.exception() or RuntimeError(f"no output; status {job.status().code}")
                if "first_token_s" not in rec and any(text for text, _h, _s in outputs):
                    rec["first_token_s"] = time.monotonic() - start
                text, _html, status = outputs[-1]
                rec["queued"] = any("Waiting for a place in the batch" in st for _t, _h, st in outputs)
                rec["latency_s"] = time.monotonic() - start
                rec["tokens"] = _tokens(status)
                if "Done" not in status:
                    rec["error"] = f"unfinished: {status[:120]}"
            except Exception as exc:  # counted, never fatal: the goal is zero
                rec["error"] = f"{type(exc).__name__}: {exc}"[:200]

        wall = press_together(clients, student)
        for s in (sampler, server):
            if s:
                s.stop.set()
                s.join()
    finally:
        stop_app(proc)
    # With a server, both peaks add up: an upper bound on the two processes' peak together.
    peak = sampler.peak + (server.peak if server else 0)
    return {**figures(name, clients, records, wall, alone, _tokens(status)),
            "idle_rss_mib": round(idle / 2**20), "peak_rss_mib": round(peak / 2**20),
            "peak_above_idle_mib": round((peak - idle) / 2**20),
            **({"server_start_s": _server.get("start_s")} if server else {})}


def _run_no_web_server(clients: int, distinct: bool) -> dict:
    """The same class straight into the scheduler, in a fresh process with no web server: the model's own
    time for this work on this machine at this moment, the floor under the app's figures."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.classroom_floor", str(clients), str(int(distinct))],
                         cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1",
                                                                            LMLAB_OFFLINE="1"))
    if out.returncode:
        raise SystemExit(f"the no-web-server run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


NUMBERS = ["first_s", "p50_s", "p95_s", "last_s", "ttft_p50_s", "ttft_p95_s", "tokens_per_s", "peak_above_idle_mib",
           "idle_rss_mib", "alone_s"]


def summary(runs: list[dict]) -> dict:
    """One path's runs in one row: the median of each figure, the p95's range, errors and queue counts summed
    (the worst case counts)."""
    row = medians(runs, NUMBERS)
    row["p95_range"] = (min(r["p95_s"] for r in runs), max(r["p95_s"] for r in runs))
    row["errors"] = sum(r["errors"] for r in runs)
    row["saw_queue_position"] = max(r.get("saw_queue_position", 0) for r in runs)
    return row


def _fmt(value, unit: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:.2f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def table(rows: list[dict]) -> str:
    lines = ["| path | clients | runs | first done | p50 | p95 (range) | last | TTFT p50 | TTFT p95 | tokens/s (all) | "
             "errors | peak memory above idle | one request alone | saw a queue position |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        low, high = r["p95_range"]
        memory = ("–" if r["peak_above_idle_mib"] is None
                  else f"{_fmt(r['peak_above_idle_mib'])} MiB (idle {_fmt(r['idle_rss_mib'])} MiB)")
        lines.append(f"| {r['path']} | {r['clients']} | {r['runs']} | {_fmt(r['first_s'], ' s')} | "
                     f"{_fmt(r['p50_s'], ' s')} | **{_fmt(r['p95_s'], ' s')}** ({low:.1f}–{high:.1f}) | "
                     f"{_fmt(r['last_s'], ' s')} | {_fmt(r['ttft_p50_s'], ' s')} | {_fmt(r['ttft_p95_s'], ' s')} | "
                     f"{_fmt(r['tokens_per_s'])} | {r['errors']} | {memory} | {_fmt(r['alone_s'], ' s')} | "
                     f"{r['saw_queue_position']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="30",
                        help="students per class; several, comma-separated (30,100), run one after another with one "
                             "vLLM server for all")
    parser.add_argument("--paths", default=",".join(["no-web-server", "unbatched", "batched"]),
                        help=f"comma-separated, of: no-web-server, {', '.join(PATHS)}")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the paths in turn this many times (A B C A B C ...) and report medians: this "
                             "machine's speed drifts by tens of percent from minute to minute")
    parser.add_argument("--distinct-prompts", action="store_true",
                        help="give every student a prompt of their own (default: the tab's default prompt for all)")
    parser.add_argument("--no-save", action="store_true", help="print only (do not overwrite the results JSON)")
    args = parser.parse_args(argv)
    names = args.paths.split(",")
    try:
        for clients in [int(n) for n in args.clients.split(",")]:
            _one_size(clients, names, args)
    finally:
        _stop_vllm()


def _one_size(clients: int, names: list[str], args: argparse.Namespace) -> None:
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for _ in range(args.repeat):
        for name in names:
            runs[name].append(run_path(name, clients, args.distinct_prompts))
    rows = [summary(runs[name]) for name in names]
    print(table(rows), flush=True)
    for name in names:
        for r in runs[name]:
            if r["errors"]:
                print(f"{name}: {r['errors']} errors, e.g. {r['error_samples']}")
    if not args.no_save:
        out = {"summary": rows, "runs": runs, "settings": SETTINGS, "prompt": PROMPT,
               "distinct_prompts": args.distinct_prompts, "repeat": args.repeat,
               "vllm_start_s": _server.get("start_s"),
               "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "python": platform.python_version(), "device": os.environ.get("LMLAB_DEVICE", "auto")}}
        # The class of 30 on the default prompt is the reference run; other sizes (e.g. a 100-student burst),
        # distinct prompts and runs with the vLLM path keep their own files.
        path = RESULTS if clients == 30 else RESULTS.with_name(f"classroom_{clients}.json")
        if args.distinct_prompts:
            path = path.with_name(path.stem + "_distinct.json")
        if "vllm-cpu" in names:
            path = path.with_name(path.stem + "_vllm.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

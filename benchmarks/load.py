"""Many users at once: 20 API clients mixing /generate, /ner, /next_token and a small /compress_text for 60 s.

Launches ``python app.py --offline`` on a free port (the embedded models), warms each endpoint once,
then runs the clients in threads, each with its own gradio_client.Client, and samples the app
process tree's peak resident memory (``MemorySampler``). Latency counts the wait in the queue;
the "alone" column is the same request on the idle app, measured in the same run. By default the
app batches model work across users; ``--no-batching`` measures the one-request-at-a-time app.
Prints a markdown table and writes benchmarks/results/load.json.

    python -m benchmarks.load [--clients 20] [--seconds 60] [--no-batching]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import MemorySampler, launch_app, percentile, stop_app

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "load.json"
TEXT = "Ada Lovelace wrote the first program for Charles Babbage's Analytical Engine in London in 1843."
# (endpoint, keyword arguments): short requests, the way a class clicks around
MIX = [
    ("/generate", dict(prompt="The capital of France is", model_key="smollm2-135m-instruct", temperature=0.8,
                       top_p=0.95, top_k=50, max_new_tokens=16, repetition_penalty=1.0, seed=1, chat=False)),
    ("/ner", dict(text=TEXT, model_key="spacy-en_core_web_sm", aggregation="first", threshold=0.3)),
    ("/next_token", dict(prompt="Once upon a time", output="", model_key="smollm2-135m-instruct", temperature=0.8,
                         top_p=0.95, top_k=50)),
    ("/compress_text", dict(text=TEXT, upload=None, model_key="smollm2-135m-instruct")),
]


def run(clients: int, seconds: float, batching: bool = True) -> dict:
    from gradio_client import Client

    log_path = Path(tempfile.mkdtemp(prefix="lmlab-load-")) / "app.log"
    proc, url = launch_app(log_path, [] if batching else ["--no-batching"])
    try:
        warm = Client(url, verbose=False)
        for api, kwargs in MIX:  # models load once here, not inside the measured minute
            warm.predict(api_name=api, **kwargs)
        alone = {}  # the baseline: each request on an idle app, one client, three times
        for api, kwargs in MIX:
            times = []
            for _ in range(3):
                t0 = time.monotonic()
                warm.predict(api_name=api, **kwargs)
                times.append(time.monotonic() - t0)
            alone[api] = statistics.median(times)
        sampler = MemorySampler(proc.pid)
        idle_rss = sampler.memory()
        sampler.start()
        # ssl_verify=False: plain http on this machine; with it on, gradio_client loads the CA bundle for every
        # request (~57 ms of CPU) on the cores the app runs on (see benchmarks/classroom.py).
        pool = [Client(url, verbose=False, ssl_verify=False) for _ in range(clients)]
        records: list[tuple[str, float, str | None]] = []
        lock = threading.Lock()
        end = time.monotonic() + seconds

        def worker(k: int) -> None:
            i = k  # clients start at different points of the mix
            while time.monotonic() < end:
                api, kwargs = MIX[i % len(MIX)]
                i += 1
                started = time.monotonic()
                error = None
                try:
                    pool[k].predict(api_name=api, **kwargs)
                except Exception as exc:  # counted, never fatal: the goal is zero
                    error = f"{type(exc).__name__}: {exc}"[:200]
                with lock:
                    records.append((api, time.monotonic() - started, error))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - started
        sampler.stop.set()
        sampler.join()
        alive = proc.poll() is None
    finally:
        stop_app(proc)

    per = {}
    for api, _ in MIX:
        lat = [s for a, s, e in records if a == api and e is None]
        errs = [e for a, _, e in records if a == api and e is not None]
        per[api] = {"alone_s": round(alone[api], 3), "completed": len(lat), "errors": len(errs),
                    "p50_s": round(percentile(lat, 0.5), 3),
                    "p95_s": round(percentile(lat, 0.95), 3), "mean_s": round(statistics.fmean(lat), 3) if lat else None,
                    "error_samples": sorted(set(errs))[:3]}
    return {
        "clients": clients, "seconds": seconds, "wall_s": round(wall, 1), "batching": batching,
        "completed": sum(p["completed"] for p in per.values()), "errors": sum(p["errors"] for p in per.values()),
        "requests_per_s": round(sum(p["completed"] for p in per.values()) / wall, 2),
        "peak_rss_mib": round(sampler.peak / 2**20), "idle_rss_mib": round(idle_rss / 2**20),
        "app_still_serving": alive, "endpoints": per,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "device": "cpu" if "cuda" not in os.environ.get("LMLAB_DEVICE", "") else "cuda"},
        "mix": {api: {k: v for k, v in kwargs.items() if k in ("max_new_tokens", "model_key")} | (
            {"chars": len(kwargs["text"])} if "text" in kwargs else {}) for api, kwargs in MIX},
    }


def table(result: dict) -> str:
    lines = [f"{result['clients']} clients for {result['seconds']:.0f} s, batching "
             f"{'on' if result.get('batching', False) else 'off'}: **{result['completed']} requests** "
             f"({result['requests_per_s']}/s), **{result['errors']} errors**, peak resident memory "
             f"**{result['peak_rss_mib']:,} MiB** (idle after warm-up {result['idle_rss_mib']:,} MiB)", "",
             "| endpoint | alone (1 client) | completed | errors | p50 latency | p95 latency |",
             "|---|---:|---:|---:|---:|---:|"]
    for api, p in result["endpoints"].items():
        lines.append(f"| `{api}` | {p['alone_s']:.2f} s | {p['completed']} | {p['errors']} | {p['p50_s']:.2f} s | "
                     f"{p['p95_s']:.2f} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--no-batching", action="store_true", help="launch the app with --no-batching")
    parser.add_argument("--no-save", action="store_true", help="print only (do not overwrite the results JSON)")
    args = parser.parse_args(argv)
    result = run(args.clients, args.seconds, batching=not args.no_batching)
    print(table(result))
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

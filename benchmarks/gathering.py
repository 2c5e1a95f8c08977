"""A class presses "Tag entities", then "Show the next-token distribution", at the same moment.

``/ner`` and ``/next_token`` requests that arrive together share one model call (``models.engines.batching``):
the first of them waits ``LMLAB_GATHER_MS`` for others, then one ``tag_many`` call or one forward pass
serves them all. This benchmark measures that window. It launches ``python app.py --offline`` once per
path: ``--no-batching`` (one request at a time, the reference), then batching with windows of 0, 5
(the old default), 20 and 50 ms (the default). Against each, N ``gradio_client`` clients (default 30) wait at a barrier
and send ``/ner`` with the tab's first example and default settings; then the same for ``/next_token``
with the Generate tab's default prompt. Per burst: latency from the press to the answer (p50 / p95 /
last), errors, and how many model calls served the N requests (from the app's log: every call that
served more than one request logs its size). ``--repeat K`` runs the paths in turn K times and reports
medians (this machine's speed drifts). Prints a markdown table; writes benchmarks/results/gathering.json.

    python -m benchmarks.gathering [--clients 30] [--windows 0,5,20,50] [--repeat 1] [--no-save]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path

from benchmarks.classroom import press_together
from benchmarks.common import launch_app, medians, percentile, stop_app

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "gathering.json"
# The NER tab's first example and defaults (spaCy's small English model is the embedded tagger).
NER = dict(text="Chancellor Angela Merkel met French President Emmanuel Macron in Paris on Tuesday to discuss the "
                "European Union budget, Reuters reported.",
           model_key="spacy-en_core_web_sm", aggregation="first", threshold=0.3)
# The Generate tab's default prompt and settings, nothing generated yet.
NEXT_TOKEN = dict(prompt="Once upon a time, in a small village by the sea,", output="",
                  model_key="smollm2-135m-instruct", temperature=0.8, top_p=0.95, top_k=50)
BURSTS = {"/ner": NER, "/next_token": NEXT_TOKEN}
LOGGED = re.compile(r"lmlab\.batching: (?P<name>[^:]+): (?P<n>\d+) requests in one call")


def calls_from_log(new_log: str, requests: int) -> tuple[int, int]:
    """(model calls that served ``requests``, the largest of them) from the log lines a burst added:
    each logged call served its size, every request not in one was served alone."""
    sizes = [int(m["n"]) for m in LOGGED.finditer(new_log)]
    alone = requests - sum(sizes)
    return len(sizes) + max(0, alone), max(sizes, default=1)


def run_path(name: str, extra_args: list[str], env: dict[str, str], clients: int) -> dict:
    from gradio_client import Client

    log_path = Path(tempfile.mkdtemp(prefix=f"lmlab-gathering-{name}-")) / "app.log"
    proc, url = launch_app(log_path, extra_args, env)
    try:
        warm = Client(url, verbose=False)
        alone = {}
        for api, kwargs in BURSTS.items():
            warm.predict(api_name=api, **kwargs)  # loads the model
            t0 = time.monotonic()
            warm.predict(api_name=api, **kwargs)
            alone[api] = time.monotonic() - t0
        # ssl_verify=False: plain http here; with it on, gradio_client loads the CA bundle per request
        # (see benchmarks.classroom).
        pool = [Client(url, verbose=False, ssl_verify=False, httpx_kwargs={"timeout": 300}) for _ in range(clients)]
        row: dict = {"path": name, "clients": clients}
        for api, kwargs in BURSTS.items():
            latencies: list[float] = []
            errors: list[str] = []

            def student(k: int, api=api, kwargs=kwargs, latencies=latencies, errors=errors) -> None:
                start = time.monotonic()
                try:
                    pool[k].predict(api_name=api, **kwargs)
                    latencies.append(time.monotonic() - start)
                except Exception as exc:  # counted, never fatal: the goal is zero
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])

            before = log_path.stat().st_size
            press_together(clients, student)
            time.sleep(0.2)  # the app's log lines of the last call
            with log_path.open() as fh:
                fh.seek(before)
                calls, largest = calls_from_log(fh.read(), clients)
            key = api.strip("/")
            row.update({f"{key}_alone_s": round(alone[api], 3), f"{key}_p50_s": round(percentile(latencies, 0.5), 2),
                        f"{key}_p95_s": round(percentile(latencies, 0.95), 2),
                        f"{key}_last_s": round(max(latencies), 2) if latencies else None,
                        f"{key}_errors": len(errors), f"{key}_error_samples": sorted(set(errors))[:3],
                        f"{key}_calls": calls, f"{key}_largest_call": largest})
    finally:
        stop_app(proc)
    return row


def summary(runs: list[dict]) -> dict:
    """One path's runs as one row: medians of the numbers, errors summed."""
    row = medians(runs, [k for k, v in runs[0].items() if isinstance(v, (int, float)) and k != "clients"])
    for key in [k for k in runs[0] if k.endswith("_errors")]:
        row[key] = sum(r[key] for r in runs)
    return row


def table(rows: list[dict]) -> str:
    lines = ["| path | runs | `/ner` alone | class p50 | p95 | last | model calls for the class | largest | errors | "
             "`/next_token` alone | class p50 | p95 | last | model calls for the class | largest | errors |",
             "|---|---:|" + "---:|" * 14]
    for r in rows:
        cells = [r["path"], str(r["runs"])]
        for key in ("ner", "next_token"):
            cells += [f"{r[f'{key}_alone_s']:.2f} s", f"{r[f'{key}_p50_s']:.2f} s", f"{r[f'{key}_p95_s']:.2f} s", f"{r[f'{key}_last_s']:.2f} s",
                      f"{r[f'{key}_calls']:g}", f"{r[f'{key}_largest_call']:g}", str(r[f"{key}_errors"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=30)
    parser.add_argument("--windows", default="0,5,20,50", help="gathering windows to measure, in milliseconds")
    parser.add_argument("--repeat", type=int, default=1, help="run the paths in turn this many times; report medians")
    parser.add_argument("--no-save", action="store_true", help="print only (do not overwrite the results JSON)")
    args = parser.parse_args(argv)
    paths = [("one at a time (--no-batching)", ["--no-batching"], {})]
    paths += [(f"gathered, {ms} ms window", [], {"LMLAB_GATHER_MS": ms}) for ms in args.windows.split(",")]
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in paths}
    for _ in range(args.repeat):
        for name, extra_args, env in paths:
            runs[name].append(run_path(name, extra_args, env, args.clients))
            print(json.dumps(runs[name][-1]), flush=True)
    rows = [summary(runs[name]) for name, _, _ in paths]
    print(table(rows))
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"summary": rows, "runs": runs, "ner": NER, "next_token": NEXT_TOKEN,
                                       "repeat": args.repeat,
                                       "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                                   "python": platform.python_version()}}, indent=2) + "\n")


if __name__ == "__main__":
    main()

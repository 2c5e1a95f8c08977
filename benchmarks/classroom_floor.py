"""The classroom benchmark's floor: N students' requests straight into the scheduler, no web server.

Run by ``benchmarks.classroom`` (path ``no-web-server``) in a fresh process; prints one JSON line with the
fields of the app paths (memory is not sampled here). Each student's request runs on its own thread
through ``models.generation.generator.stream`` with the tab's default settings and its own seed, all released at once.

    python -m benchmarks.classroom_floor CLIENTS DISTINCT(0|1)
"""

from __future__ import annotations

import json
import sys
import time

from benchmarks.classroom import SETTINGS, figures, press_together, prompt_for
from models.engines import engine as engines


def main() -> None:
    clients, distinct = int(sys.argv[1]), sys.argv[2] == "1"
    from models.core import registry
    from models.generation import generator

    loaded = registry.load_causal_lm(SETTINGS["model_key"])
    s = generator.SamplingSettings(temperature=SETTINGS["temperature"], top_p=SETTINGS["top_p"],
                                   top_k=SETTINGS["top_k"], max_new_tokens=SETTINGS["max_new_tokens"])
    generator.generate_text(loaded, prompt_for(0, distinct), s)  # warm-up
    t0 = time.monotonic()
    alone = generator.generate_text(loaded, prompt_for(0, distinct), s)
    alone_s = time.monotonic() - t0
    records: list[dict] = [{} for _ in range(clients)]

    def student(k: int) -> None:
        start = time.monotonic()
        settings = generator.SamplingSettings(**{**s.__dict__, "seed": k + 1})
        for ev in generator.stream(loaded, prompt_for(k, distinct), settings, engine=engines.named("classroom")):
            if ev.tokens and "first_token_s" not in records[k]:
                records[k]["first_token_s"] = time.monotonic() - start
            last = ev
        records[k].update(latency_s=time.monotonic() - start, tokens=len(last.tokens))

    wall = press_together(clients, student)
    print(json.dumps({**figures("no-web-server", clients, records, wall, alone_s, len(alone.tokens)),
                      "idle_rss_mib": None, "peak_rss_mib": None, "peak_above_idle_mib": None}))


if __name__ == "__main__":
    main()

"""What the controller's read of the routers' metrics costs it: one node's export, parsed whole
and with only the routers' lines (controller/rollout/router_metrics.py `routers_only`).

A rollout's pass reads the routers' figures (an analysis window, a start held for headroom
every `loading_poll_s`) from every node's metrics export, where Ray's own series are most of
the text. On a real local Ray Serve (2 CPUs) with serveops' rendering of one deployment (a
version application and its router), `--seconds` of a closed loop first make the router's
series exist; then, arms alternating, the export is parsed `--reps` times whole (every series,
as before) and with the routers' lines only, timed in this process's CPU time, and the whole
read (`RayMetricsSource.scrape`: the node list, the export's GET, the parse) is timed too.

    RAY_AUTH_MODE=disabled flock /tmp/serveops-ray.lock .venv/bin/python -u \
        bench/scrape_cost.py [--reps 20] [--seconds 10]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client.parser import text_string_to_metric_families

from bench.serving_setup import (
    load_average,
    new_client,
    registered_models,
    rendered,
    serve_apps,
    start_ray,
)
from controller.dev.demo import sample_request
from controller.rollout.router_metrics import RayMetricsSource, parse, routers_only
from tests.e2e.load import closed_loop

NAME = "scrape"


def parse_whole(text: str) -> int:
    """Every series of the export through the parser, as the controller read it before."""
    return sum(len(family.samples) for family in text_string_to_metric_families(text))


def cpu_ms(work: Callable[[], object]) -> float:
    began = time.process_time()
    work()
    return (time.process_time() - began) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    models = registered_models()
    ray = start_ray()
    try:
        client = new_client(ray)
        url = serve_apps(client, rendered(models, NAME, models.versions[0]), NAME)
        closed_loop(url, sample_request(), 4, args.seconds)
        time.sleep(2)  # one more export (every second in the benches' Ray)
        source = RayMetricsSource(ray.address)
        [endpoint] = source.endpoints()
        text = httpx.get(endpoint, timeout=10).text
        ours = routers_only(text)
        lines, kept = text.count("\n"), ours.count("\n") + 1
        print(f"load average at start: {load_average()}")
        print(
            f"one node's export: {len(text) / 1024:.0f} KiB, {lines} lines; the routers' "
            f"{len(ours) / 1024:.1f} KiB, {kept} lines; router series parsed: "
            f"{sum(len(v) for v in parse(text).values())} version(s)"
        )
        whole: list[float] = []
        filtered: list[float] = []
        arms: list[tuple[list[float], Callable[[str], object]]] = [
            (whole, parse_whole),
            (filtered, parse),
        ]
        for rep in range(args.reps):
            for out, fn in arms if rep % 2 == 0 else arms[::-1]:
                out.append(cpu_ms(functools.partial(fn, text)))
        reads = [cpu_ms(source.scrape) for _ in range(args.reps)]
        walls = []
        for _ in range(args.reps):
            began = time.perf_counter()
            source.scrape()
            walls.append((time.perf_counter() - began) * 1000.0)
        w, f = statistics.median(whole), statistics.median(filtered)
        print(
            f"parse, median of {args.reps} (CPU ms in this process): whole {w:.1f} ms, "
            f"routers' lines only {f:.1f} ms, {w / f:.1f}x less"
        )
        print(
            f"RayMetricsSource.scrape (node list, GET, parse): CPU {statistics.median(reads):.1f}"
            f" ms, wall {statistics.median(walls):.1f} ms (median of {args.reps})"
        )
        print(f"load average at end: {load_average()}")
        client.close()
    finally:
        ray.stop()


if __name__ == "__main__":
    main()

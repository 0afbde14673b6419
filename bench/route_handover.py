"""Routing without the router in steady state: does the route survive being handed over?

Issue 14 asks whether the version application could own the route while no rollout is in
flight (no router hop: the router path costs about 0.83 of the direct path's throughput, see
router_overhead in docs/benchmarks.md) and the router take it only for a rollout, and to
adopt that only if no request fails while the route changes hands.

On a real local Ray Serve (2 CPUs) with a real MLflow store, one deployment is rendered as
serveops renders it (a version application and a router). It starts *direct*: the version
application owns `/ho` and the router runs with no route. An open loop (`--rate` requests per
second, well under saturation) posts to `/ho` for the whole run while the route is handed
over `--handovers` times, `--every` seconds apart, each in one write of Serve's config: to the
router (it gets `/ho`, the version application none), then back (the reverse). The model
replica is the same throughout.

Prints, per hand-over: requests that failed within `--every` seconds after the write, by
status (0: no HTTP answer), and when the new owner answered its first request (the router's
answers carry `x-serveops-routing`); then the totals and whether the version's replica kept
its process. The decision rule is the issue's: adopt only with no failed request.

    flock /tmp/serveops-ray.lock .venv/bin/python bench/route_handover.py [--rate 20]
        [--handovers 6] [--every 10]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serving_setup import (
    load_average,
    new_client,
    registered_models,
    rendered,
    start_ray,
    wait_answering,
    wait_running,
)
from controller.dev.demo import sample_request
from tests.e2e.load import OpenLoop
from tests.e2e.story import processes

NAME = "ho"


def routed(version_app: dict[str, Any], router: dict[str, Any], to_router: bool) -> list[Any]:
    """Both applications, the route on one of them."""
    v, r = copy.deepcopy(version_app), copy.deepcopy(router)
    v["route_prefix"], r["route_prefix"] = (None, f"/{NAME}") if to_router else (f"/{NAME}", None)
    return [v, r]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20.0, help="open loop, requests/s")
    parser.add_argument("--handovers", type=int, default=6)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between hand-overs")
    args = parser.parse_args()

    models = registered_models()
    ray = start_ray()
    try:
        client = new_client(ray)
        version_app, router = rendered(models, NAME, models.versions[0])
        client.put(routed(version_app, router, to_router=False), client.get())
        wait_running(client, [version_app["name"], router["name"]])
        url = f"http://127.0.0.1:{client.http_port}/{NAME}"
        wait_answering(url)
        before = processes(ray.address, NAME)
        print(f"load average at start: {load_average()}")
        writes: list[tuple[float, bool]] = []
        with OpenLoop(url, args.rate, sample_request()) as load:
            time.sleep(args.every)
            for i in range(args.handovers):
                to_router = i % 2 == 0
                writes.append((time.time(), to_router))
                client.put(routed(version_app, router, to_router), client.get())
                time.sleep(args.every)
        answers = sorted(load.answers, key=lambda a: a.sent_at)
        total_failed = 0
        for at, to_router in writes:
            window = [a for a in answers if at <= a.sent_at < at + args.every]
            failed = [a for a in window if a.status != 200]
            total_failed += len(failed)
            owner = [a for a in window if a.status == 200 and (a.routing is not None) == to_router]
            took = f"{owner[0].received_at - at:.2f}s" if owner else "never"
            statuses = dict(Counter(a.status for a in failed))
            print(
                f"to {'router' if to_router else 'version app'}: {len(window)} requests, "
                f"failed {len(failed)} {statuses or ''}; new owner's first answer after {took}"
            )
            for why in sorted({a.error for a in failed})[:3]:
                print(f"    {why}")
        steady = [a for a in answers if a.sent_at < writes[0][0]]
        after = processes(ray.address, NAME)
        print(
            f"whole run: {len(answers)} requests, failed "
            f"{sum(1 for a in answers if a.status != 200)} ({total_failed} after hand-overs, "
            f"{sum(1 for a in steady if a.status != 200)} before the first)"
        )
        print(f"replicas kept their processes (version app and router): {before == after}")
        print(f"load average at end: {load_average()}")
        client.close()
    finally:
        ray.stop()


if __name__ == "__main__":
    main()

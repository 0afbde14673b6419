"""A canary's first users: what they pay for a candidate that was never asked anything.

On a real local Ray Serve (2 CPUs) and MLflow store, one deployment is rendered as serveops
renders it (version application v1, router at `/cs`) under an open loop of `--rate` requests per
second. Per trial, for each variant (alternating which goes first), a candidate application of
v2 is started beside v1, waited for until RUNNING, then given `--weight` percent of the
traffic by a router reconfigure, as a canary step does; `--seconds` later it is taken out again
and deleted. Variants:

- `cold`: the candidate's replica runs no warm-up (`spec.server.warmup: 0`);
- `warm`: the default warm-up (predictions on the model's input example or signature zeros
  while the replica loads, before Serve gives it traffic).

Both variants run the router of this checkout, which makes a handle to a version as soon as
it sees it RUNNING (in a thread) instead of at the first request routed to it.

For each variant: the latency of the candidate's first `--first` answers, against the median of
its answers after the first `--settle` seconds (the same replica, warm by then), as a ratio;
and the stable version's p99 in the first two seconds after the weight change against its
p99 before it. Failed requests are counted (the goal is none).

    flock /tmp/serveops-ray.lock .venv/bin/python bench/cold_start.py [--trials 3] [--rate 20]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serving_setup import (
    load_average,
    new_client,
    registered_models,
    rendered,
    serve_apps,
    start_ray,
    wait_running,
)
from controller.cluster.serve_api import ServeClient
from controller.dev.demo import sample_request
from tests.e2e.load import Answer, OpenLoop

NAME = "cs"
VARIANTS = {"cold": 0, "warm": None}  # spec.server.warmup; None: the default


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def with_targets(router: dict[str, Any], targets: list[dict[str, Any]]) -> dict[str, Any]:
    changed = copy.deepcopy(router)
    changed["deployments"][0]["user_config"]["targets"] = targets
    return changed


def one_variant(
    client: ServeClient,
    loop: OpenLoop,
    base: list[dict[str, Any]],
    candidate: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, float]:
    """Start the candidate, give it weight, measure, take it away; figures of this run."""
    v1_app, router = base
    [stable] = router["deployments"][0]["user_config"]["targets"]
    client.put([v1_app, router, candidate], client.get())
    wait_running(client, [candidate["name"]])
    time.sleep(2.0)  # the router's status poll sees it RUNNING (and makes its handle)
    split = [
        {**stable, "weight": 100.0 - args.weight},
        {**stable, "app": candidate["name"], "version": "2", "weight": args.weight},
    ]
    changed_at = time.time()
    client.put([v1_app, with_targets(router, split), candidate], client.get())
    time.sleep(args.seconds)
    client.put([v1_app, router, candidate], client.get())
    time.sleep(1.0)
    client.put([v1_app, router], client.get())

    answers: list[Answer] = list(loop.answers)
    during = [a for a in answers if changed_at - 5 <= a.sent_at < changed_at + args.seconds]
    cand = sorted((a for a in during if a.version == "2"), key=lambda a: a.sent_at)
    settled = [a.latency_s * 1000 for a in cand if a.sent_at >= changed_at + args.settle]
    first = [a.latency_s * 1000 for a in cand[: args.first]]
    before = [a.latency_s * 1000 for a in during if a.version == "1" and a.sent_at < changed_at]
    after = [
        a.latency_s * 1000
        for a in during
        if a.version == "1" and changed_at <= a.sent_at < changed_at + 2
    ]
    return {
        "first_ms": statistics.mean(first) if first else float("nan"),
        "first_max_ms": max(first) if first else float("nan"),
        "settled_p50_ms": statistics.median(settled) if settled else float("nan"),
        "stable_p99_before_ms": p(before, 0.99),
        "stable_p99_after_ms": p(after, 0.99),
        "failed": float(sum(1 for a in during if a.status != 200)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--rate", type=float, default=20.0, help="open loop, requests/s")
    parser.add_argument("--weight", type=float, default=50.0, help="candidate's percent")
    parser.add_argument("--seconds", type=float, default=20.0, help="candidate keeps weight")
    parser.add_argument("--settle", type=float, default=10.0, help="after this, it is warm")
    parser.add_argument("--first", type=int, default=3, help="first answers measured")
    args = parser.parse_args()

    models = registered_models()
    ray = start_ray()
    try:
        client = new_client(ray)
        v1_app, router = rendered(models, NAME, models.versions[0])
        base = [v1_app, router]
        url = serve_apps(client, base, NAME)
        v2_app, _ = rendered(models, NAME, models.versions[1])
        print(f"load average at start: {load_average()}", flush=True)
        figures: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
        with OpenLoop(url, args.rate, sample_request()) as loop:
            time.sleep(5)
            for trial in range(args.trials):
                order = list(VARIANTS)[trial % 2 :] + list(VARIANTS)[: trial % 2]
                for variant in order:
                    candidate = copy.deepcopy(v2_app)
                    candidate["name"] = f"{NAME}--v2-{variant}-{trial}"
                    if VARIANTS[variant] is not None:
                        candidate["args"]["warmup"] = VARIANTS[variant]
                    got = one_variant(client, loop, base, candidate, args)
                    figures[variant].append(got)
                    print(
                        f"trial {trial + 1} {variant}: first {args.first} answers "
                        f"{got['first_ms']:.1f} ms (max {got['first_max_ms']:.1f}), settled p50 "
                        f"{got['settled_p50_ms']:.1f} ms, stable p99 {got['stable_p99_before_ms']:.0f}"
                        f" -> {got['stable_p99_after_ms']:.0f} ms, failed {got['failed']:.0f} | "
                        f"load {load_average()}",
                        flush=True,
                    )
        for variant, runs in figures.items():
            first = statistics.median(r["first_ms"] for r in runs)
            settled = statistics.median(r["settled_p50_ms"] for r in runs)
            failed = sum(r["failed"] for r in runs)
            print(
                f"{variant}: candidate's first {args.first} answers {first:.1f} ms, settled p50 "
                f"{settled:.1f} ms, ratio first/settled {first / settled:.2f}; stable p99 "
                f"before {statistics.median(r['stable_p99_before_ms'] for r in runs):.0f} ms, "
                "first 2 s after the weight change "
                f"{statistics.median(r['stable_p99_after_ms'] for r in runs):.0f} ms; failed "
                f"{failed:.0f}"
            )
        print(f"load average at end: {load_average()}")
        client.close()
    finally:
        ray.stop()


if __name__ == "__main__":
    main()

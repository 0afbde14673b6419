"""Does the serving path recover after an overload, and what does the router's bound do to it?

On a real local Ray Serve (2 CPUs) and MLflow store, one deployment rendered as serveops renders
it (a version application, a router at `/ov`). First the router path's saturation (closed loop
of `--concurrency`, as bench/saturation.py). Then, per round and per variant (alternating which
goes first), an open loop offers `--over` times that saturation for `--overload-seconds`, then
`--under` times it for `--recovery-seconds`. A path that recovers answers everything in the
second phase within a few seconds; a metastable one keeps failing after the overload ended
(work spent on requests whose clients already gave up).

Variants (`--bounds`), written straight into the router's config: `B` is a `max_in_flight` of B
per version with every request handed to Serve's handle at once (24 = 8 running + 16 queued per
replica, 72 = 8 + 64), `B:R` the same bound with at most R at Serve and the rest queued in the
router (`max_running`, controller/serving/slots.py).

    flock /tmp/serveops-ray.lock .venv/bin/python bench/overload_recovery.py [--rounds 2]
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

from bench.saturation import saturation
from bench.serving_setup import (
    load_average,
    new_client,
    registered_models,
    rendered,
    serve_apps,
    start_ray,
)
from controller.dev.demo import sample_request
from tests.e2e.load import OpenLoop, Summary

NAME = "ov"


def bounded(router: dict[str, Any], variant: str) -> dict[str, Any]:
    bound, _, running = variant.partition(":")
    changed = copy.deepcopy(router)
    for target in changed["deployments"][0]["user_config"]["targets"]:
        target["max_in_flight"] = int(bound)
        target["max_running"] = int(running) if running else None
    return changed


def phase(url: str, rate: float, seconds: float, timeout_s: float) -> tuple[OpenLoop, float]:
    with OpenLoop(url, rate, sample_request(), timeout_s=timeout_s) as loop:
        time.sleep(seconds)
    return loop, loop.started_at


def per_slice(loop: OpenLoop, start: float, seconds: float, width: float) -> list[int]:
    """Failed requests per `width` seconds of sending."""
    out = []
    t = start
    while t < start + seconds - 1e-9:
        out.append(len(loop.summary(t, t + width).failed))
        t += width
    return out


def describe(s: Summary) -> str:
    return (
        f"{s.rate:.1f} req/s OK, failed {len(s.failed)} (shed {s.shed}, "
        f"504 {s.statuses.get(504, 0)}), p50 {s.p50_ms:.0f} ms p99 {s.p99_ms:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bounds", nargs="+", default=["24", "72", "72:8"])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--over", type=float, default=1.3)
    parser.add_argument("--under", type=float, default=0.6)
    parser.add_argument("--overload-seconds", type=float, default=20.0)
    parser.add_argument("--recovery-seconds", type=float, default=30.0)
    args = parser.parse_args()

    models = registered_models()
    ray = start_ray()
    try:
        client = new_client(ray)
        version_app, router = rendered(models, NAME, models.versions[0])
        url = serve_apps(client, [version_app, router], NAME)
        timeout_s = float(router["deployments"][0]["user_config"]["timeout_s"]) + 5
        sat = saturation(url, args.concurrency, 10, warm_up_s=3).rate
        print(
            f"router path saturation {sat:.1f} req/s; overload {args.over:g}x = "
            f"{args.over * sat:.1f} req/s for {args.overload_seconds:g}s, then "
            f"{args.under:g}x = {args.under * sat:.1f} req/s for {args.recovery_seconds:g}s | "
            f"load {load_average()}",
            flush=True,
        )
        last10: dict[str, list[int]] = {b: [] for b in args.bounds}
        goodput: dict[str, list[float]] = {b: [] for b in args.bounds}
        for r in range(args.rounds):
            order = args.bounds[r % len(args.bounds) :] + args.bounds[: r % len(args.bounds)]
            for bound in order:
                client.put([version_app, bounded(router, bound)], client.get())
                time.sleep(5)
                over, _ = phase(url, args.over * sat, args.overload_seconds, timeout_s)
                under, began = phase(url, args.under * sat, args.recovery_seconds, timeout_s)
                slices = per_slice(under, began, args.recovery_seconds, 5.0)
                tail = under.summary(
                    began + args.recovery_seconds - 10, began + args.recovery_seconds
                )
                last10[bound].append(len(tail.failed))
                goodput[bound].append(over.summary().rate)
                print(
                    f"round {r + 1} bound {bound}: overload {describe(over.summary())} | "
                    f"recovery {describe(under.summary())}; failed per 5 s {slices}; last 10 s "
                    f"failed {len(tail.failed)} | load {load_average()}",
                    flush=True,
                )
                time.sleep(15)  # drain before the next variant
        for bound, tails in last10.items():
            good = statistics.median(goodput[bound])
            print(
                f"bound {bound}: answered OK in the overload {good:.1f} req/s, "
                f"{good / sat:.2f} of saturation; failed in the last 10 s of recovery, median "
                f"{statistics.median(tails):.0f} over {len(tails)} rounds ({tails})"
            )
        client.close()
    finally:
        ray.stop()


if __name__ == "__main__":
    main()

"""What a second version costs the machine while it takes no traffic, and what Ray's metrics
export interval costs, on the router path's own processes.

A rollout runs a second version application beside the stable one: a canary's candidate before
its first step, a blue-green preview whose mirrors the governor dropped, the old version kept
for `scale_down_delay` after a switch. Issue 14's headroom at 0.8 of saturation is a few percent
of this machine (docs/benchmarks.md, item 22), so what such a version costs at rest matters.

On a real local Ray Serve (2 CPUs, serveops' rendering: v1's version application and its router,
replicas of 0.2 CPU), per arm (`--intervals`: `RAY_metrics_report_interval_ms` for every Ray
process; the controller's analysis needs 1000 for windows of a few seconds, Ray's default is
10000), arms alternating `--rounds` times, each in a fresh Ray:

1. at rest: `--seconds` with no request; every process's CPU;
2. loaded: an open loop at `--rate` req/s for `--seconds`; CPU per answered request;
3. v2's version application added (no weight: nothing routes to it), let settle, then 1 and 2
   again.

Printed per phase: the machine's share of a core and the busiest process groups'. The figures
to compare are differences within one Ray: v2 at rest minus without it, loaded likewise.

    RAY_AUTH_MODE=disabled flock /tmp/serveops-ray.lock .venv/bin/python -u bench/rest_cost.py \
        [--intervals 1000,10000] [--rounds 2] [--rate 60] [--seconds 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.backlog import CpuSampler, cpu_between
from bench.serving_setup import (
    Models,
    load_average,
    new_client,
    registered_models,
    rendered,
    serve_apps,
    start_ray,
    wait_running,
)
from controller.dev.demo import sample_request
from tests.e2e.load import LoadProcess

NAME = "rest"
SETTLE_S = 15.0  # after a start: the new worker's own start is over


def phase(cpu: CpuSampler, label: str, seconds: float, url: str, rate: float) -> None:
    """One phase's CPU: at rest (`rate` 0) or under an open loop."""
    t0 = time.time()
    if rate <= 0:
        time.sleep(seconds)
        use = cpu_between(cpu.samples, t0 + 1, time.time())
    else:
        with LoadProcess(url, rate, sample_request(), timeout_s=30) as load:
            time.sleep(2)  # the loop's own start
            t0 = time.time()
            time.sleep(seconds)
        use = cpu_between(cpu.samples, t0 + 1, t0 + seconds, load.answers)
        failed = sum(1 for a in load.answers if a.status != 200)
        label = f"{label} ({failed} failed)"
    print(f"  {label}: {use.line(top=7) if use else 'no samples'}", flush=True)


def arm(models: Models, interval_ms: int, args: argparse.Namespace) -> None:
    v1, v2 = models.versions[:2]
    ray = start_ray({"RAY_metrics_report_interval_ms": str(interval_ms)})
    cpu = CpuSampler()
    try:
        client = new_client(ray)
        serving = rendered(models, NAME, v1)  # [v1's version app, the router]
        cand = rendered(models, NAME, v2)[0]
        url = serve_apps(client, serving, NAME)
        cpu.start()
        time.sleep(SETTLE_S)
        print(f"metrics every {interval_ms} ms; load average {load_average()}", flush=True)
        phase(cpu, "v1 at rest", args.seconds, url, 0)
        phase(cpu, f"v1 at {args.rate:g} req/s", args.seconds, url, args.rate)
        client.put([*serving, cand], client.get())
        wait_running(client, [cand["name"]])
        time.sleep(SETTLE_S)
        phase(cpu, "v1 + idle v2 at rest", args.seconds, url, 0)
        phase(cpu, f"v1 + idle v2 at {args.rate:g} req/s", args.seconds, url, args.rate)
    finally:
        cpu.stop()
        ray.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intervals", default="1000,10000", help="ms, comma-separated")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=60.0, help="req/s, the loaded phases")
    parser.add_argument("--seconds", type=float, default=30.0, help="per phase")
    args = parser.parse_args()
    models = registered_models()
    for r in range(args.rounds):
        for interval in (int(x) for x in args.intervals.split(",")):
            print(f"round {r + 1}", end=", ")
            arm(models, interval, args)


if __name__ == "__main__":
    main()

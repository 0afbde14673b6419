"""A candidate's start beside the version that serves: what it costs that version's requests,
with the candidate's model loaded at normal or at lowered CPU priority
(controller/serving/startup.py).

On a real local Ray Serve (2 CPUs, replicas of 0.2 CPU) and MLflow store, v1 serves through its
router (serveops' rendering); an open loop (its own process) offers `--load-fraction` of the
router path's saturation, measured first in the same run. Each round, for each priority in
turn (the order alternates between rounds): the config is written with v2's version
application added (no route, no traffic: what a rollout's loading phase starts), and the load's
answers are summarised over the `--window` seconds after the write (failed, shed, p50, p99);
the time until v2 runs is noted; v2 is removed and the machine left `--settle` seconds. A
window with no start at all opens every round, the baseline.

    flock /tmp/serveops-ray.lock .venv/bin/python bench/candidate_start.py \
        [--load-fraction 0.8] [--rounds 3] [--window 20] [--nice 0 --nice 10]
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
    start_ray,
    wait_answering,
    wait_running,
)
from controller.cluster.serve_api import ServeClient
from controller.dev.demo import sample_request
from tests.e2e.load import LoadProcess, Summary

NAME = "startbench"


def candidate(app: dict[str, Any], nice: int) -> dict[str, Any]:
    """v2's version application, its start at `nice`."""
    out = copy.deepcopy(app)
    env = out.setdefault("runtime_env", {}).setdefault("env_vars", {})
    env["SERVEOPS_START_NICE"] = str(nice)
    return out


def gone(client: ServeClient, name: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while name in client.get().apps and time.monotonic() < deadline:
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load-fraction", type=float, default=0.8)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=20.0, help="seconds after each write")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after a removal")
    parser.add_argument("--nice", type=int, action="append", help="priorities compared")
    args = parser.parse_args()
    nices = args.nice or [0, 10]

    models = registered_models()
    v1, v2 = models.versions
    ray = start_ray()
    try:
        client = new_client(ray)
        serving = rendered(models, NAME, v1)  # [v1's version app, the router]
        cand = rendered(models, NAME, v2)[0]
        client.put(serving, client.get())
        wait_running(client, [a["name"] for a in serving])
        url = f"http://127.0.0.1:{client.http_port}/{NAME}"
        wait_answering(url)
        saturation(url, args.concurrency, 3)  # warm up
        sat = saturation(url, args.concurrency, 15)
        rate = args.load_fraction * sat.rate
        print(
            f"router path saturation: {sat.rate:.1f} req/s at concurrency {args.concurrency}; "
            f"offering {args.load_fraction:g} x = {rate:.1f} req/s; load average {load_average()}"
        )
        results: dict[str, list[Summary]] = {"none": []}
        starts: dict[int, list[float]] = {n: [] for n in nices}
        with LoadProcess(url, rate, sample_request(), timeout_s=60) as load:
            time.sleep(5)
            for r in range(args.rounds):
                t0 = time.time()
                time.sleep(args.window)
                results["none"].append(load.summary(t0, t0 + args.window))
                print(f"round {r + 1} no start:  {results['none'][-1].line()}", flush=True)
                for nice in nices if r % 2 == 0 else list(reversed(nices)):
                    t0 = time.time()
                    client.put([*serving, candidate(cand, nice)], client.get())
                    wait_running(client, [cand["name"]])
                    starts[nice].append(time.time() - t0)
                    time.sleep(max(0.0, t0 + args.window - time.time()))
                    s = load.summary(t0, t0 + args.window)
                    results.setdefault(f"nice {nice}", []).append(s)
                    print(
                        f"round {r + 1} nice {nice:2}: {s.line()}; v2 running after "
                        f"{starts[nice][-1]:.1f}s",
                        flush=True,
                    )
                    client.put(serving, client.get())
                    gone(client, cand["name"])
                    time.sleep(args.settle)
        print(f"load average at the end {load_average()}")
        print("median over rounds: failed, shed, p50, p99 of the windows; v2's start")
        for label, runs in results.items():
            nice = int(label.split()[1]) if label != "none" else None
            start = f", start {statistics.median(starts[nice]):.1f}s" if nice is not None else ""
            print(
                f"  {label:8} failed {statistics.median(len(s.failed) for s in runs):5.0f} "
                f"shed {statistics.median(s.shed for s in runs):5.0f} "
                f"p50 {statistics.median(s.p50_ms for s in runs):6.0f} ms "
                f"p99 {statistics.median(s.p99_ms for s in runs):6.0f} ms{start}"
            )
    finally:
        ray.stop()


if __name__ == "__main__":
    main()

"""A candidate's start beside the version that serves: what it costs that version's requests,
with the candidate's model loaded in idle CPU time or at normal priority
(controller/serving/startup.py, `SERVEOPS_START_POLICY`).

On a real local Ray Serve (2 CPUs, replicas of 0.2 CPU) and MLflow store, v1 serves through its
router (serveops' rendering); an open loop (its own process) offers `--load-fraction` of the
router path's saturation, measured first in the same run. Each round, for each priority in
turn (the order alternates between rounds): the config is written with v2's version
application added (no route, no traffic: what a rollout's loading phase starts), and the load's
answers are summarised over the `--window` seconds after the write (failed, shed, p50, p99);
the time until v2 runs is noted; v2 is removed and the machine left `--settle` seconds. A
window with no start at all opens every round, the baseline. `--policies` picks the starts
compared: `normal`, `idle` (the model's load in idle CPU time, the default) and `worker` (the
whole new worker, through Ray's worker setup hook, until its model is loaded).

    RAY_AUTH_MODE=disabled flock /tmp/serveops-ray.lock .venv/bin/python -u \
        bench/candidate_start.py [--load-fraction 0.8] [--rounds 4] [--window 20] \
        [--policies normal,idle]
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
    wait_running,
)
from controller.cluster.serve_api import ServeClient
from controller.dev.demo import sample_request
from controller.serving.startup import POLICY_ENV, WORKER_HOOK, WORKER_HOOK_ENV
from tests.e2e.load import LoadProcess, Summary

NAME = "startbench"


def candidate(app: dict[str, Any], policy: str) -> dict[str, Any]:
    """v2's version application, started under `policy` (`worker`: with Ray's setup hook)."""
    out = copy.deepcopy(app)
    env = out.setdefault("runtime_env", {}).setdefault("env_vars", {})
    env[POLICY_ENV] = policy
    if policy == "worker":
        env[WORKER_HOOK_ENV] = WORKER_HOOK
    return out


def start_lines(ray_dir: Path, app: str) -> str:
    """What the newest replica of `app` logged about its start (the last such lines)."""
    logs = sorted(
        (ray_dir / "session_latest" / "logs" / "serve").glob(f"replica_{app}_*.log"),
        key=lambda p: p.stat().st_mtime,
    )
    if not logs:
        return "none"
    lines = logs[-1].read_text(errors="replace").splitlines()
    said = [ln.split(" -- ", 1)[-1] for ln in lines if "idle CPU time" in ln or "at normal" in ln]
    return " / ".join(said[-2:]) or "nothing about its start"


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
    parser.add_argument(
        "--policies", default="normal,idle", help="start policies to compare (normal,idle,worker)"
    )
    args = parser.parse_args()
    policies = tuple(args.policies.split(","))

    models = registered_models()
    v1, v2 = models.versions
    ray = start_ray()
    try:
        client = new_client(ray)
        serving = rendered(models, NAME, v1)  # [v1's version app, the router]
        cand = rendered(models, NAME, v2)[0]
        url = serve_apps(client, serving, NAME)
        sat = saturation(url, args.concurrency, 15, warm_up_s=3)
        rate = args.load_fraction * sat.rate
        print(
            f"router path saturation: {sat.rate:.1f} req/s at concurrency {args.concurrency}; "
            f"offering {args.load_fraction:g} x = {rate:.1f} req/s; load average {load_average()}"
        )
        windows: list[tuple[int, str, float]] = []  # (round, what started, when)
        starts: dict[str, list[float]] = {p: [] for p in policies}
        with LoadProcess(url, rate, sample_request(), timeout_s=60) as load:
            time.sleep(5)
            for r in range(args.rounds):
                windows.append((r, "none", time.time()))
                time.sleep(args.window)
                for policy in policies if r % 2 == 0 else policies[::-1]:
                    t0 = time.time()
                    windows.append((r, policy, t0))
                    client.put([*serving, candidate(cand, policy)], client.get())
                    wait_running(client, [cand["name"]])
                    starts[policy].append(time.time() - t0)
                    said = start_lines(ray.temp_dir, cand["name"])
                    print(
                        f"round {r + 1} {policy:6}: v2 running after {starts[policy][-1]:.1f}s; "
                        f"its log: {said}"
                    )
                    time.sleep(max(0.0, t0 + args.window - time.time()))
                    client.put(serving, client.get())
                    gone(client, cand["name"])
                    time.sleep(args.settle)
        # The load's answers come back when it stops: the windows are summarised now.
        results: dict[str, list[Summary]] = {}
        for r, label, t0 in windows:
            s = load.summary(t0, t0 + args.window)
            results.setdefault(label, []).append(s)
            print(f"round {r + 1} {label:8}: {s.line()}")
        print(f"load average at the end {load_average()}")
        print("median over rounds: failed, shed, p50, p99 of the windows; v2's start")
        for label, runs in results.items():
            start = f", start {statistics.median(starts[label]):.1f}s" if label in starts else ""
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

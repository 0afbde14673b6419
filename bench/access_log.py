"""What Serve's access log costs the serving path per request, at 0.8 of its saturation.

Serve writes one access-log line per request in every process a request crosses (the proxy,
the router replica, the model replica), each through its own file handler. At 0.8 of the
router path's saturation a request costs 1.1 to 1.25 times its CPU in the closed loop that
measures saturation (docs/benchmarks.md, zero-downtime item 22): per-request work that a queue
does not share. Is the access log a real part of it?

On a real local Ray Serve (2 CPUs, serveops' rendering of one deployment: a version
application and its router) and MLflow store: the closed loop's saturation, then one open loop
(its own process) at `--load-fraction` of it throughout, while the access log is switched on
and off in turns (`--rounds` of each, alternating which goes first). `--scope deployment`
(the default) switches what serveops renders for `access_log: false`: the router's and the
model's deployments, the proxy's log left on; `--scope all` also switches Serve's global
logging config (the proxy's), in the same config PUT. After `--settle` seconds, each
phase measures `--window` seconds: CPU per answered request of each process group, the serve
log bytes written per request, the p50, and whether the replicas kept their processes.

    RAY_AUTH_MODE=disabled flock /tmp/serveops-ray.lock .venv/bin/python -u bench/access_log.py \
        [--rounds 3] [--window 15] [--scope deployment|all]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import psutil

from bench.backlog import CpuSampler, cpu_between
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
from controller.dev.demo import sample_request
from tests.e2e.load import LoadProcess

NAME = "acclog"
SERVING = ("router", "proxy")  # with the version app's group: the three serving processes


def put(address: str, port: int, apps: list[dict[str, Any]], proxy_log: bool) -> None:
    """The apps as given, and Serve's global logging (the proxy's) with its access log on or
    off."""
    body = {
        "http_options": {"host": "127.0.0.1", "port": port},
        "logging_config": {"enable_access_log": proxy_log},
        "applications": apps,
    }
    httpx.put(f"{address}/api/serve/applications/", json=body, timeout=60).raise_for_status()


def serve_log_bytes(ray_dir: Path) -> int:
    return sum(p.stat().st_size for p in (ray_dir / "session_latest/logs/serve").glob("*.log"))


def replica_pids() -> set[int]:
    return {
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if "ServeReplica:" in " ".join(p.info["cmdline"] or [])
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load-fraction", type=float, default=0.8)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=float, default=8.0)
    parser.add_argument("--window", type=float, default=15.0)
    parser.add_argument("--scope", choices=("deployment", "all"), default="deployment")
    args = parser.parse_args()

    models = registered_models()
    ray = start_ray()
    cpu = CpuSampler()
    try:
        client = new_client(ray)
        apps = rendered(models, NAME, models.versions[0])  # [version app, router]
        quiet = rendered(models, NAME, models.versions[0], "  access_log: false\n")
        app = apps[0]["name"]
        put(ray.address, client.http_port, apps, proxy_log=True)
        wait_running(client, [a["name"] for a in apps])
        url = f"http://127.0.0.1:{client.http_port}/{NAME}"
        wait_answering(url)
        sat = saturation(url, args.concurrency, 15, warm_up_s=3)
        rate = args.load_fraction * sat.rate
        print(
            f"router path saturation: {sat.rate:.1f} req/s at concurrency {args.concurrency}; "
            f"offering {rate:.1f} req/s; switching the access log of the "
            f"{'deployments and the proxy' if args.scope == 'all' else 'deployments'}; "
            f"load average {load_average()}"
        )
        cpu.start()
        phases: list[tuple[bool, float, float, int, bool]] = []  # on, from, to, bytes, kept
        pids = replica_pids()
        with LoadProcess(url, rate, sample_request(), timeout_s=60) as load:
            for r in range(args.rounds):
                for on in (True, False) if r % 2 == 0 else (False, True):
                    proxy_log = on or args.scope == "deployment"
                    put(ray.address, client.http_port, apps if on else quiet, proxy_log)
                    time.sleep(args.settle)
                    before, t0 = serve_log_bytes(ray.temp_dir), time.time()
                    time.sleep(args.window)
                    written = serve_log_bytes(ray.temp_dir) - before
                    phases.append((on, t0, time.time(), written, replica_pids() == pids))
        cpu.stop()
        costs: dict[bool, list[float]] = {True: [], False: []}
        for on, lo, hi, written, kept in phases:
            s = load.summary(lo, hi)
            use = cpu_between(cpu.samples, lo, hi, load.answers)
            if use is None:
                continue
            print(
                f"access log {'on ' if on else 'off'}: {s.rate:.1f} req/s OK, p50 "
                f"{s.p50_ms:.0f} ms, {written / max(1, s.requests):.0f} log bytes a request, "
                f"replicas kept: {kept} | {use.line(top=8)}"
            )
            costs[on].append(sum(use.ms_per_request(g) for g in (app, *SERVING)))
        logged, unlogged = statistics.median(costs[True]), statistics.median(costs[False])
        print(
            f"CPU per request of the three serving processes, median of {args.rounds}: "
            f"access log on {logged:.2f} ms, off {unlogged:.2f} ms, off / on "
            f"{unlogged / logged:.2f}"
        )
        print(f"load average at the end {load_average()}")
    finally:
        cpu.stop()
        ray.stop()


if __name__ == "__main__":
    main()

"""CPU per request of each process on the serving path: model replica, router, Serve's proxy.

On a real local Ray Serve (2 CPUs) and MLflow store, one deployment rendered as serveops renders
it; its version application also gets a route of its own (`/direct`). An open loop
(tests/e2e/load.py, as in the other serving benches) sends `--rate` requests per second for
`--seconds` through one path (`router` or `direct`), and the CPU time of each process (psutil:
user + system) over that window is divided by the requests sent.
At a low rate the figures include each replica's idle work (health checks, metrics, the
router's status poll): run `--rate 1` for that baseline.

    .venv/bin/python bench/serving_cpu.py [--path router|direct] [--rate 10] [--seconds 20]
        [--ray-env RAY_SERVE_ENABLE_HA_PROXY=1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serving_setup import (
    add_ray_env,
    env_pairs,
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

NAME = "cpu"


def serving_processes(dashboard: str) -> dict[str, psutil.Process]:
    """The replicas of our applications (from Serve's API), the proxy actor and haproxy."""
    payload = httpx.get(f"{dashboard}/api/serve/applications/", timeout=30).json()
    found: dict[str, psutil.Process] = {}
    for app_name, app in payload["applications"].items():
        for dep_name, dep in app["deployments"].items():
            for replica in dep["replicas"]:
                found[f"{app_name} {dep_name}"] = psutil.Process(replica["pid"])
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "ProxyActor" in cmd:
            found["Serve proxy actor"] = p
        elif Path((p.info["cmdline"] or [""])[0]).name == "haproxy":
            found["haproxy"] = p
    return found


def cpu_seconds(procs: dict[str, psutil.Process]) -> dict[str, float]:
    out = {}
    for name, p in procs.items():
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        out[name] = t.user + t.system
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--path", choices=["router", "direct"], default="router")
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    add_ray_env(ap)
    args = ap.parse_args()
    ray_env = env_pairs(args.ray_env)

    models = registered_models()
    ray = start_ray(ray_env)
    try:
        client = new_client(ray)
        version_app, router = rendered(models, NAME, models.versions[0])
        version_app["route_prefix"] = "/direct"
        client.put([version_app, router], client.get())
        wait_running(client, [version_app["name"], router["name"]])
        base = f"http://127.0.0.1:{client.http_port}"
        for route in (f"/{NAME}", "/direct"):
            wait_answering(base + route)
        url = base + (f"/{NAME}" if args.path == "router" else "/direct")
        procs = serving_processes(ray.address)
        with OpenLoop(url, args.rate, sample_request()):
            time.sleep(3.0)  # warm up
        before, started = cpu_seconds(procs), time.monotonic()
        with OpenLoop(url, args.rate, sample_request()) as load:
            time.sleep(args.seconds)
        elapsed, after = time.monotonic() - started, cpu_seconds(procs)
        sent = load.summary()
        n = sent.requests
        print(
            f"path {args.path}, {args.rate:g} req/s for {elapsed:.1f}s: {n} requests, "
            f"{len(sent.failed)} failed, p50 {sent.p50_ms:.1f} ms, p99 {sent.p99_ms:.1f} ms; "
            f"load average {load_average()}"
        )
        print(f"ray start environment: {ray_env or 'defaults'}")
        total = 0.0
        for name in sorted(after):
            used = after[name] - before.get(name, after[name])
            total += used
            print(
                f"  {name:32s} {100 * used / elapsed:5.1f}% of a core, "
                f"{1000 * used / n:6.2f} ms CPU per request"
            )
        print(
            f"  {'all of them':32s} {100 * total / elapsed:5.1f}% of a core, "
            f"{1000 * total / n:6.2f} ms CPU per request"
        )
    finally:
        ray.stop()


if __name__ == "__main__":
    main()

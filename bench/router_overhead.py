"""Router overhead: requests through the router versus straight to the version application.

On a real local Ray Serve (2 CPUs) with a real MLflow store, one deployment is rendered as
serveops renders it (a version application and a router at `/bench`), and the version
application is also given a route of its own (`/direct`): both paths end in the *same* model
replica. In the same run, alternating which path goes first in each round:

- throughput: a closed loop of `--concurrency` clients for `--seconds` on each path (answers
  per second); target: router / direct >= 0.85;
- latency: an open loop at `--rate` requests per second (well under saturation) on each path;
  target: p50 through the router - p50 direct < 2 ms.

`--router-env K=V` adds a third path, `router-env`: a second router in front of the same replica
whose actor runs with that environment on top of the rendered one (e.g. Serve's threading
options back to their defaults), measured the same way.

    .venv/bin/python bench/router_overhead.py [--rounds 3] [--seconds 15] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

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
from tests.e2e.load import OpenLoop, closed_loop, summarize

NAME = "bench"


def throughput(url: str, concurrency: int, seconds: float) -> tuple[float, float, int]:
    """(answers 200 per second, p50 ms, failed)."""
    answers = closed_loop(url, sample_request(), concurrency, seconds)
    ok = sorted(a.latency_s for a in answers if a.status == 200)
    p50 = 1000 * ok[len(ok) // 2] if ok else 0.0
    return len(ok) / seconds, p50, len(answers) - len(ok)


def latency(url: str, rate: float, seconds: float) -> tuple[float, int]:
    """(p50 ms, failed) of an open loop at `rate`."""
    with OpenLoop(url, rate, sample_request()) as load:
        time.sleep(seconds)
    s = summarize(load.answers, load.started_at, load.stopped_at)
    return s.p50_ms, len(s.failed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=float, default=10.0, help="open loop for latency, req/s")
    add_ray_env(parser)
    parser.add_argument(
        "--router-env",
        action="append",
        default=[],
        help="KEY=VALUE: also measure a second router with this environment (`router-env`)",
    )
    args = parser.parse_args()

    models = registered_models()
    ray = start_ray(dict(kv.split("=", 1) for kv in args.ray_env))
    try:
        client = new_client(ray)
        version_app, router = rendered(models, NAME, models.versions[0])
        version_app["route_prefix"] = "/direct"
        apps = [version_app, router]
        base = f"http://127.0.0.1:{client.http_port}"
        paths = {"router": f"{base}/{NAME}", "direct": f"{base}/direct"}
        if args.router_env:
            other = copy.deepcopy(router)
            other.update(name="router-env", route_prefix="/router-env")
            env = other["deployments"][0]["ray_actor_options"].setdefault("runtime_env", {})
            env["env_vars"] = {
                **env.get("env_vars", {}),
                **env_pairs(args.router_env),
            }
            apps.append(other)
            paths["router-env"] = f"{base}/router-env"
        client.put(apps, client.get())
        wait_running(client, [a["name"] for a in apps])
        for url in paths.values():
            wait_answering(url)
            closed_loop(url, sample_request(), args.concurrency, 3)  # warm both paths up
        print(f"load average at start: {load_average()}")

        tput: dict[str, list[float]] = {p: [] for p in paths}
        p50: dict[str, list[float]] = {p: [] for p in paths}
        failed = 0
        for r in range(args.rounds):
            order = list(paths)[r % len(paths) :] + list(paths)[: r % len(paths)]
            for path in order:
                rate, _, bad = throughput(paths[path], args.concurrency, args.seconds)
                tput[path].append(rate)
                failed += bad
            for path in order:
                median, bad = latency(paths[path], args.rate, args.seconds)
                p50[path].append(median)
                failed += bad
            print(
                f"round {r + 1} (order {', '.join(order)}): throughput "
                + ", ".join(f"{p} {tput[p][-1]:.1f}" for p in paths)
                + f" req/s | p50 at {args.rate:g} req/s: "
                + ", ".join(f"{p} {p50[p][-1]:.1f}" for p in paths)
                + f" ms | load {load_average()}"
            )
        t_direct, l_direct = statistics.median(tput["direct"]), statistics.median(p50["direct"])
        print(
            f"direct: {t_direct:.1f} req/s at concurrency {args.concurrency}, p50 {l_direct:.1f} ms"
        )
        for path in [p for p in paths if p != "direct"]:
            t, lat = statistics.median(tput[path]), statistics.median(p50[path])
            print(
                f"{path}: throughput {t:.1f} req/s, ratio to direct {t / t_direct:.2f} (target "
                f">= 0.85); p50 {lat:.1f} ms, added {lat - l_direct:.1f} ms (target < 2 ms)"
            )
        print(f"failed requests: {failed}; load average at end: {load_average()}")
        client.close()
    finally:
        ray.stop()


if __name__ == "__main__":
    main()

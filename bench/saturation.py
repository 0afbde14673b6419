"""Saturation: the most the direct path and the router path answer, in the same run.

On a real local Ray Serve (2 CPUs) with a real MLflow store, one deployment is rendered as
serveops renders it (a version application, a router at `/sat`), and the version application
also gets a route of its own (`/direct`): both paths end in the *same* model replica. Per round,
alternating which path goes first:

- saturation throughput: a closed loop of `--concurrency` clients for `--seconds` (answers 200
  per second; a closed loop cannot offer more than the server answers, so this is its ceiling);
- latency: an open loop at `--rate` requests per second (well under saturation), p50.

Prints both paths' saturation, their ratio (router / direct), the router's added p50, and
whether the router shed anything (it must not: a closed loop of 8 never exceeds its bound).
`bench/zero_downtime.py --load-fraction F` runs the rollouts at F times the router path's
saturation, measured the same way at its start.

    flock /tmp/serveops-ray.lock .venv/bin/python bench/saturation.py [--rounds 2] \
        [--seconds 10] [--concurrency 8] [--rate 10] [--ray-env RAY_SERVE_ENABLE_HA_PROXY=1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.router_overhead import latency  # (p50 ms, failed) of an open loop
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
from tests.e2e.load import closed_loop

NAME = "sat"


@dataclass(frozen=True)
class Saturation:
    rate: float  # answers 200 per second
    p50_ms: float
    failed: int
    shed: int


def saturation(url: str, concurrency: int, seconds: float, warm_up_s: float = 0.0) -> Saturation:
    """What a closed loop of `concurrency` clients gets answered in `seconds`, after
    `warm_up_s` seconds of the same loop whose answers are not counted."""
    if warm_up_s > 0:
        closed_loop(url, sample_request(), concurrency, warm_up_s)
    answers = closed_loop(url, sample_request(), concurrency, seconds)
    ok = sorted(a.latency_s for a in answers if a.status == 200)
    p50 = 1000 * ok[len(ok) // 2] if ok else 0.0
    shed = sum(1 for a in answers if a.status == 503)
    return Saturation(len(ok) / seconds, p50, len(answers) - len(ok), shed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=float, default=10.0, help="open loop for p50, req/s")
    add_ray_env(parser)
    args = parser.parse_args()

    models = registered_models()
    ray = start_ray(env_pairs(args.ray_env))
    try:
        client = new_client(ray)
        version_app, router = rendered(models, NAME, models.versions[0])
        version_app["route_prefix"] = "/direct"
        client.put([version_app, router], client.get())
        wait_running(client, [version_app["name"], router["name"]])
        base = f"http://127.0.0.1:{client.http_port}"
        paths = {"router": f"{base}/{NAME}", "direct": f"{base}/direct"}
        for url in paths.values():
            wait_answering(url)
            closed_loop(url, sample_request(), args.concurrency, 3)  # warm up
        print(f"load average at start: {load_average()}; cluster CPUs: {client.get().cpus}")
        sat: dict[str, list[Saturation]] = {p: [] for p in paths}
        p50: dict[str, list[float]] = {p: [] for p in paths}
        failed = 0
        for r in range(args.rounds):
            order = list(paths)[r % 2 :] + list(paths)[: r % 2]
            for path in order:
                sat[path].append(saturation(paths[path], args.concurrency, args.seconds))
                failed += sat[path][-1].failed
            for path in order:
                median, bad = latency(paths[path], args.rate, args.seconds)
                p50[path].append(median)
                failed += bad
            print(
                f"round {r + 1} ({', '.join(order)} first): saturation "
                + ", ".join(f"{p} {sat[p][-1].rate:.1f}" for p in paths)
                + f" req/s | p50 at {args.rate:g} req/s "
                + ", ".join(f"{p} {p50[p][-1]:.1f}" for p in paths)
                + f" ms | load {load_average()}"
            )
        router_rate = statistics.median(s.rate for s in sat["router"])
        direct_rate = statistics.median(s.rate for s in sat["direct"])
        router_p50, direct_p50 = statistics.median(p50["router"]), statistics.median(p50["direct"])
        print(
            f"saturation at concurrency {args.concurrency}: direct {direct_rate:.1f} req/s, "
            f"router {router_rate:.1f} req/s, ratio router/direct {router_rate / direct_rate:.2f}"
        )
        print(
            f"p50 at {args.rate:g} req/s: direct {direct_p50:.1f} ms, router {router_p50:.1f} ms, "
            f"added by the router {router_p50 - direct_p50:.1f} ms"
        )
        shed = sum(s.shed for s in sat["router"])
        print(f"failed requests: {failed} (shed by the router: {shed}); load {load_average()}")
        client.close()
    finally:
        ray.stop()


if __name__ == "__main__":
    main()

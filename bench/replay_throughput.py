"""Replay throughput per core: open-loop replay versus plain Locust closed loop, same endpoint.

Both run in this process, one after the other, in alternating rounds, against the same fast
endpoint (simulator.fake_endpoint in its own process, no delay):

- closed loop: a plain Locust FastHttpUser (`wait_time = 0`), --users of them, for --seconds;
- open loop: simulator.replay on a schedule offered at the rate the closed loop just reached
  (evenly spaced, same payloads), so both push the same load.

Throughput per core = completed requests / CPU seconds of this (the generator) process while it
generates load, so the endpoint's own CPU does not count. The target is open / closed >= 0.7.

Run: .venv/bin/python bench/replay_throughput.py [--seconds 10] [--users 16] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

from simulator.fake_endpoint import FakeEndpoint
from simulator.replay import replay
from simulator.results import ReplayOptions
from simulator.traffic import PayloadSource, TrafficRecord


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def closed_loop(url: str, body: bytes, users: int, seconds: float) -> tuple[float, float]:
    import gevent
    from locust import FastHttpUser, constant, task
    from locust.env import Environment

    class Plain(FastHttpUser):
        host = url
        wait_time = constant(0)

        @task
        def score(self) -> None:
            self.client.post("/m", data=body, headers={"content-type": "application/json"})

    env = Environment(user_classes=[Plain], host=url)
    runner = env.create_local_runner()
    runner.start(users, spawn_rate=users)
    gevent.sleep(1.0)  # ramp-up and connections, not measured
    n0, cpu0, t0 = env.stats.total.num_requests, _cpu(), time.monotonic()
    gevent.sleep(seconds)
    n1, cpu1, t1 = env.stats.total.num_requests, _cpu(), time.monotonic()
    runner.quit()
    return (n1 - n0) / (t1 - t0), (n1 - n0) / (cpu1 - cpu0)


def open_loop(url: str, body: dict[str, object], rate: float, seconds: float) -> dict[str, float]:
    n = int(rate * seconds)
    records = [TrafficRecord(id=f"r{i}", ts=i / rate, route="/m", body=body) for i in range(n)]
    t0 = time.monotonic()
    result = replay(records, {"fake": url}, ReplayOptions(keep_bodies=False, max_lag_p99_ms=5))
    t1 = time.monotonic()
    done = sum(1 for o in result.outcomes if o.status == 200)
    return {
        "offered_rps": rate,
        "completed": done,
        "rps": done / result.duration_s,
        # CPU from t0 to the last answer: the load generation, not building the schedule
        # (payload encoding) or the result, which the closed loop does not do either.
        "per_cpu_s": done / result.generator_cpu_s,
        "lag_p99_ms": result.lag_p99_ms,
        "dropped": sum(result.dropped.values()),
        "wall_s": t1 - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--users", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    body = PayloadSource(seed=0).body(2)  # two rows: the trace's commonest small size
    raw = json.dumps(body).encode()
    closed, opened = [], []
    with FakeEndpoint(version="1") as ep:
        for r in range(args.rounds):
            rps, per_cpu = closed_loop(ep.url, raw, args.users, args.seconds)
            closed.append(per_cpu)
            print(
                f"round {r + 1} closed loop ({args.users} FastHttpUsers): {rps:.0f} req/s, "
                f"{per_cpu:.0f} req per generator CPU-second"
            )
            o = open_loop(ep.url, body, rps, args.seconds)
            opened.append(o["per_cpu_s"])
            print(
                f"round {r + 1} open loop (replay at {o['offered_rps']:.0f} req/s offered): "
                f"{o['rps']:.0f} req/s, {o['per_cpu_s']:.0f} req per generator CPU-second, "
                f"lag p99 {o['lag_p99_ms']:.2f} ms, dropped {o['dropped']:.0f}"
            )
    ratio = statistics.median(opened) / statistics.median(closed)
    print(
        f"per-core throughput: open {statistics.median(opened):.0f} / closed "
        f"{statistics.median(closed):.0f} req per CPU-second = ratio {ratio:.2f} "
        f"-> {'PASS' if ratio >= 0.7 else 'FAIL'} (>= 0.7)"
    )


if __name__ == "__main__":
    main()

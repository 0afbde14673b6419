"""Replay throughput with remote-style workers: 1, 2 and 4 worker processes over TCP.

The master (`python -m simulator.replay_process --master`, what `serveops replay --master`
runs) and its workers (`--remote-worker`, what `serveops replay-worker` runs) are separate
processes talking Locust's TCP protocol on loopback, as separate hosts would. The schedule is
the first --requests requests of the shared conv trace, sped up so they are offered at --rate
requests per second: more than one worker process keeps up with on this machine, so the
achieved rate shows what more workers add. The endpoint is simulator.fake_endpoint (no delay)
in its own process.

Per run: requests scheduled and answered, each request id exactly once (duplicates and
missing counted), generator lag p50/p99, achieved rate (answered / (last done - t0)), and the
ratio to one worker measured in the same run. On a 2-core machine the endpoint, the master
and the workers share the cores: the ratio there is a floor, not what separate hosts give.

Run: .venv/bin/python bench/replay_workers.py [--requests 20000] [--rate 6000]
     [--workers 1 2 4]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from simulator.fake_endpoint import FakeEndpoint
from simulator.results import ReplayOptions, ReplayResult, quantile
from simulator.traffic import import_csv_trace, write_jsonl

TRACE = Path(__file__).resolve().parents[2] / "shared" / "traces"
TRACE_FILE = "azure-llm-inference-conv-2023.csv"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(traffic: Path, url: str, workers: int, options: ReplayOptions) -> ReplayResult:
    port = _port()
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        out = Path(tmp) / "master.json"
        mod = [sys.executable, "-m", "simulator.replay_process", "--traffic", str(traffic)]
        master = subprocess.Popen(
            [*mod, "--out", str(out), "--targets", json.dumps({"target": url}),
             "--options", options.model_dump_json(), "--master", "--master-bind", "127.0.0.1",
             "--master-port", str(port), "--expect-workers", str(workers)],
        )  # fmt: skip
        procs = [
            subprocess.Popen(
                [
                    *mod,
                    "--out",
                    str(Path(tmp) / f"w{k}.json"),
                    "--remote-worker",
                    "--master-host",
                    "127.0.0.1",
                    "--master-port",
                    str(port),
                ],
            )
            for k in range(workers)
        ]
        try:
            if master.wait(timeout=600) != 0:
                raise RuntimeError("the master failed")
            for p in procs:
                p.wait(timeout=60)
        finally:
            for p in [master, *procs]:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        return ReplayResult.model_validate_json(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rate", type=float, default=6000.0, help="Offered requests per second.")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = ap.parse_args()
    _, records = import_csv_trace(TRACE / TRACE_FILE, limit=args.requests)
    n = len(records)  # the importer skips rows without a usable size
    span = records[-1].ts - records[0].ts
    speed = args.rate * span / n if span > 0 else 1.0  # n / (span / speed) = rate
    options = ReplayOptions(speed=speed, max_lag_p99_ms=1000, keep_bodies=False)
    print(
        f"{n} requests of {TRACE_FILE} at {speed:.1f}x (offered {args.rate:.0f}/s); "
        f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs"
    )
    print(f"{'workers':>7} {'sent':>7} {'dup':>4} {'missing':>7} {'lag p50':>8} {'lag p99':>8} "
          f"{'rate /s':>8} {'vs 1':>5}")  # fmt: skip
    base_rate = None
    with tempfile.TemporaryDirectory() as tmp, FakeEndpoint(version="1") as ep:
        traffic = Path(tmp) / "t.jsonl"
        write_jsonl(traffic, records)
        for w in args.workers:
            started = time.perf_counter()
            res = run(traffic, ep.url, w, options)
            took = time.perf_counter() - started
            ids = Counter(o.id for o in res.outcomes if not o.dropped)
            answered = [o for o in res.outcomes if o.done is not None and o.status]
            dup = sum(c - 1 for c in ids.values() if c > 1)
            missing = n - len(ids)
            lags = [lag for o in res.outcomes if (lag := o.lag_ms) is not None]
            end = max((o.done for o in answered if o.done is not None), default=0.0)
            rate = len(answered) / end if end > 0 else 0.0
            base_rate = base_rate or rate
            print(
                f"{w:>7} {len(ids):>7} {dup:>4} {missing:>7} {quantile(lags, 0.5):>7.1f}ms "
                f"{quantile(lags, 0.99):>7.1f}ms {rate:>8.0f} {rate / base_rate:>5.2f}"
                f"   ({took:.0f}s, load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
            for p in res.problems:
                print(f"        {p}")


if __name__ == "__main__":
    main()

"""Replay timing fidelity: generator lag replaying the Azure conv trace against a fast endpoint.

The endpoint is simulator.fake_endpoint in its own process (not Ray), answering at once. The
replay is the real one (Locust LocalRunner + FastHttpUser, open loop, absolute schedule). Lag is
sent - intended per request; the target is p99 under 5 ms at 1x and at 10x.

Run: .venv/bin/python bench/replay_fidelity.py [--window-1x 0..300] [--window-10x 0..]
     [--nice -10]

Trace: ../shared/traces/azure-llm-inference-conv-2023.csv, Azure Public Dataset, CC BY 4.0;
Patel et al., "Splitwise: Efficient generative LLM inference using phase splitting", ISCA 2024.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from simulator.fake_endpoint import FakeEndpoint
from simulator.replay import replay
from simulator.results import ReplayOptions
from simulator.traffic import import_csv_trace, parse_window, slice_records

TRACE = (
    Path(__file__).resolve().parents[2] / "shared" / "traces" / "azure-llm-inference-conv-2023.csv"
)


CONTROL = """
import sys, time
interval, until = float(sys.argv[1]), time.monotonic() + float(sys.argv[2])
t0, i, late = time.monotonic(), 0, []
while time.monotonic() < until:
    i += 1
    due = t0 + i * interval
    while (w := due - time.monotonic()) > 0:
        time.sleep(w)
    late.append((time.monotonic() - due) * 1000)
late.sort()
print(f"{late[len(late) // 2]:.3f} {late[int(len(late) * 0.99)]:.3f} {late[-1]:.3f} {len(late)}")
"""


def control(seconds: float) -> subprocess.Popen[str]:
    """A plain sleep loop (100 Hz) in its own process: how late does this machine wake anyone?"""
    return subprocess.Popen(
        [sys.executable, "-c", CONTROL, "0.01", str(seconds)], stdout=subprocess.PIPE, text=True
    )


def run(label: str, window: str, speed: float, url: str, nice: int | None) -> None:
    _, records = import_csv_trace(TRACE)
    start, end = parse_window(window, records[0].ts)
    records = slice_records(records, start, end)
    span = records[-1].ts - records[0].ts
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.monotonic()
    load0 = os.getloadavg()[0]
    ctl = control(span / speed)
    result = replay(records, {"fake": url}, ReplayOptions(speed=speed, nice=nice))
    ctl_out, _ = ctl.communicate()
    wall = time.monotonic() - wall0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    lags = np.array([o.lag_ms for o in result.outcomes if o.lag_ms is not None])
    lat = np.array([o.latency_ms for o in result.outcomes if o.latency_ms is not None])
    print(
        f"{label}: window {window} ({span:.0f}s of trace, {result.scheduled} requests) at "
        f"{speed:g}x, ran {result.duration_s:.1f}s (wall {wall:.1f}s, generator CPU {cpu:.1f}s, "
        f"load avg {load0:.2f} -> {os.getloadavg()[0]:.2f})"
    )
    print(
        f"  lag ms: p50 {np.percentile(lags, 50):.3f}  p90 {np.percentile(lags, 90):.3f}  "
        f"p99 {result.lag_p99_ms:.3f}  p99.9 {np.percentile(lags, 99.9):.3f}  "
        f"max {result.lag_max_ms:.2f}   -> {'PASS' if result.lag_p99_ms < 5 else 'FAIL'} (< 5 ms)"
    )
    print(
        f"  latency from intended ms: p50 {np.percentile(lat, 50):.2f} p99 "
        f"{np.percentile(lat, 99):.2f}; dropped {sum(result.dropped.values())}, "
        f"timed out {sum(result.timed_out.values())}, valid {result.valid} {result.problems}"
    )
    c50, c99, cmax, cn = ctl_out.split()
    print(
        f"  control (plain time.sleep loop at 100 Hz in another process, {cn} wake-ups): "
        f"late p50 {c50} ms, p99 {c99} ms, max {cmax} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window-1x", default="0..300")
    ap.add_argument("--window-10x", default="0..")
    ap.add_argument("--nice", type=int, default=None)
    args = ap.parse_args()
    with FakeEndpoint(version="1") as ep:
        run("1x", args.window_1x, 1.0, ep.url, args.nice)
        run("10x", args.window_10x, 10.0, ep.url, args.nice)


if __name__ == "__main__":
    main()

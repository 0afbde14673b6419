"""Real paired replays that stop when the judge decides, against the full replay, same run.

Two fake endpoints (simulator.fake_endpoint, lognormal delay around --delay-ms) as baseline
and candidate, the candidate slowed by each factor in --slowdowns; --requests requests evenly
spaced at --rate per second, replayed paired through Locust (simulator.replay_process) once
with `stop_when_decided` (what `serveops simulate --sequential` does) and once to the end.
Per case: the decision, the pairs judged, requests sent, wall time, generator lag p99, and
the fixed-horizon verdict of the full replay.

Run: .venv/bin/python bench/early_stop_replay.py [--requests 3000] [--rate 250]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from simulator.checks import Thresholds
from simulator.fake_endpoint import FakeEndpoint
from simulator.replay_process import run_replay_process
from simulator.report import build_report
from simulator.results import ReplayOptions, StopWhenDecided
from simulator.traffic import TrafficRecord, write_jsonl


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rate", type=float, default=250.0)
    ap.add_argument("--delay-ms", type=float, default=5.0)
    ap.add_argument("--slowdowns", type=float, nargs="+", default=[1.0, 1.02, 1.3, 2.0])
    args = ap.parse_args()
    t = Thresholds(sequential=True, min_agreement=None, max_output_psi=None)
    print(
        f"{args.requests} paired requests at {args.rate:g}/s (full replay "
        f"{args.requests / args.rate:.0f}s), endpoints ~{args.delay_ms:g} ms lognormal(0.3)"
    )
    print(f"{'candidate':>10} {'stopped: decision':>18} {'pairs':>6} {'sent':>6} {'wall':>6} "
          f"{'lag p99':>8}   {'full: fixed verdict':>20} {'wall':>6} {'lag p99':>8}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.jsonl"
        records = [
            TrafficRecord(id=f"r{i}", ts=1.7e9 + i / args.rate, route="/m",
                          body={"inputs": [[1.0]]})
            for i in range(args.requests)
        ]  # fmt: skip
        write_jsonl(path, records)
        for k, factor in enumerate(args.slowdowns):
            with (
                FakeEndpoint(version="1", delay_ms=args.delay_ms, sigma=0.3, seed=2 * k) as a,
                FakeEndpoint(version="2", delay_ms=args.delay_ms, sigma=0.3, seed=2 * k + 1,
                             slowdown=factor) as b,
            ):  # fmt: skip
                targets = {"baseline": a.url, "candidate": b.url}
                row = []
                for stop in (StopWhenDecided(thresholds=t.model_dump()), None):
                    started = time.perf_counter()
                    res = run_replay_process(
                        path, targets, ReplayOptions(stop_when_decided=stop), timeout_s=600
                    )
                    wall = time.perf_counter() - started
                    report, _ = build_report(res, records, t if stop else Thresholds())
                    sent = len({o.id for o in res.outcomes})
                    seq = next(c for c in report.checks if c.name == "sequential").figures
                    row.append((report, seq, sent, wall, res.lag_p99_ms))
            (_, s1, sent1, w1, l1), (r2, _, _, w2, l2) = row
            print(
                f"{factor - 1:>+10.0%} {s1['decision']:>18} {s1['n_used']:>6} {sent1:>6} "
                f"{w1:>5.1f}s {l1:>6.2f}ms   {r2.verdict:>20} {w2:>5.1f}s {l2:>6.2f}ms",
                flush=True,
            )


if __name__ == "__main__":
    main()

"""`serveops simulate` beside its own local Ray, with and without cores kept for the generator.

The demo's case (issue 18): breast-cancer v1 against v2 from a real MLflow store, a local Ray
that simulate starts itself (--num-cpus 2), --requests of the conv trace at --speed, with the
noise floor; once with --reserve-cpus 0 (every core shared) and once with --reserve-cpus 1 (Ray
pinned to the other cores), alternating for --rounds. Prints, per run, the generator lag
p50/p99/max, replay_validity and the latency check's status, from report.json.

Ray-using: run it under the machine's Ray lock.

Run: flock /tmp/serveops-ray.lock .venv/bin/python bench/simulate_reserve.py
     [--requests 600] [--speed 4] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from controller.dev.demo import train_and_register
from simulator.traffic import import_csv_trace, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT.parent / "shared" / "traces" / "azure-llm-inference-conv-2023.csv"
SERVEOPS = str(Path(sys.executable).with_name("serveops"))


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@example.com", *args],
        check=True, capture_output=True,
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--speed", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-reserve-") as tmp_s:
        tmp = Path(tmp_s)
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        v1, v2 = train_and_register(uri, tmp / "artifacts")
        repo = tmp / "repo"
        spec = repo / "deployments" / "staging" / "breast-cancer.yaml"
        spec.parent.mkdir(parents=True)
        shutil.copy(ROOT / "deployments" / "staging" / "breast-cancer.yaml", spec)
        spec.write_text(
            spec.read_text().replace("models:/breast-cancer/1", f"models:/breast-cancer/{v1}")
        )
        subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
        _git(repo, "add", ".")
        _git(repo, "commit", "-qm", "v1")
        spec.write_text(spec.read_text().replace(f"breast-cancer/{v1}", f"breast-cancer/{v2}"))
        _git(repo, "commit", "-qam", "v2")
        header, records = import_csv_trace(TRACE, limit=args.requests)
        traffic = tmp / "traffic.jsonl"
        write_jsonl(traffic, records, header)
        print(f"{len(records)} requests at {args.speed:g}x, noise floor, --num-cpus 2, "
              f"{os.cpu_count()} CPUs")  # fmt: skip
        print(f"{'reserve':>7} {'lag p50':>8} {'lag p99':>8} {'lag max':>8} {'validity':>13} "
              f"{'latency':>13} {'verdict':>13} {'wall':>6} {'load':>5}")  # fmt: skip
        for _ in range(args.rounds):
            for reserve in (0, 1):
                out = tmp / f"out-{reserve}"
                started = time.perf_counter()
                proc = subprocess.run(
                    [SERVEOPS, "simulate", "--repo", str(repo), "--base", "main~1", "--head",
                     "main", "--traffic", str(traffic), "--env", "staging", "--speed",
                     str(args.speed), "--out", str(out), "--num-cpus", "2", "--noise-floor",
                     "--reserve-cpus", str(reserve)],
                    env={**os.environ, "MLFLOW_TRACKING_URI": uri}, capture_output=True,
                    text=True, timeout=900, check=False,
                )  # fmt: skip
                wall = time.perf_counter() - started
                if not (out / "report.json").exists():
                    print(f"{reserve:>7} failed: {proc.stderr[-1500:]}")
                    continue
                rep = json.loads((out / "report.json").read_text())
                checks = {c["name"]: c for c in rep["checks"]}
                r = rep["replay"]
                print(
                    f"{reserve:>7} {r['lag_p50_ms']:>6.2f}ms {r['lag_p99_ms']:>6.2f}ms "
                    f"{r['lag_max_ms']:>6.1f}ms {checks['replay_validity']['status']:>13} "
                    f"{checks['latency']['status']:>13} {rep['verdict']:>13} {wall:>5.0f}s "
                    f"{os.getloadavg()[0]:>5.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()

"""Plan 1,000 batch deployments: read and validate the files, then plan (no cluster).

    .venv/bin/python bench/batch_plan_1000.py

Times `load_batches` (YAML with line marks, limits, schema, cross-checks) plus `plan_batches`
(cron schedules in five time zones, runs from a store of 1,000 previous runs), median of 5,
against a baseline measured in the same run: PyYAML's C loader reading the same texts.
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.batch.plan import plan_batches, run_key
from controller.gitops.state.batch import BatchRun
from controller.spec.batchfile import load_batches

N = 1000
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo", "Australia/Sydney"]
NOW = dt.datetime(2026, 12, 2, 2, 1, tzinfo=dt.UTC)


def files() -> dict[str, str]:
    out = {}
    for i in range(N):
        out[f"deployments/prod/b{i}.yaml"] = f"""\
apiVersion: serveops.dev/v1alpha1
kind: BatchInference
metadata: {{name: b{i}, environment: prod, owner: team-{i % 20}, labels: {{tier: t{i % 3}}}}}
spec:
  model: models:/m{i % 50}/{1 + i % 7}
  input: {{uri: s3://lake/in/{i}/, format: parquet}}
  output: {{uri: s3://lake/out/{i}/, id_column: id}}
  schedule: {{cron: "{i % 60} {i % 24} * * *", timezone: {ZONES[i % 5]}}}
  resources: {{num_cpus: 0.5, batch_size: 2048, concurrency: 2}}
"""
    return out


def main() -> None:
    texts = files()
    runs = {
        f"b{i}": BatchRun(
            "prod",
            f"b{i}",
            run_key(NOW - dt.timedelta(days=1)),
            "schedule",
            NOW - dt.timedelta(days=1),
            "c",
            "models:/m/1",
            None,
            0,
            "succeeded",
            None,
            "",
            1,
            None,
            None,
            NOW,
            NOW,
            NOW,
            "{}",
        )
        for i in range(N)
    }
    since = {name: NOW - dt.timedelta(days=7) for name in runs}
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    whole, base, stages = [], [], []
    for _ in range(5):
        t0 = time.perf_counter()
        for text in texts.values():
            yaml.load(text, Loader=loader)
        base.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        batches = load_batches(texts, "prod")
        t1 = time.perf_counter()
        plan = plan_batches("prod", [b.batch for b in batches], now=NOW, since=since,
                            latest=runs, active=[], promoted={})  # fmt: skip
        t2 = time.perf_counter()
        whole.append(t2 - t0)
        stages.append((t1 - t0, t2 - t1))
    due = len(plan.due)
    w, b = statistics.median(whole), statistics.median(base)
    parse, planned = (statistics.median(s[i] for s in stages) for i in (0, 1))
    print(f"batch deployments: {N}; due at {NOW:%H:%M} UTC: {due}")
    print(
        f"load + plan: median {w:.3f} s of 5 ({', '.join(f'{x:.3f}' for x in whole)}); target < 1 s"
    )
    print(f"  stages: parse+validate {parse:.3f} s, plan {planned:.3f} s")
    print(f"  baseline yaml CSafeLoader on the same texts: median {b:.3f} s; ratio {w / b:.1f}x")


if __name__ == "__main__":
    main()

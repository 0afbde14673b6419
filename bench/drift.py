"""Drift monitoring: cost of a window (reading vs judging), against a pandas baseline, and the
detection figures of the default thresholds. In process, no Ray.

1. Cost. A router recording of `--rows` requests (one input row of `--features` numeric columns
   each, `dataframe_split` bodies, as the router writes them) in a temporary directory. Timed,
   best of `--rounds`:
   - read: `read_window` (the bounded reader: lines, JSON, the window's time and version filter,
     columns);
   - judge: `judge_window` on what was read (PSI on the reference's bins, KS per feature);
   - baseline: what one would write without serveops: every line `json.loads`-ed into a pandas
     DataFrame, then `scipy.stats.ks_2samp` and a quantile-binned PSI (`np.histogram`) per
     feature, bins computed again each time.
   Reported: each time, judge/read (how much of a window is statistics, how much I/O and
   parsing), and baseline/(read + judge). Also the read of a window that holds a quarter of
   the file's records (files span several windows; lines outside it are not decoded).
2. Detection. `--trials` trials of the defaults (`max_psi` 0.1 and KS at 0.01 Bonferroni, both
   required; a 5,000-row reference; windows of 1,000 rows): in each, a mean shift of 0.5
   standard deviations in 3 of the features; detected within two windows when one of the
   first two windows is judged `drift`. False alarms: undrifted windows (A/A) judged `drift`.

    .venv/bin/python bench/drift.py [--rows 100000] [--features 10] [--rounds 3] [--trials 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.monitor.drift import ReferenceProfile, judge_window
from controller.monitor.recordings import ReadLimits, read_window
from controller.spec.monitoring import DriftTests

T0 = 1_772_366_400.0


def write(directory: Path, rows: np.ndarray, names: list[str]) -> None:
    path = directory / "fraud--20260301T000000Z-bench-0001.jsonl"
    step = 3600.0 / len(rows)
    with path.open("w") as f:
        f.write('{"kind":"header","format":"serveops-traffic/v1"}\n')
        for i, row in enumerate(rows.tolist()):
            record = {
                "id": f"b-{i}",
                "ts": T0 + i * step,
                "route": "/fraud",
                "method": "POST",
                "headers": {"content-type": "application/json"},
                "body": {"dataframe_split": {"columns": names, "data": [row]}},
                "response": {"status": 200, "latency_ms": 1.2, "version": "1", "body": [0]},
            }
            f.write(json.dumps(record, separators=(",", ":")) + "\n")


def baseline(directory: Path, reference: dict[str, np.ndarray], names: list[str]) -> int:
    """The pandas way: load everything, then SciPy and a histogram PSI per feature."""
    import pandas as pd
    from scipy import stats

    rows = []
    for path in sorted(directory.glob("fraud--*.jsonl")):
        with path.open() as f:
            for line in f:
                rec = json.loads(line)
                if rec.get("kind") == "header":
                    continue
                split = rec["body"]["dataframe_split"]
                for data in split["data"]:
                    rows.append(dict(zip(split["columns"], data, strict=True)))
    frame = pd.DataFrame(rows)
    drifted = 0
    for name in names:
        cur, ref = frame[name].to_numpy(), reference[name]
        stats.ks_2samp(cur, ref)
        edges = np.unique(np.quantile(ref, np.linspace(0, 1, 11)))
        p = np.histogram(ref, edges)[0] / ref.size
        q = np.histogram(np.clip(cur, edges[0], edges[-1]), edges)[0] / cur.size
        p, q = np.clip(p, 1e-4, None), np.clip(q, 1e-4, None)
        drifted += float(np.sum((q - p) * np.log(q / p))) > 0.1
    return drifted


def best(fn, rounds: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(rounds):
        began = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - began)
    return min(times), result


def cost(n: int, k: int, rounds: int) -> None:
    names = [f"f{i}" for i in range(k)]
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((5000, k))
    reference = {name: ref[:, i] for i, name in enumerate(names)}
    profile = ReferenceProfile.build(reference, features=None, bins=10, source="bench")
    live = rng.standard_normal((n, k))
    live[:, :3] += 0.5
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        write(directory, live, names)
        size = sum(p.stat().st_size for p in directory.iterdir())
        limits = ReadLimits(max_rows=10 * n, deadline_s=600)
        read_s, rows = best(
            lambda: read_window(
                directory, "fraud", T0, T0 + 3600, version="1", features=names, limits=limits
            ),
            rounds,
        )
        got = rows
        assert got.rows == n, got.rows  # type: ignore[attr-defined]
        judge_s, verdict = best(
            lambda: judge_window(profile, got.columns, got.rows, DriftTests(), 200),
            rounds,  # type: ignore[attr-defined]
        )
        base_s, _ = best(lambda: baseline(directory, reference, names), rounds)
        quarter_s, part = best(
            lambda: read_window(
                directory, "fraud", T0, T0 + 900, version="1", features=names, limits=limits
            ),
            rounds,
        )
    status = verdict[0]  # type: ignore[index]
    print(
        f"cost: {n:,} recorded requests x {k} features ({size / 2**20:.1f} MiB), best of "
        f"{rounds}; verdict {status}"
    )
    print(f"  read  (bounded reader)      {read_s:7.3f} s  {n / read_s:10,.0f} rows/s")
    print(f"  judge (PSI + KS, {k} feat.)  {judge_s:7.3f} s  {n / judge_s:10,.0f} rows/s")
    print(f"  judge / read                {judge_s / read_s:7.3f}")
    print(f"  baseline (pandas + scipy)   {base_s:7.3f} s")
    print(f"  baseline / (read + judge)   {base_s / (read_s + judge_s):7.2f}x")
    print(
        f"  read of a window holding a quarter of the file: {quarter_s:.3f} s "
        f"({part.rows:,} rows; {quarter_s / read_s:.2f} of the whole file's read)"
    )  # type: ignore[attr-defined]


def detection(trials: int, k: int) -> None:
    tests = DriftTests()
    hits = false_alarms = windows = 0
    for t in range(trials):
        rng = np.random.default_rng(1000 + t)
        ref = rng.standard_normal((5000, k))
        names = [f"f{i}" for i in range(k)]
        profile = ReferenceProfile.build(
            {n: ref[:, i] for i, n in enumerate(names)},
            features=None,
            bins=tests.bins,
            source="bench",
        )
        detected = False
        for _ in range(2):
            w = rng.standard_normal((1000, k))
            w[:, :3] += 0.5
            status, _, _ = judge_window(
                profile, {n: w[:, i] for i, n in enumerate(names)}, 1000, tests, 200
            )
            detected = detected or status == "drift"
        hits += detected
        for _ in range(2):
            w = rng.standard_normal((1000, k))
            status, _, _ = judge_window(
                profile, {n: w[:, i] for i, n in enumerate(names)}, 1000, tests, 200
            )
            false_alarms += status == "drift"
            windows += 1
    print(f"detection: {trials} trials, {k} features, windows of 1,000 rows, defaults")
    print(f"  0.5 sd shift in 3 features detected within two windows: {hits / trials:.1%}")
    print(
        f"  false alarms on undrifted windows (A/A):                {false_alarms / windows:.1%} "
        f"({false_alarms} of {windows})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=200)
    args = parser.parse_args()
    cost(args.rows, args.features, args.rounds)
    detection(args.trials, args.features)


if __name__ == "__main__":
    main()

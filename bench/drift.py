"""Drift monitoring: cost of a window against a pandas baseline, memory as the window grows,
and the detection figures of the default thresholds. No Ray.

1. Cost. A router recording of `--rows` requests (one input row of `--features` numeric columns
   each, `dataframe_split` bodies) written in a temporary directory as the router's writer
   thread writes it: the rotating sink, with the feature-column sidecar
   (controller/serving/columnar.py); the writer's CPU is measured with and without the
   sidecar. Each reading side runs in its own fresh Python process (so each one's peak RSS is
   its own), `--rounds` times, best CPU time kept (CPU seconds of one process: "per core", and
   steady under the load of other work on the machine):
   - monitor: `read_window` streaming into `WindowCounts` (the bounded reader, the window's
     time and version filter, per-window histograms on the reference's bins) and
     `judge_window` on the counts (PSI, binned KS, JS per feature); once from the feature
     columns, once from the JSON lines only (the sidecars moved away: blocks decoded by
     msgspec against the record's shape);
   - baseline: what one would write without serveops: every line `json.loads`-ed into a list
     of row dicts, a pandas DataFrame, then `scipy.stats.ks_2samp` and a quantile-binned PSI
     (`np.histogram`) per feature.
   Reported: each side's CPU and wall time and peak RSS, baseline CPU / monitor CPU, and the
   same with the writer's extra CPU for the sidecar added to the monitor's. Run it at
   `--rows 100000` and `--rows 1000000`: the monitor's RSS should not grow with the rows.
   Also the read of a window holding a quarter of the file's records.
2. Detection. `--trials` trials of the defaults (`max_psi` 0.1 and KS at 0.01 Bonferroni, both
   required; a 5,000-row reference; windows of 1,000 rows): in each, a mean shift of 0.5
   standard deviations in 3 of the features; detected within two windows when one of the
   first two windows is judged `drift`. False alarms: undrifted windows (A/A) judged `drift`.

    .venv/bin/python bench/drift.py [--rows 100000] [--features 10] [--rounds 3] [--trials 200]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.monitor.drift import ReferenceProfile, WindowCounts, judge_window
from controller.monitor.selection import ReadLimits
from controller.monitor.window import read_window
from controller.serving import recorder as recorder_module
from controller.serving.columnar import SUFFIX
from controller.serving.recorder import BATCH, Exchange, Recorder, RotatingFileSink
from controller.spec.monitoring import DriftTests

T0 = 1_772_366_400.0


def bodies(rows: np.ndarray, names: list[str]) -> list[bytes]:
    """The request bodies: one row each."""
    return [
        json.dumps({"dataframe_split": {"columns": names, "data": [row]}}).encode()
        for row in rows.tolist()
    ]


def exchanges(bodies: list[bytes], at: int, n: int) -> list[Exchange]:
    """What the router hands its recorder for requests at..at+n (over an hour in all); made a
    batch at a time, as the router's queue holds them, not all at once (the garbage collector
    would walk every one of them on each full pass, in the writer's time)."""
    step = 3600.0 / len(bodies)
    headers = [(b"content-type", b"application/json")]
    return [
        Exchange(T0 + i * step, "POST", "/fraud", headers, bodies[i], 200, b"[0]", 1.2, "1")
        for i in range(at, min(at + n, len(bodies)))
    ]


def _json_body(raw: bytes | None) -> tuple[object, bool]:
    return (json.loads(raw) if raw else None), False  # False: every line by json.dumps


WRITERS = {
    "json": "the writer before this change: json both ways, no feature columns",
    "msgspec": "msgspec both ways, no feature columns",
    "columns": "msgspec both ways and the feature columns (the router's writer today)",
}


def write(directory: Path, requests: list[bytes], how: str) -> float:
    """Write the requests as the router's writer thread does (`Recorder.write_batch` into the
    rotating sink, in its batches); the CPU seconds the writes took."""
    sink = RotatingFileSink(
        directory,
        "fraud--20260301T000000Z-bench",
        max_bytes=64 * 2**20,  # the spec's default `max_file_mb`
        keep_files=10_000,
        family="fraud--*.jsonl",
        columns=how == "columns",
    )
    recorder = Recorder(sink, tag="bench")
    saved = recorder_module.decode_body
    if how == "json":
        recorder_module.decode_body = _json_body  # type: ignore[assignment]
    spent = 0.0
    try:
        for at in range(0, len(requests), BATCH):
            batch = exchanges(requests, at, BATCH)
            cpu = time.process_time()
            recorder.write_batch(batch)
            spent += time.process_time() - cpu
        cpu = time.process_time()
        sink.close()
        return spent + time.process_time() - cpu
    finally:
        recorder_module.decode_body = saved
        recorder.close()


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


def reference_of(k: int) -> dict[str, np.ndarray]:
    ref = np.random.default_rng(0).standard_normal((5000, k))
    return {f"f{i}": ref[:, i] for i in range(k)}


def monitor(directory: Path, reference: dict[str, np.ndarray], end: float) -> tuple[int, str]:
    """What the controller does with a window: stream it into histograms, judge them."""
    names = list(reference)
    profile = ReferenceProfile.build(reference, features=None, bins=10, source="bench")
    counts = WindowCounts(profile)
    got = read_window(
        directory,
        "fraud",
        T0,
        end,
        version="1",
        features=names,
        limits=ReadLimits(max_rows=10**8, deadline_s=3600),
        sink=counts,
    )
    status, _, _ = judge_window(profile, counts, got.rows, DriftTests(), 200)
    return got.rows, status


def child(side: str, directory: Path, k: int, end: float) -> None:
    """One measurement in this fresh process: CPU, wall, peak RSS, as JSON on stdout."""
    import pandas  # noqa: F401  # imported before the clock starts, on both sides: a running
    import scipy.spatial.distance  # controller has them loaded already
    import scipy.stats  # noqa: F401

    reference = reference_of(k)
    cpu, wall = time.process_time(), time.perf_counter()
    if side == "baseline":
        rows, status = -1, f"{baseline(directory, reference, list(reference))} drifted"
    else:
        rows, status = monitor(directory, reference, end)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    # VmHWM, this process's own peak: ru_maxrss carries the parent's peak across fork + exec.
    proc = Path("/proc/self/status").read_text()
    rss_kib = int(next(ln.split()[1] for ln in proc.splitlines() if ln.startswith("VmHWM:")))
    print(
        json.dumps(
            {"cpu": cpu, "wall": wall, "rss_mib": rss_kib / 1024, "rows": rows, "status": status}
        )
    )


def measure(side: str, directory: Path, k: int, rounds: int, end: float) -> dict[str, float]:
    runs = []
    for _ in range(rounds):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                side,
                "--dir",
                str(directory),
                "--features",
                str(k),
                "--end",
                str(end),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    best_run = min(runs, key=lambda r: r["cpu"])
    return {**best_run, "rss_mib": max(r["rss_mib"] for r in runs)}


def cost(n: int, k: int, rounds: int) -> None:
    names = [f"f{i}" for i in range(k)]
    rng = np.random.default_rng(1)
    live = rng.standard_normal((n, k))
    live[:, :3] += 0.5
    requests = bodies(live, names)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        writer: dict[str, float] = {}
        for r in range(3):  # alternating, best of three each: the machine is shared
            for how in WRITERS:
                spent = write(directory / f"{how}{r}", requests, how)
                writer[how] = min(writer.get(how, spent), spent)
                if (how, r) != ("columns", 0):
                    shutil.rmtree(directory / f"{how}{r}")
        del requests
        directory = directory / "columns0"
        size = sum(p.stat().st_size for p in directory.glob("*.jsonl"))
        side = sum(p.stat().st_size for p in directory.glob(f"*{SUFFIX}"))
        mon = measure("monitor", directory, k, rounds, T0 + 3600)
        assert mon["rows"] == n, mon
        quarter = measure("monitor", directory, k, rounds, T0 + 900)
        for p in directory.glob(f"*{SUFFIX}"):  # the same recording, read from its JSON lines
            p.rename(p.with_suffix(".off"))
        lines = measure("monitor", directory, k, rounds, T0 + 3600)
        assert lines["rows"] == n, lines
        base = measure("baseline", directory, k, rounds, T0 + 3600)
    print(
        f"cost: {n:,} recorded requests x {k} features ({size / 2**20:.1f} MiB of JSON lines, "
        f"{side / 2**20:.1f} MiB of feature columns), best of {rounds} (CPU seconds of one "
        f"process); verdict {mon['status']}"
    )
    for label, r in (
        ("monitor, feature columns", mon),
        ("monitor, JSON lines only", lines),
        ("baseline (pandas + scipy)", base),
    ):
        print(
            f"  {label:26} CPU {r['cpu']:7.3f} s  wall {r['wall']:7.3f} s  "
            f"{n / r['cpu']:10,.0f} rows/CPU-s  peak RSS {r['rss_mib']:7.1f} MiB"
        )
    print(f"  baseline CPU / monitor CPU (feature columns)  {base['cpu'] / mon['cpu']:7.2f}x")
    print(f"  baseline CPU / monitor CPU (JSON lines only)  {base['cpu'] / lines['cpu']:7.2f}x")
    print("  the router's writer thread, CPU a record (best of 3):")
    for how, label in WRITERS.items():
        print(f"    {writer[how] / n * 1e6:6.2f} us  {label}")
    extra = writer["columns"] - writer["json"]
    if extra > 0:
        print(
            f"  the writer today costs {extra / n * 1e6:.2f} us a record more than before; "
            f"baseline CPU / (monitor CPU + that) {base['cpu'] / (mon['cpu'] + extra):.2f}x"
        )
    else:
        print(f"  the writer today costs {-extra / n * 1e6:.2f} us a record less than before")
    print(
        f"  a window holding a quarter of the file: CPU {quarter['cpu']:.3f} s "
        f"({quarter['rows']:,} rows; {quarter['cpu'] / mon['cpu']:.2f} of the whole file's)"
    )


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
    parser.add_argument("--child", choices=["monitor", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--end", type=float, default=T0 + 3600, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.dir, args.features, args.end)
        return
    cost(args.rows, args.features, args.rounds)
    if args.trials > 0:
        detection(args.trials, args.features)


if __name__ == "__main__":
    main()

"""The judge's operating characteristic: fixed horizon vs sequential, on the same replays.

No HTTP, no Ray: simulated paired replays (latency shapes below) through simulator.compare
(fixed horizon, all --requests pairs, today's default) and simulator.sequential (a look every
100 pairs, stop when clear). For every shape and true change it prints the share of each
verdict for both judges and the pairs the sequential judge used (median, mean), then:

- false positives under peeking: a candidate exactly at the 5% tolerance, looked at every
  100 pairs: how often the lower bound of its p50/p95 delta ever clears the tolerance, with
  the sequential judge's confidence sequence against a fixed-horizon 95% interval (looked at
  once, and at every look);
- false fails under peeking at the flip limit: flips exactly at the 1% limit, the flip check
  looked at every 100 pairs and at the last look (the sequential judge: mixture SPRT, then the
  last look's critical count, simulator/final_look.py) against the fixed judge's rule (Wilson
  interval above the limit) once and at every look; with the exact figure for the grid;
- the minimum detectable effect a report prints (p95, fixed horizon), checked: the share of
  runs of a candidate slowed by exactly that much which the fixed judge fails.

Shapes: `lognormal` is bench/decision_quality.py's (a shared per-request part and a
per-side part); `bimodal` is a cache: each side independently hits (70%, ~5 ms) or misses
(~50 ms); `heavy` has a Pareto tail of stalls (5% of requests) per side.

With --plot FILE, also draws the operating characteristic (share failed and passed against the
true slowdown, both judges, per shape; the sequential judge's mean pairs; and each verdict's
share against the true flip rate) as a PNG.

Run: .venv/bin/python bench/judge_power.py [--runs 200] [--requests 2000] [--plot FILE]
(--shapes A,B runs a subset with the same seeds; --save / --plot-from split a run across
processes and draw one plot from their counts.)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from collections.abc import Callable

import numpy as np

from simulator.checks import Side, Thresholds
from simulator.compare import compare, verdict
from simulator.confseq import log_ratio_sd, quantile_ratio_cs
from simulator.final_look import final_look
from simulator.power import latency_mde
from simulator.sequential import looks_for, output_events, rate_steps, sequential_decision
from simulator.stats import wilson_interval

Shape = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]


def lognormal(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    shared = rng.lognormal(np.log(20.0), 0.5, n)
    return shared * rng.lognormal(0, 0.3, n), shared * rng.lognormal(0, 0.3, n)


def bimodal(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    size = rng.lognormal(0, 0.2, n)  # payload size, shared

    def side() -> np.ndarray:
        hit = rng.random(n) < 0.7
        return size * np.where(
            hit, rng.lognormal(np.log(5.0), 0.2, n), rng.lognormal(np.log(50.0), 0.3, n)
        )

    return side(), side()


def heavy(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    shared = rng.lognormal(np.log(20.0), 0.3, n)

    def side() -> np.ndarray:
        stall = np.where(rng.random(n) < 0.05, 1 + rng.pareto(1.5, n), 1.0)
        return shared * rng.lognormal(0, 0.2, n) * stall

    return side(), side()


SHAPES: dict[str, Shape] = {"lognormal": lognormal, "bimodal": bimodal, "heavy": heavy}


def replay(
    rng: np.random.Generator, shape: Shape, n: int, slowdown: float, flip: float
) -> tuple[Side, Side]:
    b, c = shape(rng, n)
    labels = rng.integers(0, 2, n)
    flipped = np.where(rng.random(n) < flip, 1 - labels, labels)
    base = Side(b, rng.random(n) < 0.002, outputs=[[int(x)] for x in labels])
    cand = Side(c * (1 + slowdown), rng.random(n) < 0.002, outputs=[[int(x)] for x in flipped])
    return base, cand


def ever_above(base: Side, cand: Side, t: Thresholds, looks: list[int], crit: float | None) -> bool:
    """Does the lower bound of the relative p50/p95 delta ever clear the tolerance? With
    `crit` a fixed-horizon interval (z = crit) at every look; with None the sequential CS."""
    for n in looks:
        b, c = base.latency_ms[:n], cand.latency_ms[:n]
        for q in t.gate_quantiles:
            if crit is None:
                lo = quantile_ratio_cs(b, c, q, alpha=t.alpha, n_opt=looks[-1] / 2, paired=True)[1]
            else:
                d = math.log(np.quantile(c, q) / np.quantile(b, q))
                lo = math.expm1(d - crit * log_ratio_sd(b, c, q, paired=True) / math.sqrt(n))
            if lo > t.latency_tolerance:
                return True
    return False


def row(name: str, counts: Counter[str], runs: int) -> str:
    return " ".join(pct(counts, k, runs, 5) for k in ("pass", "fail", "inconclusive"))


def pct(counts: Counter[str], key: str, runs: int, width: int = 0) -> str:
    """A verdict's share, or '-' for a judge not run on this row."""
    return f"{counts[key] / runs:>{width}.0%}" if counts else f"{'-':>{width}}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--plot", default=None, help="Write the power curves to this PNG.")
    ap.add_argument("--shapes", default=",".join(SHAPES), help="Comma-separated subset to run.")
    ap.add_argument(
        "--fixed", choices=("all", "flips"), default="all",
        help="Rows the fixed-horizon judge runs on (flips: only the flip rows, and no MDE check; "
        "the sequential judge's latency figures do not depend on it).",
    )  # fmt: skip
    ap.add_argument(
        "--changes", choices=("all", "flips"), default="all",
        help="Rows to run: all, or only the flip rows (0-3% flips).",
    )  # fmt: skip
    ap.add_argument("--save", default=None, help="Write the verdict counts to this JSON.")
    ap.add_argument(
        "--plot-from", nargs="+", default=None, help="Only plot, from --save files (to --plot)."
    )
    args = ap.parse_args()
    if args.plot_from:
        loaded = [load(path) for path in args.plot_from]
        merged = {key: v for part, _, _ in loaded for key, v in part.items()}
        plot(merged, loaded[0][1], loaded[0][2], args.plot)
        print(f"wrote {args.plot}")
        return
    chosen = {k: SHAPES[k] for k in args.shapes.split(",")}
    runs, n = args.runs, args.requests
    t = Thresholds()
    print(
        f"{runs} runs x {n} paired requests per row; tolerance {t.latency_tolerance:.0%}, "
        f"sequential: look every {t.look_every}, pass once a {t.detect_slowdown:.0%} slowdown "
        f"is ruled out; alpha {t.alpha}"
    )
    print(
        f"{'shape':<10} {'change':<14} {'fixed: pass  fail  inc':>24}   "
        f"{'sequential: pass  fail  inc':>28}  {'median n':>8} {'mean n':>7}"
    )
    cases = [(s, 0.0) for s in (0.0, 0.02, 0.05, 0.10, 0.15, 0.30)] + [
        (0.0, f) for f in (0.01, 0.02, 0.03)
    ]
    summary: dict[tuple[str, float, float], tuple[Counter[str], Counter[str], list[int]]] = {}
    started = time.perf_counter()
    for k, (shape_name, shape) in enumerate(SHAPES.items()):
        if shape_name not in chosen:
            continue
        for j, (slow, flip) in enumerate(cases):
            if args.changes == "flips" and not flip:
                continue
            rng = np.random.default_rng(1000 * k + j)
            fixed: Counter[str] = Counter()
            seq: Counter[str] = Counter()
            used: list[int] = []
            for r in range(runs):
                base, cand = replay(rng, shape, n, slow, flip)
                if args.fixed == "all" or flip:
                    fixed[verdict(compare(base, cand, Thresholds(seed=r)))[0]] += 1
                res = sequential_decision(base, cand, t)
                seq[res.decision] += 1
                used.append(res.n_used)
            change = f"flips {flip:.0%}" if flip else f"latency +{slow:.0%}"
            summary[(shape_name, slow, flip)] = (fixed, seq, used)
            print(
                f"{shape_name:<10} {change:<14} {row('', fixed, runs):>24}   "
                f"{row('', seq, runs):>28}  {np.median(used):>8.0f} {np.mean(used):>7.0f}",
                flush=True,
            )
    took = time.perf_counter() - started

    print(
        "\nfalse positives under peeking: a candidate exactly at the 5% tolerance; share of runs "
        "whose p50 or p95 lower bound ever clears it"
    )
    looks = list(range(t.min_requests, n + 1, t.look_every))
    for k, (shape_name, shape) in enumerate(SHAPES.items()):
        if shape_name not in chosen or args.changes != "all":
            continue
        rng = np.random.default_rng(5000 + k)
        once = every = cs = 0
        for _ in range(runs):
            base, cand = replay(rng, shape, n, t.latency_tolerance, 0.0)
            once += ever_above(base, cand, t, [n], 1.96)
            every += ever_above(base, cand, t, looks, 1.96)
            cs += ever_above(base, cand, t, looks, None)
        print(
            f"  {shape_name:<10} fixed interval once {once / runs:.1%}, fixed interval at all "
            f"{len(looks)} looks {every / runs:.1%}, confidence sequence at all looks "
            f"{cs / runs:.1%} (bound: 2 quantiles x {t.alpha / 2:.1%})"
        )

    flip_runs = 5 * runs
    marks = looks_for(n, t.look_every, t.min_requests)
    p0 = 1 - (t.min_agreement or 0.99)
    exact = final_look(marks, p0, t.alpha).fail_level
    print(
        f"\nfalse fails under peeking at the flip limit: flips exactly {p0:.0%}, looked at all "
        f"{len(marks)} looks; share of {flip_runs} runs whose flip check ever fails"
    )
    for k, (shape_name, shape) in enumerate(SHAPES.items()):
        if shape_name not in chosen:
            continue
        rng = np.random.default_rng(6000 + k)
        seq = once = every = 0
        for _ in range(flip_runs):
            events = output_events(*replay(rng, shape, n, 0.0, p0), t)
            assert events is not None
            name, _, rows, bad = events
            r = [int(rows[m - 1]) for m in marks]
            b = [int(bad[m - 1]) for m in marks]
            seq += "fail" in rate_steps(name, p0, r, b, t)
            wilson = [
                wilson_interval(x - y, x, t.alpha)[1] < 1 - p0 for x, y in zip(r, b, strict=True)
            ]
            once += wilson[-1]
            every += any(wilson)
        print(
            f"  {shape_name:<10} fixed rule once {once / flip_runs:.1%}, fixed rule at all "
            f"{len(marks)} looks {every / flip_runs:.1%}, sequential (mSPRT, then the last look) "
            f"{seq / flip_runs:.1%} (exact for this grid: {exact:.1%}; bound {t.alpha:.0%})"
        )

    print("\nminimum detectable effect (p95, fixed horizon) checked by simulation")
    for k, (shape_name, shape) in enumerate(SHAPES.items()):
        if shape_name not in chosen or args.fixed != "all":
            continue
        rng = np.random.default_rng(7000 + k)
        sds = [
            log_ratio_sd(*(s.latency_ms for s in replay(rng, shape, n, 0, 0)), 0.95, paired=True)
            for _ in range(5)
        ]
        mde = latency_mde(float(np.mean(sds)), n, t.alpha, t.power)
        caught = sum(
            verdict(compare(*replay(rng, shape, n, mde, 0), Thresholds(seed=r)))[0] == "fail"
            for r in range(runs)
        )
        print(f"  {shape_name:<10} printed MDE {mde:.1%}: failed in {caught / runs:.0%} of runs")

    print("\nissue 19 targets (sequential judge)")
    for shape_name in chosen if args.changes == "all" else ():
        aa = summary[(shape_name, 0.0, 0.0)]
        slow2 = summary[(shape_name, 0.02, 0.0)]
        slow15 = summary[(shape_name, 0.15, 0.0)]
        flips2 = summary[(shape_name, 0.0, 0.02)]
        flips1 = summary[(shape_name, 0.0, 0.01)]
        all_used = [u for key, v in summary.items() if key[0] == shape_name for u in v[2]]
        print(
            f"  {shape_name:<10} A/A pass {pct(aa[1], 'pass', runs)} (fixed {pct(aa[0], 'pass', runs)})"
            f", 2% slower pass {pct(slow2[1], 'pass', runs)} (fixed {pct(slow2[0], 'pass', runs)})"
            f", 15% slower caught {pct(slow15[1], 'fail', runs)} "
            f"(fixed {pct(slow15[0], 'fail', runs)}), 2% flips caught "
            f"{pct(flips2[1], 'fail', runs)} (fixed {pct(flips2[0], 'fail', runs)}), 1% flips "
            f"(the limit) failed {pct(flips1[1], 'fail', runs)} (fixed {pct(flips1[0], 'fail', runs)}); "
            f"median pairs {np.median(all_used):.0f} of {n} "
            f"(sample saved {1 - np.mean(all_used) / n:.0%})"
        )
    print(f"\n({took:.0f}s for the tables)")
    if args.save:
        rows = [
            {"shape": key[0], "slow": key[1], "flip": key[2], "fixed": dict(v[0]),
             "sequential": dict(v[1]), "used": v[2]}
            for key, v in summary.items()
        ]  # fmt: skip
        with open(args.save, "w") as f:
            json.dump({"runs": runs, "requests": n, "rows": rows}, f)
    if args.plot:
        plot(summary, runs, n, args.plot)
        print(f"wrote {args.plot}")


Summary = dict[tuple[str, float, float], tuple[Counter[str], Counter[str], list[int]]]


def load(path: str) -> tuple[Summary, int, int]:
    with open(path) as f:
        data = json.load(f)
    summary: Summary = {
        (r["shape"], r["slow"], r["flip"]): (Counter(r["fixed"]), Counter(r["sequential"]),
                                              r["used"])
        for r in data["rows"]
    }  # fmt: skip
    return summary, data["runs"], data["requests"]


def plot(
    summary: dict[tuple[str, float, float], tuple[Counter[str], Counter[str], list[int]]],
    runs: int, n: int, path: str,
) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = [name for name in SHAPES if any(k[0] == name for k in summary)]
    fig, axes = plt.subplots(
        3, len(shapes), figsize=(4 * len(shapes), 9.5), sharex="row", squeeze=False
    )
    for col, shape_name in enumerate(shapes):
        keys = sorted(k for k in summary if k[0] == shape_name and k[2] == 0.0)
        xs = [100 * k[1] for k in keys]
        ax = axes[0][col]
        for idx, label, style in ((0, "fixed", "-"), (1, "sequential", "--")):
            fails = [summary[k][idx]["fail"] / runs for k in keys]
            passes = [summary[k][idx]["pass"] / runs for k in keys]
            ax.plot(xs, fails, style, color="tab:red", marker="o", label=f"fail ({label})")
            ax.plot(xs, passes, style, color="tab:green", marker="o", label=f"pass ({label})")
        ax.axvline(5, color="grey", lw=0.8)
        ax.axvline(20, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{shape_name}: verdict vs true slowdown")
        ax.set_xlabel("true slowdown of every quantile (%)")
        ax.set_ylim(-0.02, 1.02)
        if col == 0:
            ax.set_ylabel(f"share of {runs} runs")
            ax.legend(fontsize=7)
        ax2 = axes[1][col]
        ax2.plot(xs, [float(np.mean(summary[k][2])) for k in keys], "--o", label="sequential")
        ax2.axhline(n, color="grey", lw=0.8, label="fixed horizon")
        ax2.set_xlabel("true slowdown of every quantile (%)")
        if col == 0:
            ax2.set_ylabel("mean pairs used")
            ax2.legend(fontsize=7)
        flips = sorted(k for k in summary if k[0] == shape_name and k[1] == 0.0)
        ax3 = axes[2][col]
        for idx, label, style in ((0, "fixed", "-"), (1, "sequential", "--")):
            for verdict_, color in (("fail", "tab:red"), ("pass", "tab:green"),
                                    ("inconclusive", "tab:grey")):  # fmt: skip
                shares = [summary[k][idx][verdict_] / runs for k in flips]
                ax3.plot([100 * k[2] for k in flips], shares, style, color=color, marker="o",
                         label=f"{verdict_} ({label})")  # fmt: skip
        ax3.axvline(1, color="grey", lw=0.8)
        ax3.set_title(f"{shape_name}: verdict vs true flip rate")
        ax3.set_xlabel("rows flipped (%); limit 1%")
        ax3.set_ylim(-0.02, 1.02)
        if col == 0:
            ax3.set_ylabel(f"share of {runs} runs")
            ax3.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()

"""Decision quality of simulator.compare on simulated paired replays (no HTTP, no Ray).

Latency model per request i: a shared part (payload size, server state) seen by both sides,
lognormal(log 20 ms, 0.5), times an independent part per side, lognormal(0, 0.3); and, harder,
with no shared part (each side independent, lognormal(log 20 ms, 0.58): the same spread). Predictions:
0/1 labels; a candidate that "flips 2%" changes a random 2% of them.

Figures (each over --runs repeated runs of --requests paired requests):
- A/A: share of runs whose verdict is pass (target >= 95%);
- a candidate 15% slower (every latency x1.15, so p95 too): share that fails (target >= 95%);
- a candidate flipping 2% of predictions: share that fails (target: caught).

Run: .venv/bin/python bench/decision_quality.py [--runs 200] [--requests 2000]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

from simulator.checks import Side, Thresholds
from simulator.compare import compare, verdict


def simulate(
    rng: np.random.Generator, n: int, slowdown: float, flip: float, shared_sigma: float = 0.5
) -> tuple[Side, Side]:
    own_sigma = 0.3 if shared_sigma > 0 else 0.58  # about the same marginal spread either way
    shared = rng.lognormal(np.log(20.0), shared_sigma, n)
    base_lat = shared * rng.lognormal(0.0, own_sigma, n)
    cand_lat = shared * rng.lognormal(0.0, own_sigma, n) * (1 + slowdown)
    labels = rng.integers(0, 2, n)
    flipped = np.where(rng.random(n) < flip, 1 - labels, labels)
    base_err = rng.random(n) < 0.002
    cand_err = rng.random(n) < 0.002
    base = Side(base_lat, base_err, outputs=[[int(x)] for x in labels])
    cand = Side(cand_lat, cand_err, outputs=[[int(x)] for x in flipped])
    return base, cand


def scenario(
    name: str, runs: int, n: int, slowdown: float, flip: float, seed: int, shared: float = 0.5
) -> Counter[str]:
    rng = np.random.default_rng(seed)
    outcomes: Counter[str] = Counter()
    started = time.perf_counter()
    for r in range(runs):
        base, cand = simulate(rng, n, slowdown, flip, shared)
        v, _ = verdict(compare(base, cand, Thresholds(seed=r), paired=True))
        outcomes[v] += 1
    took = time.perf_counter() - started
    shares = ", ".join(f"{k} {outcomes[k] / runs:.1%}" for k in ("pass", "fail", "inconclusive"))
    print(f"{name:<34} {shares}   ({runs} runs x {n} paired requests, {took:.1f}s)")
    return outcomes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--requests", type=int, default=2000)
    args = ap.parse_args()
    t = Thresholds()
    print(
        f"thresholds: latency tolerance {t.latency_tolerance:.0%} on "
        f"{', '.join(f'p{round(q * 100)}' for q in t.gate_quantiles)}, alpha {t.alpha}, "
        f"min agreement {t.min_agreement}, bootstrap {t.bootstrap_resamples}"
    )
    aa = scenario("A/A (same model twice)", args.runs, args.requests, 0.0, 0.0, 1)
    slow = scenario("candidate 15% slower", args.runs, args.requests, 0.15, 0.0, 2)
    flips = scenario("candidate flips 2% of predictions", args.runs, args.requests, 0.0, 0.02, 3)
    # Harder: no shared per-request component (each side's noise independent, same spread).
    aa_i = scenario("A/A, independent noise", args.runs, args.requests, 0.0, 0.0, 4, 0.0)
    slow_i = scenario("15% slower, independent noise", args.runs, args.requests, 0.15, 0.0, 5, 0.0)
    print(f"A/A pass rate:          {aa['pass'] / args.runs:.1%}  (target >= 95%)")
    print(f"15% slower caught:      {slow['fail'] / args.runs:.1%}  (target >= 95%)")
    print(f"2% flips caught:        {flips['fail'] / args.runs:.1%}")
    print(
        f"independent noise: A/A pass {aa_i['pass'] / args.runs:.1%}, 15% slower caught "
        f"{slow_i['fail'] / args.runs:.1%}"
    )


if __name__ == "__main__":
    main()

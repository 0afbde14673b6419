"""Baseline versus candidate, with statistics: pure numpy/SciPy, no I/O.

Each check returns a `CheckResult` with a status (pass / fail / inconclusive, or `info` for a
check that does not gate), the figures behind it and a one-line reason; `verdict()` folds the
gating checks into one. Latency decisions use two margins: a candidate fails when it is
*significantly* slower (the confidence interval of the relative delta excludes 0) *and* the
point estimate exceeds `latency_tolerance`; it passes when the interval's upper end stays under
`latency_max_unresolved`; otherwise the data cannot tell (inconclusive).

Here: latency, errors, the replay's validity, the verdict. The types every check shares are in
checks.py, generic statistics in stats.py, output agreement in outputs.py, input drift in
drift.py, the sequential judge in sequential.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from simulator.checks import CheckResult, Side, Thresholds, Verdict, pct
from simulator.confseq import log_ratio_sd
from simulator.drift import input_drift_check
from simulator.outputs import output_checks
from simulator.power import block_chance, error_mde, latency_mde
from simulator.stats import FloatArray, bootstrap_quantile_deltas, wilson_interval


def latency_check(
    base: Side,
    cand: Side,
    t: Thresholds,
    *,
    paired: bool,
    noise_floor: Side | None = None,
) -> CheckResult:
    rng = np.random.default_rng(t.seed)
    if paired and base.n != cand.n:
        raise ValueError("a paired comparison needs the same number of requests on both sides")
    figures: dict[str, Any] = {
        "n_baseline": base.n,
        "n_candidate": cand.n,
        "paired": paired,
        "censored_baseline": int(base.censored.sum()),
        "censored_candidate": int(cand.censored.sum()),
    }
    if min(base.n, cand.n) < t.min_requests:
        return CheckResult(
            name="latency",
            status="inconclusive",
            reason=f"too few requests ({min(base.n, cand.n)} < {t.min_requests})",
            figures=figures,
        )
    b, c = base.latency_ms, cand.latency_ms
    qs = sorted({*t.latency_quantiles, *t.gate_quantiles})
    deltas = bootstrap_quantile_deltas(
        b, c, qs, paired=paired, resamples=t.bootstrap_resamples, alpha=t.alpha, rng=rng
    )
    figures["quantiles"] = {
        f"p{round(q * 100):d}": {
            "baseline_ms": float(np.quantile(b, q)),
            "candidate_ms": float(np.quantile(c, q)),
            "delta": deltas[q][0],
            "ci_low": deltas[q][1],
            "ci_high": deltas[q][2],
        }
        for q in qs
    }
    mw = stats.mannwhitneyu(c, b, alternative="two-sided")
    # Rank-biserial correlation: P(cand > base) - P(cand < base), in [-1, 1].
    figures["mann_whitney"] = {
        "p_value": float(mw.pvalue),
        "rank_biserial": float(2 * mw.statistic / (b.size * c.size) - 1),
    }
    ks = stats.ks_2samp(c, b)
    figures["ks"] = {"p_value": float(ks.pvalue), "statistic": float(ks.statistic)}
    if paired:
        w = stats.wilcoxon(c - b) if np.any(c != b) else None
        figures["paired_median_diff_ms"] = float(np.median(c - b))
        figures["wilcoxon_p_value"] = float(w.pvalue) if w is not None else 1.0

    tolerance = t.latency_tolerance
    if noise_floor is not None and noise_floor.n == base.n:
        nf = bootstrap_quantile_deltas(
            b,
            noise_floor.latency_ms,
            t.gate_quantiles,
            paired=paired,
            resamples=t.bootstrap_resamples,
            alpha=t.alpha,
            rng=rng,
        )
        floor = max(abs(v[0]) for v in nf.values())
        figures["noise_floor"] = {f"p{round(q * 100):d}": v[0] for q, v in nf.items()}
        tolerance = max(tolerance, floor)
        figures["effective_tolerance"] = tolerance

    n_pairs = min(b.size, c.size)
    sds = {f"p{round(q * 100):d}": log_ratio_sd(b, c, q, paired=paired) for q in t.gate_quantiles}
    mde = {k: latency_mde(sd, n_pairs, t.alpha, t.power) for k, sd in sds.items()}
    figures["mde"] = mde  # smallest slowdown caught with probability t.power at this n
    # The chance this run's rule blocks a candidate slower by half the tolerance, any quantile.
    keep = 1.0
    for sd in sds.values():
        keep *= 1 - block_chance(sd, n_pairs, tolerance / 2, tolerance, t.alpha)
    figures["block_chance_at_half_tolerance"] = 1 - keep
    failed, unresolved = [], []
    for q in t.gate_quantiles:
        pt, lo, hi = deltas[float(q)]
        label = f"p{round(q * 100):d}"
        if lo > 0 and pt > tolerance:
            failed.append(f"{label} {pct(pt)} [CI {pct(lo)}, {pct(hi)}]")
        elif not hi < t.latency_max_unresolved:
            unresolved.append(f"{label} CI up to {pct(hi)}")
    if failed:
        return CheckResult(
            name="latency",
            status="fail",
            reason=f"candidate slower beyond the {tolerance:.0%} tolerance: " + "; ".join(failed),
            figures=figures,
        )
    if unresolved:
        return CheckResult(
            name="latency",
            status="inconclusive",
            reason="too noisy to rule out a slowdown of "
            f"{t.latency_max_unresolved:.0%}: " + "; ".join(unresolved),
            figures=figures,
        )
    summary = ", ".join(f"p{round(q * 100):d} {pct(deltas[float(q)][0])}" for q in t.gate_quantiles)
    blind = {k: v for k, v in mde.items() if not v <= (t.max_detectable_slowdown or math.inf)}
    if blind:
        return CheckResult(
            name="latency",
            status="inconclusive",
            reason=f"underpowered: {n_pairs} pairs would catch (with {t.power:.0%} probability) "
            "only a slowdown of "
            + ", ".join(f"{k} {v:.0%}" for k, v in blind.items())
            + f", more than {t.max_detectable_slowdown:.0%} ({summary})",
            figures=figures,
        )
    return CheckResult(
        name="latency",
        status="pass",
        reason=f"no slowdown beyond tolerance ({summary})",
        figures=figures,
    )


# --- errors ------------------------------------------------------------------------------------


def error_check(base: Side, cand: Side, t: Thresholds, *, paired: bool) -> CheckResult:
    eb, ec = int(base.error.sum()), int(cand.error.sum())
    rb, rc = eb / max(base.n, 1), ec / max(cand.n, 1)
    figures: dict[str, Any] = {
        "baseline": {
            "errors": eb,
            "n": base.n,
            "rate": rb,
            "ci": wilson_interval(eb, base.n, t.alpha),
        },
        "candidate": {
            "errors": ec,
            "n": cand.n,
            "rate": rc,
            "ci": wilson_interval(ec, cand.n, t.alpha),
        },
    }
    if min(base.n, cand.n) == 0:
        return CheckResult(
            name="errors", status="inconclusive", reason="no requests", figures=figures
        )
    if paired:
        # McNemar, exact: only discordant pairs carry information.
        only_c = int(np.sum(cand.error & ~base.error))
        only_b = int(np.sum(base.error & ~cand.error))
        disc = only_c + only_b
        p = float(stats.binomtest(only_c, disc, 0.5, alternative="greater").pvalue) if disc else 1.0
        figures["mcnemar"] = {"candidate_only": only_c, "baseline_only": only_b, "p_value": p}
    else:
        table = [[ec, cand.n - ec], [eb, base.n - eb]]
        p = float(stats.fisher_exact(table, alternative="greater").pvalue)
        figures["fisher"] = {"p_value": p}
    diff = rc - rb
    figures["rate_increase"] = diff
    figures["mde"] = error_mde(rb, min(base.n, cand.n), t.alpha, t.power)
    if p < t.alpha and diff > t.max_error_rate_increase:
        return CheckResult(
            name="errors",
            status="fail",
            reason=f"error rate {rb:.2%} -> {rc:.2%} (+{diff:.2%}, p={p:.2g}) exceeds the "
            f"{t.max_error_rate_increase:.2%} allowance",
            figures=figures,
        )
    return CheckResult(
        name="errors",
        status="pass",
        reason=f"error rate {rb:.2%} -> {rc:.2%} (p={p:.2g}); would catch +{figures['mde']:.2%}",
        figures=figures,
    )


# --- outputs -----------------------------------------------------------------------------------


def replay_validity_check(
    lag_p99_ms: float, dropped: int, total: int, t: Thresholds
) -> CheckResult:
    figures = {"generator_lag_p99_ms": lag_p99_ms, "dropped": dropped, "scheduled": total}
    problems = []
    if lag_p99_ms > t.max_generator_lag_p99_ms:
        problems.append(
            f"generator lag p99 {lag_p99_ms:.1f} ms > {t.max_generator_lag_p99_ms} ms "
            "(the load generator could not keep the schedule)"
        )
    if total and dropped / total > t.max_dropped_fraction:
        problems.append(f"{dropped} of {total} requests dropped by the concurrency cap")
    if problems:
        return CheckResult(
            name="replay_validity", status="inconclusive", reason="; ".join(problems),
            figures=figures,
        )  # fmt: skip
    return CheckResult(
        name="replay_validity",
        status="pass",
        reason=f"schedule kept (lag p99 {lag_p99_ms:.2f} ms, nothing dropped)",
        figures=figures,
    )


def verdict(checks: Sequence[CheckResult]) -> tuple[Verdict, str]:
    gating = [c for c in checks if c.gating and c.status != "info"]
    fails = [c for c in gating if c.status == "fail"]
    if fails:
        return "fail", "; ".join(f"{c.name}: {c.reason}" for c in fails)
    unsure = [c for c in gating if c.status == "inconclusive"]
    if unsure:
        return "inconclusive", "; ".join(f"{c.name}: {c.reason}" for c in unsure)
    return "pass", "all gating checks passed"


def compare(
    base: Side,
    cand: Side,
    t: Thresholds | None = None,
    *,
    paired: bool = True,
    noise_floor: Side | None = None,
    reference_inputs: dict[str, FloatArray] | None = None,
    replayed_inputs: dict[str, FloatArray] | None = None,
) -> list[CheckResult]:
    """Every check that the data allows, gating ones first."""
    t = t or Thresholds()
    checks = [
        latency_check(base, cand, t, paired=paired, noise_floor=noise_floor),
        error_check(base, cand, t, paired=paired),
    ]
    if paired:
        checks += output_checks(base, cand, t)
    if reference_inputs is not None and replayed_inputs is not None:
        checks.append(input_drift_check(reference_inputs, replayed_inputs, t))
    return checks

"""Baseline versus candidate, with statistics: pure numpy/SciPy, no I/O.

Each check returns a `CheckResult` with a status (pass / fail / inconclusive, or `info` for a
check that does not gate), the figures behind it and a one-line reason; `verdict()` folds the
gating checks into one. Latency decisions use two margins: a candidate fails when it is
*significantly* slower (the confidence interval of the relative delta excludes 0) *and* the
point estimate exceeds `latency_tolerance`; it passes when the interval's upper end stays under
`latency_max_unresolved`; otherwise the data cannot tell (inconclusive).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from simulator.confseq import log_ratio_sd
from simulator.power import block_chance, error_mde, latency_mde, rate_mde

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Status = Literal["pass", "fail", "inconclusive", "info"]
Verdict = Literal["pass", "fail", "inconclusive"]


class Thresholds(BaseModel):
    """When a candidate may be promoted. Fractions, not percent."""

    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(default=0.05, gt=0, lt=1, description="1 - confidence level.")
    bootstrap_resamples: int = Field(default=1000, ge=100)
    seed: int = 0
    min_requests: int = Field(default=200, ge=1, description="Fewer per side: inconclusive.")
    latency_quantiles: list[float] = Field(default_factory=lambda: [0.5, 0.95, 0.99])
    gate_quantiles: list[float] = Field(
        default_factory=lambda: [0.5, 0.95], description="Quantiles whose delta gates."
    )
    latency_tolerance: float = Field(
        default=0.05, ge=0, description="Relative slowdown accepted (0.05 = 5%)."
    )
    latency_max_unresolved: float = Field(
        default=0.25, gt=0, description="Pass only if the CI's upper end is below this."
    )
    max_error_rate_increase: float = Field(
        default=0.005, ge=0, description="Absolute error-rate increase accepted."
    )
    min_agreement: float | None = Field(
        default=0.99, description="Classification: least share of identical predictions."
    )
    regression_abs_tol: float = 1e-6
    regression_rel_tol: float = 1e-3
    max_out_of_tolerance: float | None = Field(
        default=0.01, description="Regression: greatest share of outputs outside tolerance."
    )
    max_output_psi: float | None = Field(default=0.25, description="Output shift that fails.")
    max_input_psi: float | None = Field(
        default=None, description="Input drift that fails; None reports drift without gating."
    )
    max_generator_lag_p99_ms: float = Field(default=5.0, gt=0)
    max_dropped_fraction: float = Field(default=0.0, ge=0)
    power: float = Field(
        default=0.95,
        gt=0.5,
        lt=1,
        description="Probability of catching an effect that a "
        "minimum detectable effect (MDE) and sample-size planning refer to.",
    )
    max_detectable_slowdown: float | None = Field(
        default=0.25,
        gt=0,
        description="A latency pass whose p50/p95 MDE exceeds this is "
        "inconclusive (underpowered); None turns the rule off.",
    )
    sequential: bool = Field(
        default=False,
        description="Decide with the sequential judge (always-valid tests at "
        "every look) instead of one fixed-horizon test over all pairs.",
    )
    detect_slowdown: float = Field(
        default=0.20,
        gt=0,
        description="Sequential judge: latency passes once every gated "
        "quantile's confidence sequence rules out a slowdown this large; also the default "
        "target of sample-size planning.",
    )
    look_every: int = Field(
        default=100, ge=10, description="Sequential judge: pairs between two looks."
    )


class CheckResult(BaseModel):
    name: str
    status: Status
    gating: bool = True
    reason: str
    figures: dict[str, Any] = Field(default_factory=dict)


@dataclass
class Side:
    """One side's per-request results, aligned by request when the run is paired."""

    latency_ms: FloatArray
    error: BoolArray
    censored: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    outputs: list[Any] | None = None  # one entry per request: a list of per-row predictions

    def __post_init__(self) -> None:
        self.latency_ms = np.asarray(self.latency_ms, dtype=np.float64)
        self.error = np.asarray(self.error, dtype=bool)
        if self.censored.size == 0:
            self.censored = np.zeros(self.latency_ms.shape, dtype=bool)
        if not (self.latency_ms.shape == self.error.shape == self.censored.shape):
            raise ValueError("latency_ms, error and censored must have the same length")

    @property
    def n(self) -> int:
        return int(self.latency_ms.size)


# --- small statistics --------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    z = float(stats.norm.ppf(1 - alpha / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def cohen_kappa(a: Sequence[Any], b: Sequence[Any]) -> float:
    labels = sorted({*a, *b}, key=repr)
    if len(a) == 0:
        return float("nan")
    index = {lab: i for i, lab in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)))
    for x, y in zip(a, b, strict=True):
        m[index[x], index[y]] += 1
    n = m.sum()
    po = np.trace(m) / n
    pe = float((m.sum(axis=0) * m.sum(axis=1)).sum() / (n * n))
    if pe >= 1.0:
        return 1.0 if po >= 1.0 else 0.0
    return float((po - pe) / (1 - pe))


def psi(reference: FloatArray, actual: FloatArray, bins: int = 10, eps: float = 1e-4) -> float:
    """Population stability index of `actual` against `reference`, quantile bins of the latter."""
    reference = np.asarray(reference, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if reference.size == 0 or actual.size == 0:
        return float("nan")
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if edges.size < 2:  # constant reference: two bins, "equal to it" and "not"
        share = float(np.mean(actual == edges[0]))
        p = np.array([1.0, 0.0])
        q = np.array([share, 1.0 - share])
    else:
        inner = edges[1:-1]
        p = np.bincount(np.searchsorted(inner, reference, side="right"), minlength=edges.size - 1)
        q = np.bincount(np.searchsorted(inner, actual, side="right"), minlength=edges.size - 1)
        p = p / p.sum()
        q = q / q.sum()
    p = np.clip(p, eps, None)
    q = np.clip(q, eps, None)
    return float(np.sum((q - p) * np.log(q / p)))


def categorical_psi_js(
    a: Sequence[Any], b: Sequence[Any], eps: float = 1e-4
) -> tuple[float, float]:
    """PSI and Jensen-Shannon divergence (base 2) between two label distributions."""
    labels = sorted({*a, *b}, key=repr)
    pa = np.array([sum(1 for x in a if x == lab) for lab in labels], dtype=np.float64)
    pb = np.array([sum(1 for x in b if x == lab) for lab in labels], dtype=np.float64)
    pa, pb = pa / max(pa.sum(), 1), pb / max(pb.sum(), 1)
    from scipy.spatial.distance import jensenshannon

    js = float(jensenshannon(pa, pb, base=2) ** 2) if labels else 0.0
    pa_c, pb_c = np.clip(pa, eps, None), np.clip(pb, eps, None)
    return float(np.sum((pb_c - pa_c) * np.log(pb_c / pa_c))), js


def binned_js(reference: FloatArray, actual: FloatArray, bins: int = 20) -> float:
    from scipy.spatial.distance import jensenshannon

    both = np.concatenate([reference, actual])
    edges = np.unique(np.quantile(both, np.linspace(0, 1, bins + 1)))
    if edges.size < 2:
        return 0.0
    p, _ = np.histogram(reference, edges)
    q, _ = np.histogram(actual, edges)
    return float(jensenshannon(p / p.sum(), q / q.sum(), base=2) ** 2)


# --- latency -----------------------------------------------------------------------------------


def bootstrap_quantile_deltas(
    base: FloatArray,
    cand: FloatArray,
    quantiles: Sequence[float],
    *,
    paired: bool,
    resamples: int,
    alpha: float,
    rng: np.random.Generator,
) -> dict[float, tuple[float, float, float]]:
    """Relative delta (cand/base - 1) per quantile: (point, low, high), percentile bootstrap.

    Paired: the same request indices are drawn for both sides, keeping their shared noise.
    """
    qs = np.asarray(quantiles)
    point_b = np.quantile(base, qs)
    point_c = np.quantile(cand, qs)
    ib = rng.integers(0, base.size, size=(resamples, base.size))
    ic = ib if paired else rng.integers(0, cand.size, size=(resamples, cand.size))
    boot_b = np.quantile(base[ib], qs, axis=1)  # (len(qs), resamples)
    boot_c = np.quantile(cand[ic], qs, axis=1)
    rel = boot_c / np.where(boot_b > 0, boot_b, np.nan) - 1
    lo = np.nanquantile(rel, alpha / 2, axis=1)
    hi = np.nanquantile(rel, 1 - alpha / 2, axis=1)
    out = {}
    for k, q in enumerate(quantiles):
        pt = float(point_c[k] / point_b[k] - 1) if point_b[k] > 0 else float("nan")
        out[float(q)] = (pt, float(lo[k]), float(hi[k]))
    return out


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


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
            failed.append(f"{label} {_pct(pt)} [CI {_pct(lo)}, {_pct(hi)}]")
        elif not hi < t.latency_max_unresolved:
            unresolved.append(f"{label} CI up to {_pct(hi)}")
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
    summary = ", ".join(
        f"p{round(q * 100):d} {_pct(deltas[float(q)][0])}" for q in t.gate_quantiles
    )
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


def _flatten_pairs(base: Side, cand: Side) -> tuple[list[Any], list[Any], int]:
    """Per-row predictions of requests both sides answered with the same number of rows."""
    a: list[Any] = []
    b: list[Any] = []
    skipped = 0
    if base.outputs is None or cand.outputs is None:
        return a, b, 0
    for i, (x, y) in enumerate(zip(base.outputs, cand.outputs, strict=False)):
        if base.error[i] or cand.error[i] or x is None or y is None:
            skipped += 1
            continue
        xs = x if isinstance(x, list) else [x]
        ys = y if isinstance(y, list) else [y]
        if len(xs) != len(ys):
            skipped += 1
            continue
        a.extend(_hashable(v) for v in xs)
        b.extend(_hashable(v) for v in ys)
    return a, b, skipped


def _hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    return v


def output_kind(values: Sequence[Any]) -> Literal["classification", "regression", "none"]:
    if not values:
        return "none"
    sample = values[:1000]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in sample)
    if numeric and any(isinstance(v, float) and not v.is_integer() for v in sample):
        return "regression"
    return "classification"


def output_checks(base: Side, cand: Side, t: Thresholds) -> list[CheckResult]:
    a, b, skipped = _flatten_pairs(base, cand)
    kind = output_kind(a + b)
    if kind == "none":
        return [
            CheckResult(
                name="outputs",
                status="info",
                gating=False,
                reason="no paired outputs to compare",
                figures={"skipped_requests": skipped},
            )
        ]
    if kind == "classification":
        return [_classification_check(a, b, skipped, t), _class_shift_check(a, b, t)]
    return [_regression_check(a, b, skipped, t), _numeric_shift_check(a, b, t)]


def _classification_check(a: list[Any], b: list[Any], skipped: int, t: Thresholds) -> CheckResult:
    n = len(a)
    same = sum(1 for x, y in zip(a, b, strict=True) if x == y)
    lo, hi = wilson_interval(same, n, t.alpha)
    labels = sorted({*a, *b}, key=repr)
    flips = {
        f"{x}->{y}": sum(1 for p, q in zip(a, b, strict=True) if p == x and q == y)
        for x in labels
        for y in labels
    }
    figures = {
        "rows": n,
        "skipped_requests": skipped,
        "agreement": same / n,
        "agreement_ci": (lo, hi),
        "cohen_kappa": cohen_kappa(a, b),
        "labels": [str(x) for x in labels],
        "flip_matrix": flips,
    }
    if t.min_agreement is not None:  # the smallest flip rate caught with probability t.power
        figures["mde_flip_rate"] = rate_mde(1 - t.min_agreement, n, t.alpha, t.power)
    gating = t.min_agreement is not None
    if t.min_agreement is None:
        status: Status = "info"
        reason = f"agreement {same / n:.2%} (not gated)"
    elif hi < t.min_agreement:
        status, reason = (
            "fail",
            (
                f"agreement {same / n:.2%} [CI {lo:.2%}, {hi:.2%}] is below {t.min_agreement:.2%}; "
                f"{n - same} of {n} predictions flipped"
            ),
        )
    elif lo >= t.min_agreement:
        status, reason = "pass", f"agreement {same / n:.2%} [CI {lo:.2%}, {hi:.2%}]"
    else:
        status, reason = (
            "inconclusive",
            (f"agreement {same / n:.2%} [CI {lo:.2%}, {hi:.2%}] straddles {t.min_agreement:.2%}"),
        )
    return CheckResult(
        name="agreement", status=status, gating=gating, reason=reason, figures=figures
    )


def _class_shift_check(a: list[Any], b: list[Any], t: Thresholds) -> CheckResult:
    p, js = categorical_psi_js(a, b)
    return _shift_result(p, js, t)


def _shift_result(p: float, js: float, t: Thresholds) -> CheckResult:
    figures = {"psi": p, "js_divergence": js}
    if t.max_output_psi is None:
        return CheckResult(
            name="output_shift", status="info", gating=False,
            reason=f"PSI {p:.3f}, JS {js:.3f} (not gated)", figures=figures,
        )  # fmt: skip
    if p > t.max_output_psi:
        return CheckResult(
            name="output_shift",
            status="fail",
            reason=f"output distribution shifted: PSI {p:.3f} > {t.max_output_psi}",
            figures=figures,
        )
    return CheckResult(
        name="output_shift", status="pass", reason=f"PSI {p:.3f}, JS {js:.3f}", figures=figures
    )


def _regression_check(a: list[Any], b: list[Any], skipped: int, t: Thresholds) -> CheckResult:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    diff = y - x
    outside = ~np.isclose(y, x, rtol=t.regression_rel_tol, atol=t.regression_abs_tol)
    k, n = int(outside.sum()), int(x.size)
    lo, hi = wilson_interval(k, n, t.alpha)
    figures = {
        "rows": n,
        "skipped_requests": skipped,
        "out_of_tolerance": k / n,
        "out_of_tolerance_ci": (lo, hi),
        "mean_diff": float(diff.mean()),
        "max_abs_diff": float(np.abs(diff).max()),
        "abs_tol": t.regression_abs_tol,
        "rel_tol": t.regression_rel_tol,
    }
    limit = t.max_out_of_tolerance
    if limit is None:
        return CheckResult(
            name="regression_diff", status="info", gating=False,
            reason=f"{k / n:.2%} outside tolerance (not gated)", figures=figures,
        )  # fmt: skip
    if lo > limit:
        status: Status = "fail"
    elif hi <= limit:
        status = "pass"
    else:
        status = "inconclusive"
    return CheckResult(
        name="regression_diff",
        status=status,
        reason=f"{k / n:.2%} [CI {lo:.2%}, {hi:.2%}] of outputs outside tolerance "
        f"(limit {limit:.2%}); max |diff| {figures['max_abs_diff']:.3g}",
        figures=figures,
    )


def _numeric_shift_check(a: list[Any], b: list[Any], t: Thresholds) -> CheckResult:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    return _shift_result(psi(x, y), binned_js(x, y), t)


# --- inputs ------------------------------------------------------------------------------------


def input_drift_check(
    reference: dict[str, FloatArray], replayed: dict[str, FloatArray], t: Thresholds
) -> CheckResult:
    """PSI and KS per feature of the replayed inputs against a reference (e.g. training data)."""
    per: dict[str, dict[str, float]] = {}
    for name, ref in reference.items():
        if name not in replayed or replayed[name].size == 0:
            continue
        cur = replayed[name]
        ks = stats.ks_2samp(cur, ref)
        per[name] = {
            "psi": psi(ref, cur),
            "ks_statistic": float(ks.statistic),
            "ks_p_value": float(ks.pvalue),
        }
    if not per:
        return CheckResult(
            name="input_drift", status="info", gating=False, reason="no features to compare"
        )
    worst = max(per, key=lambda k: per[k]["psi"])
    worst_psi = per[worst]["psi"]
    figures: dict[str, Any] = {"features": per, "worst_feature": worst, "worst_psi": worst_psi}
    if t.max_input_psi is None:
        return CheckResult(
            name="input_drift",
            status="info",
            gating=False,
            reason=f"largest drift {worst} PSI {worst_psi:.3f} (not gated)",
            figures=figures,
        )
    drifted = sorted(k for k, v in per.items() if v["psi"] > t.max_input_psi)
    if drifted:
        return CheckResult(
            name="input_drift",
            status="fail",
            reason=f"{len(drifted)} feature(s) drifted beyond PSI {t.max_input_psi}: "
            + ", ".join(drifted[:5]),
            figures=figures,
        )
    return CheckResult(
        name="input_drift",
        status="pass",
        reason=f"largest drift {worst} PSI {worst_psi:.3f}",
        figures=figures,
    )


def dataframe_split_features(bodies: Sequence[Any]) -> dict[str, FloatArray]:
    """Numeric columns of MLflow `dataframe_split` request bodies, concatenated."""
    cols: dict[str, list[float]] = {}
    for body in bodies:
        split = body.get("dataframe_split") if isinstance(body, dict) else None
        if not isinstance(split, dict):
            continue
        names = split.get("columns") or []
        for row in split.get("data") or []:
            for name, v in zip(names, row, strict=False):
                if isinstance(v, int | float) and not isinstance(v, bool):
                    cols.setdefault(str(name), []).append(float(v))
    return {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}


# --- replay validity and verdict ---------------------------------------------------------------


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

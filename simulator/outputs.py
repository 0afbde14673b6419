"""The output checks: agreement of predictions (classification: flips, kappa, class shift;
regression: error and shift), pairing each request's rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from simulator.checks import CheckResult, Side, Status, Thresholds
from simulator.power import rate_mde
from simulator.stats import binned_js, categorical_psi_js, cohen_kappa, psi, wilson_interval


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

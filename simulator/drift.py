"""Input drift of the replayed traffic against a reference (PSI and KS per numeric feature)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from simulator.checks import CheckResult, Thresholds
from simulator.stats import FloatArray, psi


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

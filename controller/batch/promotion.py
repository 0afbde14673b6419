"""The promotion check: when a run's model version changed since the last committed run, both
versions score a sample of the input and are compared before anything is written."""

from __future__ import annotations

import time
from typing import Any

from controller.batch.request import RunRequest, RunResult
from controller.batch.scoring import load_model, score
from controller.batch.storage import head


def agreement(old: Any, new: Any, tolerance: float) -> float:
    """Share of rows whose two predictions agree (numbers within `tolerance`)."""
    import numpy as np

    a, b = np.asarray(old), np.asarray(new)
    if len(a) == 0:
        return 1.0
    if np.issubdtype(a.dtype, np.number) and np.issubdtype(b.dtype, np.number):
        same = np.abs(a.astype(float) - b.astype(float)) <= tolerance
    else:
        same = a == b
    return float(np.mean(same))


def promotion_check(request: RunRequest) -> RunResult | None:
    """Score the head of the input with the previous and the new version and compare them with
    the simulator's output checks; a rejection, or None when the version did not change.
    Rejected below `min_agreement` (the share of the sample that agrees) or when a gating check
    fails (e.g. the output distribution shifted)."""
    if request.previous_model_uri in (None, request.model_uri):
        return None
    assert request.previous_model_uri is not None
    sample = head(request.input.uri, request.input.format, request.promotion.sample_rows)
    timed: dict[str, tuple[Any, float]] = {}
    for side, uri in (("new", request.model_uri), ("previous", request.previous_model_uri)):
        model = load_model(uri, request.tracking_uri)
        began = time.perf_counter()
        scored = score(model, sample, request.input.columns, request.output)
        timed[side] = (scored[request.output.prediction_column], time.perf_counter() - began)
    (old, old_s), (new, new_s) = timed["previous"], timed["new"]
    share = agreement(old, new, request.promotion.tolerance)
    comparison = compare(old, new, request.promotion)
    rows = max(1, len(sample))
    comparison["us_per_row"] = {"previous": old_s / rows * 1e6, "new": new_s / rows * 1e6}
    failed = [c["reason"] for c in comparison["checks"] if c["gating"] and c["status"] == "fail"]
    if share < request.promotion.min_agreement or failed:
        why = "; ".join(failed) or f"below the {request.promotion.min_agreement:.1%} required"
        return RunResult(
            status="rejected",
            agreement=share,
            comparison=comparison,
            message=f"{request.model_uri} agrees with {request.previous_model_uri} on "
            f"{share:.1%} of {len(sample)} sampled rows: {why}; nothing written, the previous "
            "version stays",
        )
    return RunResult(status="succeeded", agreement=share, comparison=comparison)


MAX_FLIPS_SHOWN = 50


def compare(old: Any, new: Any, promotion: Any) -> dict[str, Any]:
    """The simulator's output checks (simulator/outputs.py) on two columns of predictions, one
    row per paired request: for labels agreement with its Wilson interval, Cohen's kappa, the
    flip matrix and the class shift (PSI, JS); for numbers the share outside `tolerance` and
    the shift. Thresholds in the simulator's format, from the spec's `promotion`."""
    import numpy as np

    a, b = np.asarray(old).tolist(), np.asarray(new).tolist()
    try:  # the simulator needs SciPy, which a node with serveops[serving] only may lack
        from simulator.checks import Side, Thresholds
        from simulator.outputs import output_checks
    except ImportError as err:
        return {"rows": len(a), "checks": [], "note": f"agreement only: {err}"}
    zeros = np.zeros(len(a))
    thresholds = Thresholds(
        min_agreement=promotion.min_agreement,
        regression_abs_tol=promotion.tolerance,
        regression_rel_tol=0.0,
        max_out_of_tolerance=1 - promotion.min_agreement,
    )
    sides = [Side(zeros, zeros.astype(bool), outputs=[[v] for v in values]) for values in (a, b)]
    checks = []
    for check in output_checks(sides[0], sides[1], thresholds):
        figures = dict(check.figures)
        if "flip_matrix" in figures:  # only the cells that happened, most frequent first
            cells = sorted(((v, k) for k, v in figures["flip_matrix"].items() if v), reverse=True)
            figures["flip_matrix"] = {k: v for v, k in cells[:MAX_FLIPS_SHOWN]}
        figures.pop("labels", None)
        checks.append(
            {"name": check.name, "status": check.status, "gating": check.gating,
             "reason": check.reason, "figures": figures}
        )  # fmt: skip
    return {"rows": len(a), "checks": checks}

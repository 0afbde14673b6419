"""From a replay to a decision: per-side arrays, the checks, and the report model; it is written out
by report_files.py (report_markdown.py, report_html.py draw it).

report.json is a `SimulationReport`; the policy engine reads it as a plain dict, so its top level
stays flat and stable: `verdict`, `reason`, `checks` (each with `name`, `status`, `gating`,
`reason`, `figures`), `replay`, `sides`, `thresholds`, `meta`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from simulator.checks import CheckResult, Side, Thresholds, Verdict
from simulator.compare import compare, replay_validity_check, verdict
from simulator.drift import dataframe_split_features
from simulator.sequential import with_sequential
from simulator.stats import FloatArray
from simulator.traffic import TrafficHeader, TrafficRecord

REPORT_FORMAT = "serveops-simulation-report/v1"


class ReplaySummary(BaseModel):
    targets: dict[str, str]
    paired: bool
    speed: float
    scheduled: int
    duration_s: float
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    dropped: dict[str, int]
    timed_out: dict[str, int]
    valid: bool
    problems: list[str] = Field(default_factory=list)
    stopped_early: dict[str, Any] | None = Field(
        default=None, description="Where the sequential judge stopped the replay, if it did."
    )


class SideSummary(BaseModel):
    requests: int
    errors: int
    error_rate: float
    censored: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    versions: dict[str, int] = Field(default_factory=dict)


class SimulationReport(BaseModel):
    format: str = REPORT_FORMAT
    verdict: Verdict
    reason: str
    checks: list[CheckResult]
    replay: ReplaySummary | None = None
    sides: dict[str, SideSummary] = Field(default_factory=dict)
    thresholds: Thresholds
    threshold_sources: dict[str, str] = Field(
        default_factory=dict,
        description="Where each threshold came from: `default`, `policy file <path>`, or "
        "`<deployment file>@<base revision>: spec.<field>`.",
    )
    passed: bool = Field(
        default=False, description="verdict == pass; what the starter policy rule reads."
    )
    meta: dict[str, Any] = Field(default_factory=dict)
    generated_at: float = Field(default_factory=time.time)


# --- from outcomes to sides --------------------------------------------------------------------


def predictions_of(body: Any) -> Any:
    """MLflow scoring responses: {"predictions": [...]} (or a bare list)."""
    if isinstance(body, dict) and "predictions" in body:
        return body["predictions"]
    if isinstance(body, list):
        return body
    return None


def aligned_sides(
    outcomes: list[Any], names: list[str], paired: bool
) -> tuple[dict[str, Side], dict[str, dict[str, int]], list[str]]:
    """Per-target `Side`s; when paired, only requests every target answered or failed on
    (not dropped), in the same order. Returns the sides, the versions seen, and the ids used."""
    by: dict[str, dict[str, Any]] = {n: {} for n in names}
    ids: list[str] = []
    for o in outcomes:
        if o.target in by and not o.dropped:
            if o.id not in by[o.target] and o.target == names[0]:
                ids.append(o.id)
            by[o.target][o.id] = o
    if paired:
        ids = [i for i in ids if all(i in by[n] for n in names)]
    sides: dict[str, Side] = {}
    versions: dict[str, dict[str, int]] = {}
    for n in names:
        chosen = [by[n][i] for i in ids] if paired else list(by[n].values())
        lat = np.array([o.latency_ms if o.latency_ms is not None else np.nan for o in chosen])
        sides[n] = Side(
            latency_ms=lat,
            error=np.array([o.failed for o in chosen], dtype=bool),
            censored=np.array([o.timed_out for o in chosen], dtype=bool),
            outputs=[predictions_of(o.body) for o in chosen],
        )
        counts: dict[str, int] = {}
        for o in chosen:
            if o.version is not None:
                counts[o.version] = counts.get(o.version, 0) + 1
        versions[n] = counts
    return sides, versions, ids


def side_summary(side: Side, versions: dict[str, int]) -> SideSummary:
    lat = side.latency_ms[~np.isnan(side.latency_ms)]
    q = np.quantile(lat, [0.5, 0.95, 0.99]) if lat.size else np.zeros(3)
    return SideSummary(
        requests=side.n,
        errors=int(side.error.sum()),
        error_rate=float(side.error.mean()) if side.n else 0.0,
        censored=int(side.censored.sum()),
        p50_ms=float(q[0]),
        p95_ms=float(q[1]),
        p99_ms=float(q[2]),
        versions=versions,
    )


def reference_features() -> dict[str, FloatArray]:
    """The breast cancer data set the demo models were trained on, per feature."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).data
    return {str(c): frame[c].to_numpy(dtype=np.float64) for c in frame.columns}


def build_report(
    result: Any,
    records: list[TrafficRecord],
    thresholds: Thresholds | None = None,
    *,
    threshold_sources: dict[str, str] | None = None,
    baseline: str = "baseline",
    candidate: str = "candidate",
    noise: str | None = None,
    reference_inputs: dict[str, FloatArray] | None = None,
    header: TrafficHeader | None = None,
    meta: dict[str, Any] | None = None,
) -> tuple[SimulationReport, dict[str, Side]]:
    """Compare `candidate` with `baseline` in a `ReplayResult` and decide; also the sides."""
    t = thresholds or Thresholds()
    names = [baseline, candidate] + ([noise] if noise else [])
    sides, versions, ids = aligned_sides(result.outcomes, names, result.paired)
    for s in sides.values():  # a request with no end time counts as the slowest seen
        if np.isnan(s.latency_ms).any():
            worst = float(np.nanmax(s.latency_ms)) if np.isfinite(s.latency_ms).any() else 0.0
            s.latency_ms = np.where(np.isnan(s.latency_ms), worst, s.latency_ms)
            s.censored = s.censored | np.isnan(s.latency_ms)
    used = set(ids)
    bodies = [r.body for r in records if r.id in used]
    checks = [
        replay_validity_check(
            result.lag_p99_ms, sum(result.dropped.values()), result.scheduled * len(names), t
        ),
        *compare(
            sides[baseline],
            sides[candidate],
            t,
            paired=result.paired,
            noise_floor=sides[noise] if noise else None,
            reference_inputs=reference_inputs,
            replayed_inputs=dataframe_split_features(bodies) if reference_inputs else None,
        ),
    ]
    if result.paired:
        checks = with_sequential(
            checks, sides[baseline], sides[candidate], t,
            noise_floor=sides[noise] if noise else None,
            replay_stopped=getattr(result, "stopped_early", None),
        )  # fmt: skip
    v, reason = verdict(checks)
    m = dict(meta or {})
    if header is not None:
        m["traffic_source"] = header.source
        m["traffic_license"] = header.license
        m["attribution"] = header.attribution
    report = SimulationReport(
        verdict=v,
        reason=reason,
        checks=checks,
        replay=ReplaySummary(
            targets=result.targets,
            paired=result.paired,
            speed=result.speed,
            scheduled=result.scheduled,
            duration_s=result.duration_s,
            lag_p50_ms=result.lag_p50_ms,
            lag_p99_ms=result.lag_p99_ms,
            lag_max_ms=result.lag_max_ms,
            dropped=result.dropped,
            timed_out=result.timed_out,
            valid=result.valid,
            problems=result.problems,
            stopped_early=getattr(result, "stopped_early", None),
        ),
        sides={n: side_summary(sides[n], versions[n]) for n in names},
        thresholds=t,
        threshold_sources=threshold_sources
        or {name: "default" for name in Thresholds.model_fields},
        passed=v == "pass",
        meta=m,
    )
    return report, sides

"""From a replay to a decision: per-side arrays, the checks, and report.json / .md / .html.

report.json is a `SimulationReport`; the policy engine reads it as a plain dict, so its top level
stays flat and stable: `verdict`, `reason`, `checks` (each with `name`, `status`, `gating`,
`reason`, `figures`), `replay`, `sides`, `thresholds`, `meta`.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from pathlib import Path
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


# --- writers -----------------------------------------------------------------------------------

ICON = {"pass": "✅", "fail": "❌", "inconclusive": "⚠️", "info": "💬"}


def sensitivity_line(report: SimulationReport) -> str | None:
    """One line: the smallest effects this run would catch with `thresholds.power`."""
    by = {c.name: c.figures for c in report.checks}
    parts = []
    mde = by.get("latency", {}).get("mde") or {}
    n = by.get("latency", {}).get("n_candidate")
    parts += [f"a {k} slowdown of {v:.1%}" for k, v in mde.items()]
    if "mde_flip_rate" in by.get("agreement", {}):
        parts.append(f"{by['agreement']['mde_flip_rate']:.2%} flipped predictions")
    if "mde" in by.get("errors", {}):
        parts.append(f"+{by['errors']['mde']:.2%} errors")
    if not parts:
        return None
    line = (
        f"Sensitivity: with {n} pairs this run catches, with {report.thresholds.power:.0%} "
        f"probability, {', '.join(parts)}."
    )
    lat = by.get("latency", {})
    if "block_chance_at_half_tolerance" in lat:
        tol = lat.get("effective_tolerance", report.thresholds.latency_tolerance)
        line += (
            f" A candidate {tol / 2:.1%} slower (half the tolerance) would be blocked "
            f"{lat['block_chance_at_half_tolerance']:.0%} of the time."
        )
    seq = by.get("sequential")
    if seq:
        line += (
            f" Sequential judge: {seq['decision']} at {seq['n_used']} of {seq['n_available']} "
            "pairs."
        )
    return line


def to_markdown(report: SimulationReport) -> str:
    lines = [
        f"## Simulation: {ICON[report.verdict]} {report.verdict.upper()}",
        "",
        report.reason,
        "",
    ]
    sensitivity = sensitivity_line(report)
    if sensitivity:
        lines += [sensitivity, ""]
    if report.meta.get("base") or report.meta.get("head"):
        lines += [
            f"Baseline `{report.meta.get('base')}` vs candidate `{report.meta.get('head')}`",
            "",
        ]
    if report.sides:
        lines += [
            "| side | requests | errors | p50 ms | p95 ms | p99 ms | versions |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for name, s in report.sides.items():
            vers = ", ".join(f"{k}: {v}" for k, v in s.versions.items())
            lines.append(
                f"| {name} | {s.requests} | {s.errors} ({s.error_rate:.2%}) | {s.p50_ms:.2f} | "
                f"{s.p95_ms:.2f} | {s.p99_ms:.2f} | {vers} |"
            )
        lines.append("")
    lines += ["| check | status | gating | reason |", "|---|---|---|---|"]
    for c in report.checks:
        reason = c.reason.replace("|", "\\|")
        lines.append(
            f"| {c.name} | {ICON[c.status]} {c.status} | {'yes' if c.gating else 'no'} | {reason} |"
        )
    lines.append("")
    if report.replay is not None:
        r = report.replay
        lines += [
            f"Replay: {r.scheduled} requests at {r.speed:g}x in {r.duration_s:.1f}s, "
            f"{'paired' if r.paired else 'single target'}; generator lag p50 "
            f"{r.lag_p50_ms:.2f} ms, p99 {r.lag_p99_ms:.2f} ms, max {r.lag_max_ms:.1f} ms; "
            f"dropped {sum(r.dropped.values())}, timed out {sum(r.timed_out.values())}.",
            "",
        ]
    lines += _thresholds_markdown(report)
    for a in report.meta.get("attribution") or []:
        lines += [f"<sub>Traffic: {a}</sub>", ""]
    return "\n".join(lines)


def threshold_rows(report: SimulationReport) -> list[tuple[str, str, str]]:
    """(threshold, value, where it came from), those set somewhere other than the defaults
    first."""
    values = report.thresholds.model_dump()
    rows = [
        (name, json.dumps(values[name]), report.threshold_sources.get(name, "default"))
        for name in values
    ]
    return sorted(rows, key=lambda r: r[2] == "default")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _thresholds_markdown(report: SimulationReport) -> list[str]:
    rows = threshold_rows(report)
    changed = sum(1 for r in rows if r[2] != "default")
    lines = [
        f"<details><summary>Thresholds ({changed} set by the spec or a policy, "
        f"{len(rows) - changed} defaults)</summary>",
        "",
        "| threshold | value | from |",
        "|---|---|---|",
    ]
    lines += [f"| `{n}` | {v} | {_cell(src)} |" for n, v, src in rows]
    return [*lines, "", "</details>", ""]


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def to_html(report: SimulationReport, sides: dict[str, Side] | None = None) -> str:
    """A self-contained page: the markdown's facts plus plots as embedded PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images: list[tuple[str, str]] = []
    if sides:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for name, s in sides.items():
            x = np.sort(s.latency_ms)
            ax.plot(x, np.arange(1, x.size + 1) / max(x.size, 1), label=name)
        ax.set_xscale("log")
        ax.set_xlabel("latency from intended send time (ms)")
        ax.set_ylabel("share of requests")
        ax.legend()
        ax.grid(alpha=0.3)
        images.append(("Latency CDF", _png(fig)))
        plt.close(fig)
    for c in report.checks:
        if c.name == "agreement" and c.figures.get("flip_matrix"):
            labels = c.figures["labels"]
            m = np.array([[c.figures["flip_matrix"][f"{a}->{b}"] for b in labels] for a in labels])
            fig, ax = plt.subplots(figsize=(3.5, 3))
            ax.imshow(m, cmap="Blues")
            for i in range(len(labels)):
                for j in range(len(labels)):
                    ax.text(j, i, str(m[i, j]), ha="center", va="center")
            ax.set_xticks(range(len(labels)), labels)
            ax.set_yticks(range(len(labels)), labels)
            ax.set_xlabel("candidate")
            ax.set_ylabel("baseline")
            images.append(("Agreement (flip matrix)", _png(fig)))
            plt.close(fig)
        if c.name == "input_drift" and c.figures.get("features"):
            feats = c.figures["features"]
            names = sorted(feats, key=lambda k: feats[k]["psi"], reverse=True)[:15]
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.barh(names[::-1], [feats[k]["psi"] for k in names[::-1]])
            ax.set_xlabel("PSI vs reference")
            images.append(("Input drift per feature", _png(fig)))
            plt.close(fig)
    rows = "".join(
        f"<tr><td>{html.escape(c.name)}</td><td>{ICON[c.status]} {c.status}</td>"
        f"<td>{'yes' if c.gating else 'no'}</td><td>{html.escape(c.reason)}</td></tr>"
        for c in report.checks
    )
    imgs = "".join(
        f'<h3>{html.escape(t)}</h3><img src="data:image/png;base64,{b64}" alt="{html.escape(t)}">'
        for t, b64 in images
    )
    thresholds = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{html.escape(v)}</td><td>{html.escape(src)}</td></tr>"
        for n, v, src in threshold_rows(report)
    )
    attribution = "".join(
        f"<p><small>Traffic: {html.escape(a)}</small></p>"
        for a in report.meta.get("attribution") or []
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>serveops simulation</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "td,th{border:1px solid #ccc;padding:4px 8px}table{border-collapse:collapse}</style>"
        f"</head><body><h1>Simulation: {ICON[report.verdict]} {report.verdict}</h1>"
        f"<p>{html.escape(report.reason)}</p><table><tr><th>check</th><th>status</th>"
        f"<th>gating</th><th>reason</th></tr>{rows}</table>{imgs}"
        "<h3>Thresholds</h3><table><tr><th>threshold</th><th>value</th><th>from</th></tr>"
        f"{thresholds}</table>"
        f"<h3>report.json</h3><pre>{html.escape(report.model_dump_json(indent=2)[:20000])}</pre>"
        f"{attribution}</body></html>"
    )


def write_reports(
    report: SimulationReport,
    out_dir: Path,
    *,
    sides: dict[str, Side] | None = None,
    outcomes: list[Any] | None = None,
    html_report: bool = True,
) -> list[Path]:
    """report.json, report.md, report.html (plots) and outcomes.jsonl (raw latencies)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "report.json", out_dir / "report.md"]
    written[0].write_text(report.model_dump_json(indent=2) + "\n")
    written[1].write_text(to_markdown(report) + "\n")
    if html_report:
        path = out_dir / "report.html"
        path.write_text(to_html(report, sides))
        written.append(path)
    if outcomes is not None:
        path = out_dir / "outcomes.jsonl"
        with path.open("w") as f:
            for o in outcomes:
                f.write(json.dumps(o.model_dump(exclude={"body"})) + "\n")
        written.append(path)
    return written

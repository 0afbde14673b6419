"""report.md: a simulation report as GitHub markdown (the PR comment), with the run's sensitivity
and the thresholds it was judged by."""

from __future__ import annotations

import json

from simulator.report import SimulationReport

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

"""A drift report as one self-contained HTML page: no script, no stylesheet or font from a CDN.

Per feature (worst first): the figures and flags, and the reference's share per PSI bin next
to the window's, as inline SVG bars; with history, each worst feature's PSI over the windows.
Feature names and messages come from recorded data and Git: every text is HTML-escaped.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

from controller.monitor.drift_report import DriftReport, FeatureDrift

MAX_HISTOGRAMS = 100  # features drawn; the table lists them all
MAX_TRENDS = 5  # worst features whose PSI over time is drawn
KEEP_FILES = 200  # per deployment in a report directory
_W, _H = 360, 120  # one histogram
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left}.drift{color:#b00}.ok{color:#070}
.feature{display:inline-block;margin:0 1.5em 1.5em 0;vertical-align:top}
.ref{fill:#8aa8c8}.win{fill:#d9823b}.line{fill:none;stroke:#d9823b;stroke-width:2}
.limit{stroke:#b00;stroke-dasharray:4 3}small{color:#666}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(x: float, spec: str = ".3f") -> str:
    return format(x, spec) if math.isfinite(x) else "-"


def render_report(report: DriftReport, history: Sequence[DriftReport] = ()) -> str:
    """The page for `report`; `history`: earlier reports of the same deployment (any order)."""
    title = f"{report.environment}/{report.deployment} v{report.version or '?'}"
    window = f"{report.window_start:%Y-%m-%d %H:%M} - {report.window_end:%Y-%m-%d %H:%M} UTC"
    worst = report.worst(len(report.features))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>serveops drift: {_e(title)} {_e(window)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}: <span class={_e(_cls(report))}>{_e(report.status)}</span></h1>",
        "<p>",
        f"Window {_e(window)}, {report.rows} rows. {_e(report.message)}<br>",
        f"<small>Reference: {_e(report.reference or '-')}; revision "
        f"{_e((report.commit or '-')[:12])}"
        + (f"; judged {_e(report.computed_at.isoformat())}" if report.computed_at else "")
        + "</small></p>",
    ]
    for key in ("prediction_skipped", "schema_skipped"):
        if report.extra.get(key):
            parts.append(f"<p>{_e(report.extra[key])}</p>")
    parts.append(_schema(report.extra.get("schema")))
    parts.append(_quality(report.extra.get("quality")))
    if report.truncated:
        parts.append(f"<p>Read stopped: {_e(report.truncated)}</p>")
    if report.problems:
        items = "".join(f"<li>{_e(p)}</li>" for p in report.problems)
        parts.append(f"<p>Skipped lines: {report.skipped_lines}</p><ul>{items}</ul>")
    if worst:
        parts.append(_table(worst))
    trend = _trends(report, history)
    if trend:
        parts.append("<h2>Drift scores over time</h2>" + trend)
    if worst:
        parts.append("<h2>Distributions (reference vs window)</h2>")
        parts.extend(_histogram(f) for f in worst[:MAX_HISTOGRAMS])
        if len(worst) > MAX_HISTOGRAMS:
            parts.append(f"<p>{len(worst) - MAX_HISTOGRAMS} more features not drawn.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _cls(report: DriftReport) -> str:
    return "drift" if report.drifted else "ok" if report.status == "ok" else ""


def _table(features: list[FeatureDrift]) -> str:
    head = (
        "<tr><th>feature</th><th>flags</th><th>PSI</th><th>KS</th><th>KS p</th><th>JS</th>"
        "<th>missing</th><th>out of range</th><th>mean (ref)</th><th>mean</th><th>rows</th></tr>"
    )
    rows = [
        f"<tr{' class=drift' if f.drifted else ''}><td>{_e(f.name)}</td>"
        f"<td>{_e(', '.join(f.flags))}</td><td>{_num(f.psi)}</td>"
        f"<td>{_num(f.ks_statistic)}</td><td>{_num(f.ks_p_value, '.2g')}</td>"
        f"<td>{_num(f.js_distance)}</td><td>{_num(f.missing_share, '.1%')}</td>"
        f"<td>{_num(f.out_of_range_share, '.1%')}</td><td>{_num(f.reference_mean, '.4g')}</td>"
        f"<td>{_num(f.mean, '.4g')}</td><td>{f.rows}</td></tr>"
        for f in features
    ]
    return f"<table>{head}{''.join(rows)}</table>"


def _histogram(f: FeatureDrift) -> str:
    """Reference and window share per PSI bin, side by side."""
    label = (
        f"<div class=feature><b>{_e(f.name)}</b> <small>PSI {_num(f.psi)}"
        f"{' - ' + _e(', '.join(f.flags)) if f.flags else ''}</small><br>"
    )
    n = len(f.reference_shares)
    if n == 0 or len(f.window_counts) != n:
        return label + "<small>no bins recorded</small></div>"
    total = sum(f.window_counts)
    window = [c / total if total else 0.0 for c in f.window_counts]
    top = max(max(f.reference_shares), max(window), 1e-9)
    slot = _W / n
    bars = []
    for i, (ref, win) in enumerate(zip(f.reference_shares, window, strict=True)):
        x = i * slot
        for cls, share, dx in (("ref", ref, 0.1), ("win", win, 0.5)):
            h = (_H - 20) * share / top
            bars.append(
                f'<rect class={cls} x="{x + slot * dx:.1f}" y="{_H - 15 - h:.1f}" '
                f'width="{slot * 0.4:.1f}" height="{h:.1f}"><title>{_e(_bin(f, i))}: '
                f"{cls} {share:.1%}</title></rect>"
            )
    lo, hi = (f.bin_edges[0], f.bin_edges[-1]) if f.bin_edges else (math.nan, math.nan)
    axis = (
        f'<text x="0" y="{_H - 2}" font-size="10">{_num(lo, ".4g")}</text>'
        f'<text x="{_W}" y="{_H - 2}" font-size="10" text-anchor="end">{_num(hi, ".4g")}</text>'
    )
    svg = (
        f'<svg width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" role="img" '
        f'aria-label="{_e(f.name)}">{"".join(bars)}{axis}</svg>'
    )
    legend = "<br><small><span style=color:#8aa8c8>&#9632;</span> reference "
    legend += "<span style=color:#d9823b>&#9632;</span> window</small>"
    return label + svg + legend + "</div>"


def _schema(schema: object) -> str:
    """The schema check's counts, with the columns named (they come from requests: escaped)."""
    if not isinstance(schema, dict):
        return ""
    cells = []
    for key in ("missing_column", "extra_column", "wrong_type"):
        names = schema.get("columns", {}).get(key, [])
        cells.append(
            f"<tr><td>{_e(key.replace('_', ' '))}</td><td>{_e(schema.get(key, 0))}</td>"
            f"<td>{_e(', '.join(map(str, names)))}</td></tr>"
        )
    share = schema.get("share", 0.0)
    head = (
        f"<h2>Schema</h2><p>{_e(schema.get('violating_rows', 0))} of {_e(schema.get('rows', 0))}"
        f" rows break the model's signature ({_num(float(share), '.2%')})</p>"
    )
    return (
        head
        + "<table><tr><th>violation</th><th>rows</th><th>columns</th></tr>"
        + "".join(cells)
        + "</table>"
    )


def _quality(quality: object) -> str:
    """Live quality of the window whose labels were due (`spec.monitoring.labels`); versions
    come from the recordings: escaped."""
    if not isinstance(quality, dict):
        return ""
    head = (
        f"<h2>Live quality</h2><p>Window {_e(quality.get('window_start'))} - "
        f"{_e(quality.get('window_end'))} (labels after {_e(quality.get('delay'))})"
    )
    if "error" in quality:
        return f"{head}: {_e(quality['error'])}</p>"
    rows = []
    for version, v in sorted((quality.get("versions") or {}).items()):
        figures = [v.get(k) for k in ("accuracy", "roc_auc", "mae")]
        cells = "".join(
            f"<td>{_num(x) if isinstance(x, int | float) else '-'}</td>" for x in figures
        )
        rows.append(f"<tr><td>{_e(version)}</td><td>{_e(v.get('task'))}</td>"
                    f"<td>{_e(v.get('joined'))}</td>{cells}</tr>")  # fmt: skip
    return (
        f"{head}: {_e(quality.get('joined', 0))} of {_e(quality.get('labels', 0))} labels "
        f"joined to {_e(quality.get('requests', 0))} requests</p>"
        "<table><tr><th>version</th><th>task</th><th>labelled rows</th><th>accuracy</th>"
        "<th>ROC AUC</th><th>MAE</th></tr>" + "".join(rows) + "</table>"
    )


def _bin(f: FeatureDrift, i: int) -> str:
    if len(f.categories) == len(f.reference_shares):
        return f.categories[i]
    if len(f.bin_edges) == len(f.reference_shares) + 1:
        return f"{f.bin_edges[i]:.4g} .. {f.bin_edges[i + 1]:.4g}"
    return f"bin {i + 1}"


def _trends(report: DriftReport, history: Sequence[DriftReport]) -> str:
    """PSI per window of the report's worst features, oldest window first."""
    reports = {r.window_end: r for r in history if r.status in ("drift", "ok")}
    reports[report.window_end] = report
    if len(reports) < 2:
        return ""
    ordered = [reports[k] for k in sorted(reports)]
    out = []
    for f in report.worst(MAX_TRENDS):
        points = [_psi_of(r, f.name) for r in ordered]
        finite = [p for p in points if math.isfinite(p)]
        if not finite:
            continue
        top = max(max(finite), 1e-9)
        step = _W / max(len(points) - 1, 1)
        coords = " ".join(
            f"{i * step:.1f},{_H - 15 - (_H - 25) * p / top:.1f}"
            for i, p in enumerate(points)
            if math.isfinite(p)
        )
        first, last = ordered[0].window_end, ordered[-1].window_end
        out.append(
            f"<div class=feature><b>{_e(f.name)}</b> <small>PSI, {len(points)} windows, "
            f"{_when(first)} - {_when(last)}</small><br>"
            f'<svg width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" role="img" '
            f'aria-label="PSI of {_e(f.name)}"><polyline class=line points="{coords}"/>'
            f'<text x="0" y="10" font-size="10">max {top:.3f}</text></svg></div>'
        )
    return "".join(out)


def _psi_of(report: DriftReport, name: str) -> float:
    for f in report.features:
        if f.name == name:
            return f.psi
    return math.nan


def _when(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M")


def report_filename(report: DriftReport) -> str:
    """`ENV--DEPLOYMENT--vVERSION--WINDOWEND.html`, with only safe characters."""
    parts = (report.environment, report.deployment, f"v{report.version or 'unknown'}")
    safe = [_SAFE.sub("_", p)[:100] for p in parts]
    return "--".join([*safe, f"{report.window_end:%Y%m%dT%H%M%SZ}"]) + ".html"


def write_report_html(
    directory: Path,
    report: DriftReport,
    history: Sequence[DriftReport] = (),
    *,
    keep: int = KEEP_FILES,
) -> Path:
    """Write the page (atomically: a reader never sees half of it) and keep the deployment's
    newest `keep` pages in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / report_filename(report)
    tmp = directory / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_text(render_report(report, history), encoding="utf-8")
    os.replace(tmp, path)
    prefix = "--".join(path.name.split("--")[:2]) + "--"
    # Names end in the window's end (a fixed-width UTC stamp): sorting by it is by time.
    mine = sorted(
        (p for p in directory.glob("*.html") if p.name.startswith(prefix)),
        key=lambda p: p.name.rsplit("--", 1)[-1],
    )
    for old in mine[: max(len(mine) - keep, 0)]:
        old.unlink(missing_ok=True)
    return path

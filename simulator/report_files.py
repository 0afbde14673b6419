"""A simulation report on disk: report.json, report.md, report.html and outcomes.jsonl."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from simulator.checks import Side
from simulator.report import SimulationReport
from simulator.report_html import to_html
from simulator.report_markdown import to_markdown


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

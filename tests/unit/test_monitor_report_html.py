"""The HTML drift report: self-contained, worst features first, histograms and trends drawn,
every text from data escaped; files named safely and kept bounded."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np

from controller.monitor.drift import ReferenceProfile, judge_window
from controller.monitor.drift_report import DriftReport
from controller.monitor.report_html import render_report, report_filename, write_report_html
from controller.spec.monitoring import DriftTests

HOSTILE = '<script>alert("x")</script>&'
START = dt.datetime(2026, 3, 1, 11, tzinfo=dt.UTC)


def report(shift: float = 1.0, hour: int = 0, version: str = "7") -> DriftReport:
    rng = np.random.default_rng(hour)
    names = ["calm", HOSTILE]
    ref = {n: rng.standard_normal(2000) for n in names}
    live = {"calm": rng.standard_normal(500), HOSTILE: rng.standard_normal(500) + shift}
    profile = ReferenceProfile.build(ref, features=None, bins=10, source="ref.csv")
    status, message, judged = judge_window(profile, live, 500, DriftTests(), 10)
    start = START + dt.timedelta(hours=hour)
    return DriftReport(
        "staging", "fraud", version, "c" * 40, start, start + dt.timedelta(hours=1), status,
        message, rows=500, features=judged, reference="ref.csv",
    )  # fmt: skip


def test_a_hostile_feature_name_is_escaped_and_nothing_is_loaded_from_elsewhere() -> None:
    page = render_report(report())
    assert "<script" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page
    assert "http://" not in page
    assert "https://" not in page
    assert page.count("<svg") == 2  # one histogram per feature
    assert page.index("&lt;script") < page.index(">calm<")  # the drifted feature first


def test_bins_survive_the_json_form_and_history_draws_trends() -> None:
    now = report(hour=3)
    again = DriftReport.from_json(now.to_json())
    assert again == now
    worst = again.worst(1)[0]
    assert len(worst.bin_edges) == len(worst.reference_shares) + 1
    assert sum(worst.window_counts) == 500
    page = render_report(now, [report(0.0, 1), report(0.5, 2)])
    assert "Drift scores over time" in page
    assert "3 windows" in page
    assert "<polyline" in page


def test_files_are_named_safely_and_kept_bounded(tmp_path: Path) -> None:
    odd = dataclasses.replace(report(), version="../../etc/x y")
    assert report_filename(odd) == "staging--fraud--v.._.._etc_x_y--20260301T120000Z.html"
    for hour in range(5):
        write_report_html(tmp_path, report(hour=hour), keep=3)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"staging--fraud--v7--20260301T{h:02d}0000Z.html" for h in (14, 15, 16)]


def test_live_quality_is_shown_with_its_window_and_hostile_versions_escaped() -> None:
    quality = {
        "window_start": "2026-03-01T09:00:00+00:00", "window_end": "2026-03-01T10:00:00+00:00",
        "delay": "2h", "labels": 500, "joined": 400, "requests": 900,
        "versions": {
            "7": {"task": "classification", "joined": 390, "accuracy": 0.75, "roc_auc": 0.8},
            "<script>x</script>": {"task": "regression", "joined": 10, "mae": 1.5},
        },
    }  # fmt: skip
    page = render_report(dataclasses.replace(report(), extra={"quality": quality}))
    assert "<h2>Live quality</h2><p>Window 2026-03-01T09:00:00+00:00 - " in page
    assert "(labels after 2h): 400 of 500 labels joined to 900 requests" in page
    assert (
        "<td>7</td><td>classification</td><td>390</td><td>0.750</td><td>0.800</td><td>-</td>"
        in (page)
    )
    assert "<script>x" not in page
    assert "&lt;script&gt;x&lt;/script&gt;</td><td>regression</td><td>10</td><td>-</td>" in page
    failed = dataclasses.replace(report(), extra={"quality": {**quality, "error": "no <dir>"}})
    assert "(labels after 2h): no &lt;dir&gt;</p>" in render_report(failed)

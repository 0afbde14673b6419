"""simulator.report and its writers: outcomes to aligned sides, the report model, the files (no Locust)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from simulator.checks import Thresholds
from simulator.report import aligned_sides, build_report, reference_features
from simulator.report_files import write_reports
from simulator.results import Outcome, ReplayResult
from simulator.traffic import PayloadSource, TrafficHeader, TrafficRecord


def _fake_result(
    n: int, slowdown: float, flip_every: int = 0
) -> tuple[ReplayResult, list[TrafficRecord]]:
    """A ReplayResult as the replay would build it, made up (no HTTP)."""
    rng = np.random.default_rng(0)
    payloads = PayloadSource(seed=1)
    records, outcomes = [], []
    for i in range(n):
        rid = f"r{i}"
        records.append(
            TrafficRecord(id=rid, ts=1000.0 + i * 0.1, route="/m", body=payloads.body(1))
        )
        shared = float(rng.lognormal(np.log(10), 0.4))
        label = i % 2
        for target, factor, version in (("baseline", 1.0, "1"), ("candidate", 1 + slowdown, "2")):
            lat = shared * float(rng.lognormal(0, 0.2)) * factor
            pred = (
                1 - label if target == "candidate" and flip_every and i % flip_every == 0 else label
            )
            outcomes.append(
                Outcome(
                    id=rid, target=target, intended=i * 0.1, sent=i * 0.1 + 0.0002,
                    done=i * 0.1 + lat / 1000, status=200, latency_ms=lat, version=version,
                    body={"predictions": [pred]},
                )
            )  # fmt: skip
    # One dropped candidate request: the pair is left out of the paired comparison.
    outcomes[-1] = outcomes[-1].model_copy(update={"dropped": True, "status": None, "body": None})
    result = ReplayResult(
        targets={"baseline": "http://b", "candidate": "http://c"},
        paired=True,
        speed=1.0,
        scheduled=n,
        started_at=0.0,
        duration_s=n * 0.1,
        dropped={"baseline": 0, "candidate": 1},
        timed_out={"baseline": 0, "candidate": 0},
        lag_p50_ms=0.2,
        lag_p99_ms=0.9,
        lag_max_ms=2.0,
        valid=True,
        outcomes=outcomes,
    )
    return result, records


def test_aligned_sides_pair_by_id_and_skip_dropped() -> None:
    result, _ = _fake_result(300, 0.0)
    sides, versions, ids = aligned_sides(result.outcomes, ["baseline", "candidate"], True)
    assert len(ids) == 299
    assert sides["baseline"].n == sides["candidate"].n == 299
    assert versions == {"baseline": {"1": 299}, "candidate": {"2": 299}}
    assert sides["baseline"].outputs is not None
    assert sides["baseline"].outputs[1] == [1]


def test_report_passes_an_equal_candidate_and_writes_all_files(tmp_path: Path) -> None:
    result, records = _fake_result(400, 0.0)
    header = TrafficHeader(attribution=["Some Trace, CC-BY-4.0"])
    report, sides = build_report(
        result, records, header=header, meta={"base": "main", "head": "feature"}
    )
    # One dropped request makes the replay itself inconclusive under the default (no drops).
    assert report.verdict == "inconclusive"
    assert "dropped" in report.reason
    names = [c.name for c in report.checks]
    assert names[:3] == ["replay_validity", "latency", "errors"]
    assert "agreement" in names
    files = write_reports(report, tmp_path, sides=sides, outcomes=result.outcomes)
    assert {p.name for p in files} == {"report.json", "report.md", "report.html", "outcomes.jsonl"}
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["verdict"] == "inconclusive"
    assert {c["name"]: c["status"] for c in data["checks"]}["latency"] == "pass"
    assert data["meta"]["attribution"] == ["Some Trace, CC-BY-4.0"]
    md = (tmp_path / "report.md").read_text()
    assert "INCONCLUSIVE" in md
    assert "| latency |" in md
    assert "Some Trace" in md
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 2
    raw = [json.loads(line) for line in (tmp_path / "outcomes.jsonl").read_text().splitlines()]
    assert len(raw) == 800
    assert isinstance(raw[0]["latency_ms"], float)


def test_report_fails_a_slow_candidate_that_flips_predictions() -> None:
    result, records = _fake_result(2000, 0.2, flip_every=25)
    report, _ = build_report(result, records, reference_inputs=reference_features())
    status = {c.name: c.status for c in report.checks}
    assert report.verdict == "fail"
    assert status["latency"] == "fail"
    assert status["agreement"] == "fail"
    drift = next(c for c in report.checks if c.name == "input_drift")
    assert not drift.gating
    # Payloads are drawn from the reference data set itself: no feature drifts much.
    assert drift.figures["worst_psi"] < 0.1


def test_report_says_what_the_run_could_see_and_where_it_could_have_stopped(
    tmp_path: Path,
) -> None:
    result, records = _fake_result(1000, 0.5)
    report, sides = build_report(result, records)
    seq = {c.name: c for c in report.checks}["sequential"]
    assert seq.status == "info"
    assert not seq.gating
    assert seq.figures["decision"] == "fail"
    assert seq.figures["n_used"] < seq.figures["n_available"] == 999
    write_reports(report, tmp_path, sides=sides)
    md = (tmp_path / "report.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("Sensitivity:"))
    assert "with 999 pairs" in line
    assert "p95 slowdown of" in line
    assert "Sequential judge: fail at" in line
    # Asked to decide sequentially, the sequential check gates and the fixed ones inform.
    report, _ = build_report(result, records, Thresholds(sequential=True, max_dropped_fraction=1))
    by = {c.name: c for c in report.checks}
    assert by["sequential"].gating
    assert not by["latency"].gating
    assert report.verdict == "fail"
    assert report.reason.startswith("sequential: stopped at")

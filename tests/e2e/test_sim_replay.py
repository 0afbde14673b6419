"""Open-loop replay on a real Locust runner against fake endpoints started here (not Ray).

Each test runs Locust in a child process (Locust monkey-patches the process it is imported in)
and stops every endpoint it started. Assertions are on behaviour, never on timing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from simulator.fake_endpoint import FakeEndpoint
from simulator.traffic import TrafficRecord, import_csv_trace, write_jsonl

pytestmark = pytest.mark.e2e

TRACE = (
    Path(__file__).resolve().parents[3] / "shared" / "traces" / "azure-llm-inference-conv-2023.csv"
)


def _run_replay(code: str, timeout: float = 90) -> dict[str, object]:
    """Run replay code in a fresh interpreter; it prints one JSON object last."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _records(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "traffic.jsonl"
    if TRACE.exists():
        header, records = import_csv_trace(TRACE, limit=n)
    else:  # pragma: no cover - the shared traces are part of the workspace
        header, records = (
            None,
            [
                TrafficRecord(id=f"r{i}", ts=i * 0.2, route="/m", body={"dataframe_split": {}})
                for i in range(n)
            ],
        )
    write_jsonl(path, records, header)
    return path


def test_paired_replay_keeps_schedule_order_and_catches_flips(tmp_path: Path) -> None:
    traffic = _records(tmp_path, 150)
    with (
        FakeEndpoint(version="1") as base,
        FakeEndpoint(version="2", flip=0.3) as cand,
    ):
        out = _run_replay(
            f"""
            import json
            from pathlib import Path
            from simulator.replay import replay
            from simulator.results import ReplayOptions
            from simulator.report import build_report
            from simulator.traffic import read_jsonl
            header, recs = read_jsonl(Path({str(traffic)!r}))
            r = replay(recs, {{"baseline": {base.url!r}, "candidate": {cand.url!r}}},
                       ReplayOptions(speed=20, max_lag_p99_ms=1000))
            report, _ = build_report(r, recs, header=header)
            first = recs[0].ts
            expected = [(x.ts - first) / 20 for x in recs]
            b = r.by_target("baseline")
            print(json.dumps({{
                "scheduled": r.scheduled,
                "statuses": sorted({{o.status for o in r.outcomes}}),
                "versions": sorted({{o.version for o in r.outcomes}}),
                "intended_ok": all(abs(o.intended - e) < 1e-9 for o, e in zip(b, expected)),
                "latency_from_intended": all(o.latency_ms >= o.service_ms - 1e-6 for o in r.outcomes),
                "times_ordered": all(o.intended <= o.sent <= o.done for o in r.outcomes),
                "paired": r.paired,
                "n_outcomes": len(r.outcomes),
                "agreement": {{c.name: c.status for c in report.checks}}.get("agreement"),
                "attribution": report.meta.get("attribution"),
            }}))
            """
        )
    assert out["scheduled"] == 150
    assert out["n_outcomes"] == 300
    assert out["statuses"] == [200]
    assert out["versions"] == ["1", "2"]
    assert out["intended_ok"]
    assert out["latency_from_intended"]
    assert out["times_ordered"]
    assert out["paired"] is True
    assert out["agreement"] == "fail"
    assert out["attribution"]
    assert "Splitwise" in out["attribution"][0]


def test_cap_drops_are_counted_and_timeouts_censored(tmp_path: Path) -> None:
    # 40 requests at the same instant against a server that takes 1.5 s, cap 10, timeout 0.5 s.
    records = [
        TrafficRecord(id=f"r{i}", ts=100.0, route="/m", body={"dataframe_split": {"data": []}})
        for i in range(40)
    ]
    traffic = tmp_path / "burst.jsonl"
    write_jsonl(traffic, records)
    with FakeEndpoint(version="1", delay_ms=1500) as slow:
        out = _run_replay(
            f"""
            import json
            from pathlib import Path
            from simulator.replay import replay
            from simulator.results import ReplayOptions
            from simulator.traffic import read_jsonl
            _, recs = read_jsonl(Path({str(traffic)!r}))
            r = replay(recs, {{"only": {slow.url!r}}},
                       ReplayOptions(max_in_flight=10, timeout_s=0.5, max_lag_p99_ms=1000))
            print(json.dumps({{
                "dropped": r.dropped, "timed_out": r.timed_out, "problems": r.problems,
                "censored_latencies": sorted(round(o.latency_ms) for o in r.outcomes if o.timed_out),
                "n": len(r.outcomes),
            }}))
            """
        )
    assert out["n"] == 40
    assert out["dropped"] == {"only": 30}
    assert out["timed_out"] == {"only": 10}
    assert any("30 request(s) dropped" in p for p in out["problems"])  # type: ignore[attr-defined]
    assert all(v >= 500 for v in out["censored_latencies"])  # type: ignore[attr-defined]


def test_distributed_replay_shards_every_request_exactly_once(tmp_path: Path) -> None:
    from simulator.replay_process import run_replay_process
    from simulator.results import ReplayOptions, shard_of
    from simulator.traffic import read_jsonl

    traffic = _records(tmp_path, 120)
    _, records = read_jsonl(traffic)
    with FakeEndpoint(version="1") as a, FakeEndpoint(version="2") as b:
        result = run_replay_process(
            traffic,
            {"baseline": a.url, "candidate": b.url},
            ReplayOptions(speed=20, max_lag_p99_ms=1000),
            workers=2,
            timeout_s=90,
        )
    first = records[0].ts
    expected = {r.id: (r.ts - first) / 20 for r in records}
    assert result.scheduled == 120
    seen = sorted((o.id, o.target) for o in result.outcomes)
    assert seen == sorted((i, t) for i in expected for t in ("baseline", "candidate"))
    assert {o.status for o in result.outcomes} == {200}
    # Both workers took part, and each request's intended time is on the shared schedule.
    assert {shard_of(i, 2) for i in expected} == {0, 1}
    assert all(abs(o.intended - expected[o.id]) < 1e-9 for o in result.outcomes)
    assert all(o.sent is not None and o.sent >= o.intended for o in result.outcomes)


def test_sequential_stop_ends_a_paired_replay_once_the_judge_decides(tmp_path: Path) -> None:
    """A candidate three times slower: the judge in the replay decides at an early look, the
    schedule stops sending, and the report's own walk reaches the same decision there."""
    from simulator.checks import Thresholds
    from simulator.replay_process import run_replay_process
    from simulator.report import build_report
    from simulator.results import ReplayOptions, StopWhenDecided
    from simulator.traffic import read_jsonl

    path = tmp_path / "traffic.jsonl"
    records = [TrafficRecord(id=f"r{i}", ts=1.7e9 + i * 0.004, route="/m",
                             body={"inputs": [[1.0]]}) for i in range(3000)]  # fmt: skip
    write_jsonl(path, records)
    t = Thresholds(sequential=True, min_agreement=None, max_generator_lag_p99_ms=1000)
    stop = StopWhenDecided(thresholds=t.model_dump())
    with (
        FakeEndpoint(version="1", delay_ms=2, sigma=0.3, seed=1) as a,
        FakeEndpoint(version="2", delay_ms=2, sigma=0.3, seed=2, slowdown=2.0) as b,
    ):
        result = run_replay_process(
            path, {"baseline": a.url, "candidate": b.url},
            ReplayOptions(speed=1, max_lag_p99_ms=1000, stop_when_decided=stop), timeout_s=120,
        )  # fmt: skip
    assert result.stopped_early is not None
    assert result.stopped_early["decision"] == "fail"
    assert result.stopped_early["unsent"] > 1000
    sent = {o.id for o in result.outcomes}
    assert len(sent) == 3000 - result.stopped_early["unsent"]
    _, recs = read_jsonl(path)
    report, _ = build_report(result, recs, t)
    seq = {c.name: c for c in report.checks}["sequential"]
    assert seq.gating
    assert seq.status == "fail"
    assert seq.figures["n_used"] == result.stopped_early["after_pairs"]
    assert "the replay stopped there" in seq.reason
    assert report.verdict == "fail"


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_setaffinity"), reason="no affinity")
def test_the_replaying_process_pins_itself_to_the_reserved_cores(tmp_path: Path) -> None:
    import os

    from simulator.replay_process import run_replay_process
    from simulator.results import ReplayOptions

    core = max(os.sched_getaffinity(0))
    traffic = _records(tmp_path, 30)
    with FakeEndpoint(version="1") as ep:
        result = run_replay_process(
            traffic, {"target": ep.url},
            ReplayOptions(speed=50, max_lag_p99_ms=1000, cpu_affinity=[core]), timeout_s=60,
        )  # fmt: skip
    assert result.generator_cpus == [core]
    assert {o.status for o in result.outcomes} == {200}

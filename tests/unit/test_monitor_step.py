"""The monitoring step of a controller pass: due per window, stored, alerted once per episode,
exported, never failing the pass (FakeServe, real Git, SQLite, a fake clock)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import controller.monitor.step as step
from controller.gitops.telemetry import ControllerMetrics
from tests.monitor_support import sample, write_recording, write_reference
from tests.support import World
from tests.unit.test_notify import Receiver

HOUR = 3600.0


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    w.recordings = tmp_path / "recordings"  # type: ignore[attr-defined]
    w.refs = tmp_path / "refs"  # type: ignore[attr-defined]
    write_reference(w.refs / "fraud.csv", sample(5000, seed=0))  # type: ignore[attr-defined]
    monitored(w, "[default]")
    w.ctl = w.controller(monitor_reference_dir=str(w.refs))  # type: ignore[attr-defined]
    metrics = ControllerMetrics(CollectorRegistry())
    w.metrics_registry = metrics  # type: ignore[attr-defined]
    original = step.METRICS
    step.METRICS = metrics
    step._references.clear()
    yield w
    step.METRICS = original
    w.close()


def monitored(world: World, targets: str) -> None:
    """Push version 1 with recording and monitoring (alerting `targets`)."""
    world.push(
        "1",
        f"recording: {{sample_rate: 1, dir: {world.recordings}}}\n"  # type: ignore[attr-defined]
        "monitoring:\n"
        "  reference: {kind: dataset, path: fraud.csv}\n"
        "  window: 1h\n"
        f"  alert_targets: {targets}\n",
    )


def window_of(world: World, ahead: float = 0) -> tuple[float, float]:
    """The hour a pass `ahead` seconds from now judges: the one ended at that hour."""
    end = ((world.clock.current.timestamp() + ahead) // HOUR) * HOUR
    return end - HOUR, end


def traffic(
    world: World, *, shift: float, seed: int, name: str, n: int = 1000, ahead: float = 0
) -> None:
    """Recorded requests in the window the pass `ahead` seconds from now judges."""
    start, end = window_of(world, ahead)
    rows = sample(n, seed=seed, shift=shift, shifted=3)
    write_recording(world.recordings, "fraud", rows, start, end, name=name)  # type: ignore[attr-defined]


def gauge(world: World, name: str, **labels: str) -> float | None:
    reg: ControllerMetrics = world.metrics_registry  # type: ignore[attr-defined]
    return reg.registry.get_sample_value(
        name, {"environment": "staging", "deployment": "fraud", **labels}
    )


def test_drift_alerts_once_per_episode_and_resolves_once(world: World) -> None:
    traffic(world, shift=0.5, seed=1, name="h1")
    assert world.sync().outcome in ("applied", "in_sync")
    [report] = world.ctl.store.latest_drift("staging").values()
    assert report.status == "drift"
    assert report.rows == 1000
    assert report.version == "1"
    assert sorted(f.name for f in report.features if f.drifted) == ["f0", "f1", "f2"]
    assert world.notes.kinds.count("model_drift") == 1
    assert gauge(world, "serveops_monitor_drift") == 1
    f0 = next(f for f in report.features if f.name == "f0")
    assert gauge(world, "serveops_monitor_feature_psi", feature="f0") == pytest.approx(f0.psi)
    assert gauge(world, "serveops_monitor_feature_js", feature="f0") == pytest.approx(
        f0.js_distance
    )
    assert gauge(world, "serveops_monitor_feature_missing_share", feature="f0") == 0.0

    world.pass_(60)  # the same window: not judged again
    assert len(world.ctl.store.drift_history("staging", "fraud")) == 1
    traffic(world, shift=0.5, seed=2, name="h2", ahead=HOUR)
    world.pass_(HOUR)  # next window, still drifted: the episode goes on, no second alert
    assert world.ctl.store.latest_drift("staging")["fraud"].status == "drift"
    assert world.notes.kinds.count("model_drift") == 1
    assert len(world.ctl.store.drift_history("staging", "fraud")) == 2

    traffic(world, shift=0.0, seed=3, name="h3", ahead=HOUR)
    world.pass_(HOUR)
    assert world.ctl.store.latest_drift("staging")["fraud"].status == "ok"
    assert world.notes.kinds.count("model_drift_resolved") == 1
    assert gauge(world, "serveops_monitor_drift") == 0
    world.pass_(HOUR)  # an empty window: insufficient, neither opens nor closes anything
    assert world.ctl.store.latest_drift("staging")["fraud"].status == "insufficient"
    assert world.notes.kinds.count("model_drift_resolved") == 1
    assert world.notes.kinds.count("model_drift") == 1


def test_undrifted_traffic_raises_nothing(world: World) -> None:
    traffic(world, shift=0.0, seed=4, name="a")
    world.sync()
    assert world.ctl.store.latest_drift("staging")["fraud"].status == "ok"
    assert "model_drift" not in world.notes.kinds


def test_a_restarted_controller_does_not_judge_or_alert_again(world: World) -> None:
    traffic(world, shift=0.5, seed=5, name="a")
    world.sync()
    again = world.controller(holder="other", monitor_reference_dir=str(world.refs))  # type: ignore[attr-defined]
    world.ctl.release()
    world.pass_(1, ctl=again)
    assert len(again.store.drift_history("staging", "fraud")) == 1
    assert world.notes.kinds.count("model_drift") == 1


def test_a_missing_reference_is_an_error_report_not_a_failed_pass(world: World) -> None:
    (world.refs / "fraud.csv").unlink()  # type: ignore[attr-defined]
    traffic(world, shift=0.5, seed=6, name="a")
    result = world.sync()
    assert result.outcome in ("applied", "in_sync")
    report = world.ctl.store.latest_drift("staging")["fraud"]
    assert report.status == "error"
    assert "no such reference file" in report.message
    assert "model_drift" not in world.notes.kinds


def test_hostile_recordings_are_judged_on_what_is_readable(world: World) -> None:
    traffic(world, shift=0.0, seed=7, name="a")
    start, _ = window_of(world)
    bad = world.recordings / "fraud--20260301T000000Z-evil-0001.jsonl"  # type: ignore[attr-defined]
    bad.write_text("{oops\n" + "[" * 100_000 + "\n" + '{"ts": %f, "body": 5}\n' % (start + 1))
    world.sync()
    report = world.ctl.store.latest_drift("staging")["fraud"]
    assert report.status == "ok"
    assert report.skipped_lines == 2
    assert report.problems[0].endswith(
        ":1: not JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"
    )


def test_due_window_is_aligned_and_judged_once() -> None:
    at = dt.datetime(2026, 3, 1, 12, 30, tzinfo=dt.UTC)
    start, end = step.due_window(HOUR, at, None) or (None, None)
    assert (start, end) == (
        dt.datetime(2026, 3, 1, 11, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC),
    )
    assert step.due_window(HOUR, at, end) is None


def test_alerts_go_to_the_targets_the_operator_configured(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    oncall = Receiver()
    try:
        monitored(world, "[default, oncall, pager]")
        world.ctl = world.controller(
            monitor_reference_dir=str(world.refs),  # type: ignore[attr-defined]
            alert_targets=(("oncall", oncall.url),),
        )
        traffic(world, shift=0.5, seed=8, name="a")
        world.sync()
    finally:
        oncall.close()
    assert world.notes.kinds == ["deployed", "model_drift"]
    [body] = oncall.bodies
    assert body["event"] == "model_drift"
    assert body["message"].startswith("inputs drifted: staging/fraud v1: drift (1000 rows")
    assert "alert target 'pager', which is not configured" in caplog.text


def test_a_failing_monitoring_step_never_fails_the_pass(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("the store is gone")

    monkeypatch.setattr(world.ctl.store, "last_drift_window", broken)
    traffic(world, shift=0.5, seed=9, name="a")
    assert world.sync().outcome == "applied"
    assert "model_drift" not in world.notes.kinds

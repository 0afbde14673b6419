"""Delayed ground truth in the controller's monitoring step (`spec.monitoring.labels`): with
each window it judges, the window whose labels are due is joined with them into quality per
version, stored with the report, exported and shown by `serveops monitor` (FakeServe, real Git,
SQLite, a fake clock; label files under the operator's labels directory)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

import controller.monitor.step as step
from controller.cli.main import app
from controller.gitops.telemetry import ControllerMetrics
from controller.monitor.quality_step import quality_window
from tests.monitor_support import sample, write_recording, write_reference
from tests.support import World

HOUR = 3600.0
N = 400  # requests in the labelled window


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    w.recordings = tmp_path / "recordings"  # type: ignore[attr-defined]
    w.refs = tmp_path / "refs"  # type: ignore[attr-defined]
    w.labels = tmp_path / "labels"  # type: ignore[attr-defined]
    write_reference(w.refs / "fraud.csv", sample(5000, seed=0))  # type: ignore[attr-defined]
    w.push(
        "1",
        f"recording: {{sample_rate: 1, dir: {w.recordings}}}\n"  # type: ignore[attr-defined]
        "monitoring:\n"
        "  reference: {kind: dataset, path: fraud.csv}\n"
        "  window: 1h\n"
        "  alert_targets: []\n"
        "  labels: {path: fraud, delay: 2h}\n",
    )
    metrics = ControllerMetrics(CollectorRegistry())
    w.metrics_registry = metrics  # type: ignore[attr-defined]
    original = step.METRICS
    step.METRICS = metrics
    step._references.clear()
    yield w
    step.METRICS = original
    w.close()


def labelled_traffic(world: World, ahead: float) -> tuple[float, float]:
    """Requests answered by v1 in the window that ended `ahead` seconds from now, minus the
    2 h delay; their labels (one in four disagrees with the answer) in the labels directory."""
    end = ((world.clock.current.timestamp() + ahead - 2 * HOUR) // HOUR) * HOUR
    start = end - HOUR
    answers = [[{"label": i % 2, "probability": 0.8 if i % 2 else 0.3}] for i in range(N)]
    ids = [f"req-{i}" for i in range(N)]
    write_recording(
        world.recordings, "fraud", sample(N, seed=1), start, end,  # type: ignore[attr-defined]
        outputs=answers, request_ids=ids, name="old",
    )  # fmt: skip
    labels = world.labels / "fraud"  # type: ignore[attr-defined]
    labels.mkdir(parents=True, exist_ok=True)
    truth = "".join(f"req-{i},{(i % 2) if i % 4 else 1 - i % 2}\n" for i in range(N))
    (labels / "day1.csv").write_text("request_id,label\n" + truth)
    return start, end


def test_the_window_whose_labels_are_due_is_scored_stored_exported_and_shown(
    world: World,
) -> None:
    start, end = labelled_traffic(world, ahead=0)
    world.ctl = world.controller(  # type: ignore[attr-defined]
        monitor_reference_dir=str(world.refs),  # type: ignore[attr-defined]
        monitor_labels_dir=str(world.labels),  # type: ignore[attr-defined]
    )
    world.sync()
    report = world.ctl.store.latest_drift("staging")["fraud"]
    quality = report.extra["quality"]
    # The report is of the hour just ended; its quality of the hour that ended 2 h before.
    assert report.window_end.timestamp() - 2 * HOUR == end
    assert (quality["window_start"], quality["window_end"]) == (
        dt.datetime.fromtimestamp(start, dt.UTC).isoformat(),
        dt.datetime.fromtimestamp(end, dt.UTC).isoformat(),
    )
    assert quality["joined"] == N
    v1 = quality["versions"]["1"]
    assert (v1["task"], v1["joined"], v1["accuracy"]) == ("classification", N, 0.75)
    reg: ControllerMetrics = world.metrics_registry  # type: ignore[attr-defined]
    labels = {"environment": "staging", "deployment": "fraud", "version": "1"}
    assert reg.registry.get_sample_value(
        "serveops_monitor_quality", {**labels, "metric": "accuracy"}
    ) == pytest.approx(0.75)
    assert reg.registry.get_sample_value(
        "serveops_monitor_labels_joined", {"environment": "staging", "deployment": "fraud"}
    ) == float(N)

    shown = CliRunner().invoke(app, ["monitor", "--env", "staging", "--state", str(world.state)])
    assert "(labels after 2h):" in shown.output, shown.output
    assert f"labels: {N} of {N} joined" in shown.output
    assert "v1: classification, 400 labelled rows: accuracy 0.750, ROC AUC" in shown.output


def test_without_a_labels_directory_quality_says_so_and_drift_is_still_judged(
    world: World,
) -> None:
    labelled_traffic(world, ahead=0)
    world.ctl = world.controller(monitor_reference_dir=str(world.refs))  # type: ignore[attr-defined]
    world.sync()
    report = world.ctl.store.latest_drift("staging")["fraud"]
    assert report.status in ("insufficient", "ok")  # judged: the hour just ended has no rows
    assert report.extra["quality"]["error"] == (
        "this controller has no labels directory (--monitor-labels-dir)"
    )


def test_a_labels_path_leading_out_of_the_labels_directory_is_refused(
    world: World, tmp_path: Path
) -> None:
    """The pull request names `fraud`; a link there to elsewhere on the controller's disk
    is not followed."""
    labelled_traffic(world, ahead=0)
    secret = tmp_path / "elsewhere"
    (world.labels / "fraud").rename(secret)  # type: ignore[attr-defined]
    (world.labels / "fraud").symlink_to(secret)  # type: ignore[attr-defined]
    world.ctl = world.controller(  # type: ignore[attr-defined]
        monitor_reference_dir=str(world.refs),  # type: ignore[attr-defined]
        monitor_labels_dir=str(world.labels),  # type: ignore[attr-defined]
    )
    world.sync()
    quality = world.ctl.store.latest_drift("staging")["fraud"].extra["quality"]
    assert "labels 'fraud' leaves the labels directory" in quality["error"]
    assert "versions" not in quality


def test_the_scored_window_is_on_the_grid_delay_before() -> None:
    t = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    judged = (t - dt.timedelta(hours=1), t)
    # A delay that is not a whole number of windows rounds back to the grid.
    assert quality_window(judged, 90 * 60, HOUR) == (
        dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 1, 10, 0, tzinfo=dt.UTC),
    )


def judged(world: World, accuracy_floor: float) -> None:
    """Push the deployment again with a quality threshold (a new commit: the same version)."""
    world.push(
        "1",
        f"recording: {{sample_rate: 1, dir: {world.recordings}}}\n"  # type: ignore[attr-defined]
        "monitoring:\n"
        "  reference: {kind: dataset, path: fraud.csv}\n"
        "  window: 1h\n"
        "  alert_targets: [default]\n"
        f"  labels: {{path: fraud, delay: 2h, min_accuracy: {accuracy_floor}, min_labelled: 50}}\n",
    )


def test_quality_below_its_floor_alerts_once_per_episode_and_once_when_back(
    world: World,
) -> None:
    judged(world, accuracy_floor=0.9)  # the labelled window's accuracy is 0.75
    labelled_traffic(world, ahead=0)
    world.ctl = world.controller(  # type: ignore[attr-defined]
        monitor_reference_dir=str(world.refs),  # type: ignore[attr-defined]
        monitor_labels_dir=str(world.labels),  # type: ignore[attr-defined]
    )
    world.sync()
    quality = world.ctl.store.latest_drift("staging")["fraud"].extra["quality"]
    assert (quality["status"], quality["judged"]) == ("low", "1")
    assert quality["message"] == "v1: accuracy 0.750 below min_accuracy 0.9"
    assert world.notes.kinds.count("model_quality_low") == 1
    labelled_traffic(world, ahead=HOUR)  # the next hour: still low, the episode goes on
    world.pass_(HOUR)
    assert world.ctl.store.latest_drift("staging")["fraud"].extra["quality"]["status"] == "low"
    assert world.notes.kinds.count("model_quality_low") == 1
    world.pass_(HOUR)  # no labelled requests in that hour: insufficient, says nothing
    quality = world.ctl.store.latest_drift("staging")["fraud"].extra["quality"]
    assert quality["status"] == "insufficient"
    assert world.notes.kinds.count("model_quality_recovered") == 0
    judged(world, accuracy_floor=0.7)  # the floor lowered: the same 0.75 is now healthy
    labelled_traffic(world, ahead=HOUR)
    world.pass_(HOUR)
    assert world.ctl.store.latest_drift("staging")["fraud"].extra["quality"]["status"] == "ok"
    assert world.notes.kinds.count("model_quality_recovered") == 1
    assert world.notes.kinds.count("model_quality_low") == 1

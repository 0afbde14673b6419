"""Retraining requests in the controller pass: once per drift episode, retried with backoff,
given up with `retrain_failed`; unknown targets reported; HTML pages written (FakeServe, real
Git, SQLite, a fake clock, a fake endpoint)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import controller.monitor.step as step
from controller.gitops.telemetry import ControllerMetrics
from controller.monitor.retrain_step import MAX_ATTEMPTS
from controller.monitor.retrain_targets import RetrainConfig, RetrainTarget
from tests.monitor_support import sample, write_reference
from tests.retrain_support import FakeEndpoint
from tests.support import World
from tests.unit.test_monitor_step import HOUR, traffic


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    w.recordings = tmp_path / "recordings"  # type: ignore[attr-defined]
    w.refs = tmp_path / "refs"  # type: ignore[attr-defined]
    write_reference(w.refs / "fraud.csv", sample(5000, seed=0))  # type: ignore[attr-defined]
    w.push(
        "1",
        f"recording: {{sample_rate: 1, dir: {w.recordings}}}\n"  # type: ignore[attr-defined]
        "monitoring:\n"
        "  reference: {kind: dataset, path: fraud.csv}\n"
        "  window: 1h\n"
        "  actions: {retrain: [nightly, ghost]}\n",
    )
    original = step.METRICS
    step.METRICS = ControllerMetrics(CollectorRegistry())
    step._references.clear()
    yield w
    step.METRICS = original
    w.close()


def controller_for(world: World, endpoint: FakeEndpoint, **settings: object) -> None:
    target = RetrainTarget("nightly", "webhook", endpoint.base + "/retrain/secret")
    world.ctl = world.controller(
        monitor_reference_dir=str(world.refs),  # type: ignore[attr-defined]
        retrain=RetrainConfig((target,), timeout_s=5),
        **settings,
    )


def test_retraining_is_requested_once_per_episode(world: World, tmp_path: Path) -> None:
    endpoint = FakeEndpoint(statuses=(204,))
    try:
        controller_for(world, endpoint, monitor_html_dir=str(tmp_path / "html"))
        traffic(world, shift=0.5, seed=1, name="h1")
        world.sync()
        [report] = world.ctl.store.latest_drift("staging").values()
        assert report.status == "drift"
        assert any("'ghost' not configured" in p for p in report.problems)
        [body] = endpoint.bodies
        assert body["deployment"] == "fraud"
        assert body["model_version"] == "1"
        assert body["commit"] == world.head
        assert body["drift_report"]["window_end"] == report.window_end.isoformat()

        traffic(world, shift=0.5, seed=2, name="h2", ahead=HOUR)
        world.pass_(HOUR)  # the episode goes on: no second request
        assert len(endpoint.bodies) == 1
        traffic(world, shift=0.0, seed=3, name="h3", ahead=HOUR)
        world.pass_(HOUR)  # healthy: the episode closes
        traffic(world, shift=0.5, seed=4, name="h4", ahead=HOUR)
        world.pass_(HOUR)  # a new episode: a new request
        assert len(endpoint.bodies) == 2
    finally:
        endpoint.close()
    requests = world.ctl.store.triggers("staging", "fraud")
    assert [(t.target, t.status, t.attempts) for t in requests] == [("nightly", "sent", 1)] * 2
    pages = sorted(p.name for p in (tmp_path / "html").iterdir())
    assert len(pages) == 4
    assert pages[0].startswith("staging--fraud--v1--")


def test_a_failing_target_is_retried_with_backoff_then_given_up(world: World) -> None:
    endpoint = FakeEndpoint(statuses=(500,), body=b"internal error")
    try:
        controller_for(world, endpoint)
        traffic(world, shift=0.5, seed=5, name="a")
        world.sync()
        assert len(endpoint.bodies) == 1
        waits = []
        for attempt in range(2, MAX_ATTEMPTS + 1):
            [trigger] = world.ctl.store.triggers("staging", "fraud")
            assert trigger.status == "pending"
            assert trigger.last_error == "127.0.0.1: HTTP 500: internal error"
            assert trigger.next_attempt is not None
            wait = (trigger.next_attempt - world.clock.now()).total_seconds()
            waits.append(wait)
            world.pass_(wait - 1)  # not due yet
            assert len(endpoint.bodies) == attempt - 1
            world.pass_(1)
            assert len(endpoint.bodies) == attempt
        assert waits == [60, 120, 240, 480, 960, 1920, 3600]
        [trigger] = world.ctl.store.triggers("staging", "fraud")
        assert (trigger.status, trigger.attempts) == ("failed", MAX_ATTEMPTS)
        assert world.notes.kinds.count("retrain_failed") == 1
        event = world.notes.events[world.notes.kinds.index("retrain_failed")]
        assert "given up after 8 attempt(s)" in event.message
        assert "secret" not in event.message
        world.pass_(2 * HOUR)
        assert len(endpoint.bodies) == MAX_ATTEMPTS
    finally:
        endpoint.close()


def test_an_unreachable_target_never_fails_the_pass(world: World) -> None:
    target = RetrainTarget("nightly", "webhook", "http://127.0.0.1:9/nobody")
    world.ctl = world.controller(
        monitor_reference_dir=str(world.refs),  # type: ignore[attr-defined]
        retrain=RetrainConfig((target,), timeout_s=2),
    )
    traffic(world, shift=0.5, seed=6, name="a")
    assert world.sync().outcome == "applied"
    [trigger] = world.ctl.store.triggers("staging", "fraud")
    assert trigger.status == "pending"
    assert "ConnectError" in trigger.last_error
    assert trigger.next_attempt == world.clock.now() + dt.timedelta(minutes=1)

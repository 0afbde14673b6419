"""The controller's Prometheus metrics, scraped from the real HTTP endpoint after passes.

FakeServe, real Git and SQLite, fake router metrics (unit tests). Each test uses its own
environment label, since the controller's metrics are one registry per process.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from controller.cli.main import app
from controller.gitops.telemetry import ControllerMetrics, PassFigures, serve, sync_statuses
from controller.rollout.state import RolloutState
from controller.sync.plan import Action, ModelRef, Plan, Source
from tests.support import World
from tests.unit.test_rollout_engine import new as new_rollout

CANARY = """\
rollout:
  strategy: canary
  steps:
    - weight: 25
      pause: 1m
    - weight: 60
      pause: 1m
  analysis:
    interval: 30s
    min_requests: 20
"""


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = serve(0)  # the process-wide registry the controller records into
    yield f"http://127.0.0.1:{server.server_port}/metrics"
    server.shutdown()
    server.server_close()


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the endpoint, by (name, labels)."""
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_a_pass_is_timed_counted_and_its_deployments_synced(tmp_path: Path, endpoint: str) -> None:
    world = World(tmp_path, env="telemetry-sync")
    assert world.pass_().outcome == "applied"
    assert world.pass_().outcome == "in_sync"
    samples = scrape(endpoint)
    env = {"environment": "telemetry-sync"}
    assert value(samples, "serveops_controller_reconcile_total", **env, outcome="applied") == 1
    assert value(samples, "serveops_controller_reconcile_total", **env, outcome="in_sync") == 1
    assert value(samples, "serveops_controller_reconcile_duration_seconds_count", **env) == 2
    assert value(samples, "serveops_controller_reconcile_duration_seconds_sum", **env) > 0
    assert value(samples, "serveops_controller_last_reconcile_timestamp_seconds", **env) > 0
    fraud = {**env, "deployment": "fraud"}
    assert value(samples, "serveops_controller_sync_status", **fraud, status="Synced") == 1
    assert value(samples, "serveops_controller_sync_status", **fraud, status="OutOfSync") == 0
    assert value(samples, "process_cpu_seconds_total") is not None  # process metrics too

    # Someone scales the router by hand: drift (warn), and the deployment is OutOfSync.
    world.serve.apps["fraud"]["deployments"][0]["num_replicas"] = 3
    assert world.pass_().outcome == "drift"
    samples = scrape(endpoint)
    assert value(samples, "serveops_controller_reconcile_total", **env, outcome="drift") == 1
    assert value(samples, "serveops_controller_sync_status", **fraud, status="OutOfSync") == 1
    assert value(samples, "serveops_controller_sync_status", **fraud, status="Synced") == 0


def test_rollout_step_weight_phase_and_analysis_results(tmp_path: Path, endpoint: str) -> None:
    world = World(tmp_path, env="telemetry-canary", rollout=CANARY)
    assert world.pass_().outcome == "applied"  # v1: first deploy
    world.push("2")
    world.pass_()  # canary starts: the candidate loads (FakeServe runs it at once)
    fraud = {"environment": "telemetry-canary", "deployment": "fraud"}
    samples = scrape(endpoint)
    assert value(samples, "serveops_controller_rollout_phase", **fraud, phase="loading") == 1
    assert value(samples, "serveops_controller_rollout_step", **fraud) == 0
    assert value(samples, "serveops_controller_rollout_weight", **fraud) == 0

    world.pass_()  # RUNNING: step 1
    samples = scrape(endpoint)
    assert value(samples, "serveops_controller_rollout_phase", **fraud, phase="steps") == 1
    assert value(samples, "serveops_controller_rollout_phase", **fraud, phase="loading") == 0
    assert value(samples, "serveops_controller_rollout_step", **fraud) == 1
    assert value(samples, "serveops_controller_rollout_weight", **fraud) == 25

    world.metrics.serve("1", 90)
    world.metrics.serve("2", 30)
    world.pass_(seconds=30)  # a window complete: analysed, passes
    world.pass_(seconds=30)  # the pause is over: step 2
    samples = scrape(endpoint)
    assert value(samples, "serveops_controller_analysis_total", **fraud, result="pass") == 1
    assert value(samples, "serveops_controller_rollout_step", **fraud) == 2
    assert value(samples, "serveops_controller_rollout_weight", **fraud) == 60


def test_series_of_a_deployment_that_left_go_away() -> None:
    metrics = ControllerMetrics()  # its own registry

    def plan(*deployments: str, orphans: tuple[str, ...] = ()) -> Plan:
        return Plan(
            environment="e",
            address="http://ray",
            source=Source(repo="/repo", rev="main", commit="c0ffee"),
            live_fingerprint="x",
            models=[ModelRef(deployment=d, uri=f"models:/{d}/1", version="1") for d in deployments],
            actions=[
                Action(op="orphan", app=d, deployment=d, role="router", effect="stop")
                for d in orphans
            ],
            desired=[],
        )

    def synced(deployment: str) -> float | None:
        labels = {"environment": "e", "deployment": deployment, "status": "Synced"}
        return metrics.registry.get_sample_value("serveops_controller_sync_status", labels)

    metrics.record_pass(PassFigures("e", "in_sync", 0.01, 0.0, plan("a", "b")), {})
    assert synced("a") == 1
    assert synced("b") == 1
    metrics.record_pass(PassFigures("e", "in_sync", 0.01, 0.0, plan("a")), {})
    assert synced("a") == 1
    assert synced("b") is None
    # Gone from Git but kept (no --prune): listed, and OutOfSync.
    assert sync_statuses(plan("a", orphans=("b",)), "in_sync") == {
        "a": "Synced",
        "b": "OutOfSync",
    }


def test_a_held_rollout_has_a_series_since_when_for_each_reason_and_none_after() -> None:
    """What an alert bounds a hold by (a hold has no deadline of its own)."""
    metrics = ControllerMetrics()  # its own registry
    since = dt.datetime(2026, 12, 6, 5, 20, 11, tzinfo=dt.UTC)

    def held(reason: str) -> float | None:
        labels = {"environment": "e", "deployment": "fraud", "reason": reason}
        name = "serveops_controller_rollout_held_since_timestamp_seconds"
        return metrics.registry.get_sample_value(name, labels)

    def record(state: RolloutState) -> None:
        metrics.record_pass(PassFigures("e", "progressing", 0.01, 0.0, None), {"fraud": state})

    state = new_rollout()
    record(dataclasses.replace(state, held_since=since))
    assert (held("headroom"), held("saturated")) == (since.timestamp(), None)
    record(dataclasses.replace(state, saturated_since=since))  # started, then saturated
    assert (held("headroom"), held("saturated")) == (None, since.timestamp())
    record(dataclasses.replace(state, saturated_since=since, phase="aborted"))  # not active
    assert held("saturated") is None
    record(dataclasses.replace(state, held_since=since))
    metrics.record_pass(PassFigures("e", "in_sync", 0.01, 0.0, None), {})  # the rollout left
    assert held("headroom") is None


def test_metrics_port_must_be_a_port() -> None:
    result = CliRunner().invoke(
        app,
        ["controller", "--env", "staging", "--repo", ".", "--metrics-port", "70000"],
    )
    assert result.exit_code == 2
    assert "--metrics-port must be a port number (0: off), not 70000" in result.output

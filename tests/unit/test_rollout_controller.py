"""Rollouts driven by the controller's passes: FakeServe, real Git and SQLite, fake metrics."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.cluster.status import deployment_statuses
from controller.gitops.reconciler import Controller, ControllerSettings, PassResult
from controller.gitops.state import StateStore
from controller.registry.mlflow import FixedRegistry, Registry
from controller.rollout.router_metrics import Counts, Snapshot
from controller.serving.protocol import LATENCY_BOUNDARIES_MS, RouterConfig
from controller.source.repository import RepoSource
from tests.support import FakeServe, commit, deployment_yaml, make_repo

FRAUD = "deployments/staging/fraud.yaml"
MODELS = {"fraud": {"1": "1", "2": "2", "3": "3"}}

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
    max_error_rate_increase: 1
    failure_limit: 1
"""

BLUE_GREEN = """\
rollout:
  strategy: blue_green
  scale_down_delay: 2m
  analysis:
    interval: 30s
    min_requests: 20
"""


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class FakeMetrics:
    """Cumulative router counters, as a scrape of Ray's metrics endpoint would sum them."""

    def __init__(self) -> None:
        self.counts: Snapshot = {}
        self.scrapes = 0

    def serve(self, version: str, requests: int, errors: int = 0, latency_ms: float = 5) -> None:
        c = self.counts.setdefault("fraud", {}).setdefault(version, Counts())
        c.requests += requests
        c.errors += errors
        for le in [*LATENCY_BOUNDARIES_MS, math.inf]:
            c.buckets[le] = c.buckets.get(le, 0) + (requests if le >= latency_ms else 0)

    def scrape(self) -> Snapshot:
        self.scrapes += 1
        return {
            d: {v: Counts(c.requests, c.errors, dict(c.buckets)) for v, c in vs.items()}
            for d, vs in self.counts.items()
        }


class World:
    def __init__(self, tmp_path: Path, rollout: str = CANARY) -> None:
        self.repo = tmp_path / "repo"
        self.rollout = rollout
        make_repo(self.repo, {FRAUD: self.spec("1")})
        self.serve = FakeServe()
        self.state = tmp_path / "state.db"
        self.clock = Clock()
        self.metrics = FakeMetrics()
        self.stores: list[StateStore] = []
        self.ctl = self.controller()
        assert self.ctl.reconcile_once().outcome == "applied"  # v1, first deploy: immediate

    def spec(self, version: str) -> str:
        return deployment_yaml(model=f"models:/fraud/{version}", extra_spec=self.rollout)

    def registry(self) -> Registry:
        return FixedRegistry(MODELS)

    def controller(self) -> Controller:
        """A new controller process: its own store connection on the same file."""
        store = StateStore(self.state, clock=self.clock)
        self.stores.append(store)
        return Controller(
            RepoSource(str(self.repo), branch="main"),
            self.serve,
            store,
            self.registry,
            ControllerSettings("staging", interval_s=10, actor="tester", apply_timeout_s=120),
            metrics=self.metrics,
            holder="ctl",  # a restarted controller takes its lease back (expiry aside)
        )

    def push(self, version: str) -> str:
        return commit(self.repo, {FRAUD: self.spec(version)}, f"v{version}")

    def pass_(self, seconds: float = 0) -> PassResult:
        self.clock.advance(seconds)
        return self.ctl.reconcile_once()

    def router(self) -> RouterConfig:
        return RouterConfig.model_validate(
            self.serve.apps["fraud"]["deployments"][0]["user_config"]
        )

    def weights(self) -> dict[str, float]:
        return {t.version: t.weight for t in self.router().targets}

    def traffic(self, seconds: float = 30, errors_v2: int = 0) -> None:
        """Steady client traffic split by the router's weights."""
        w = self.weights()
        for version, weight in w.items():
            n = int(4 * seconds * weight / 100)
            self.metrics.serve(version, n, errors_v2 if version == "2" else 0)
        for t in self.router().shadow:
            self.metrics.serve(t.version, int(4 * seconds * t.weight / 100), errors_v2)
        self.clock.advance(seconds)

    def close(self) -> None:
        for s in self.stores:
            s.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def apps(serve: FakeServe) -> set[str]:
    return set(serve.apps)


def test_canary_moves_step_by_step_to_100_and_records_every_step(world: World) -> None:
    world.push("2")
    started = world.pass_()
    assert started.outcome == "applied" and "canary rollout from fraud--v1" in started.message
    assert apps(world.serve) == {"fraud", "fraud--v1", "fraud--v2"}
    assert world.weights() == {"1": 100, "2": 0}  # the candidate starts with no traffic
    assert started.requeue_after < 10  # looks again soon while the candidate loads

    assert world.pass_().outcome == "applied"
    assert world.weights() == {"1": 75, "2": 25}
    [row] = [r for r in deployment_statuses(world.serve.get(), "staging")]
    assert row.health == "Progressing" and "canary rollout to v2" in row.message

    world.traffic(30)
    assert world.pass_().outcome == "in_sync"  # analysis passed, the 1m pause is not over
    world.traffic(30)
    assert world.pass_().outcome == "applied"
    assert world.weights() == {"1": 40, "2": 60}
    world.traffic(30)
    world.pass_()
    world.traffic(30)
    done = world.pass_()
    assert done.outcome == "applied" and "completed" in done.message
    assert apps(world.serve) == {"fraud", "fraud--v2"}
    assert world.weights() == {"2": 100}
    assert world.router().rollout is None  # back to Git's steady state
    assert world.pass_().outcome == "in_sync"

    events = world.ctl.store.rollout_events("staging", "fraud")
    assert [(e.action, e.weight) for e in reversed(events)] == [
        ("start", 0),
        ("set_weight", 25),
        ("set_weight", 60),
        ("complete", 100),
    ]


def test_failed_analysis_aborts_at_once_marks_degraded_and_is_not_retried(world: World) -> None:
    world.push("2")
    world.pass_()
    world.pass_()
    assert world.weights() == {"1": 75, "2": 25}
    world.traffic(30, errors_v2=10)  # 10 of 30 candidate requests fail
    aborted = world.pass_()
    assert aborted.outcome == "aborted" and aborted.exit_code == 1
    assert aborted.message.startswith("rollout of fraud to v2 aborted: analysis failed")
    assert world.weights() == {"1": 100}
    assert apps(world.serve) == {"fraud", "fraud--v1"}
    [row] = deployment_statuses(world.serve.get(), "staging")
    assert row.health == "Degraded" and "error rate" in row.message
    audit = world.ctl.store.history("staging")[0]
    assert audit.result == "aborted" and "error rate" in audit.message

    puts = len(world.serve.puts)
    for _ in range(3):
        held = world.pass_(60)  # held on v1; v2 is not tried again, and every pass says so
        assert held.outcome == "aborted" and held.exit_code == 1
        assert held.message.startswith("fraud is held on v1: rollout to v2 of ")
        assert "not attempted again until a commit changes the deployment" in held.message
    assert len(world.serve.puts) == puts
    assert world.ctl.store.history("staging")[0].id == audit.id  # holding writes no audit row

    world.push("3")  # a new commit that changes the deployment starts a new rollout
    again = world.pass_()
    assert again.outcome == "applied"
    assert "canary rollout from fraud--v1 to fraud--v3" in again.message


def test_an_unrelated_commit_does_not_retry_an_aborted_rollout(world: World) -> None:
    world.push("2")
    world.pass_()
    world.pass_()
    world.ctl.store.add_rollout_command("staging", "fraud", "abort", "carol")
    assert world.pass_().outcome == "aborted"
    puts = len(world.serve.puts)
    commit(world.repo, {"README.md": "models\n"}, "docs only")  # a new commit, same deployment
    held = world.pass_()
    assert held.outcome == "aborted" and "fraud is held on v1" in held.message
    assert len(world.serve.puts) == puts and world.weights() == {"1": 100}


def test_sync_retry_starts_an_aborted_rollout_again(world: World) -> None:
    world.push("2")
    world.pass_()
    world.pass_()
    world.ctl.store.add_rollout_command("staging", "fraud", "abort", "carol")
    world.pass_()
    retried = world.ctl.reconcile_once(retry=True, trigger="sync")
    assert retried.outcome == "applied"
    assert "canary rollout from fraud--v1 to fraud--v2" in retried.message
    assert apps(world.serve) == {"fraud", "fraud--v1", "fraud--v2"}


def test_a_restarted_controller_continues_from_the_step_it_stood_at(world: World) -> None:
    world.push("2")
    world.pass_()
    world.pass_()
    assert world.weights() == {"1": 75, "2": 25}
    world.traffic(30)
    world.pass_()  # analysis passed in step 1

    world.ctl = world.controller()  # killed and started again: nothing kept in memory
    puts = len(world.serve.puts)
    assert world.pass_().outcome == "in_sync" and len(world.serve.puts) == puts
    world.traffic(30)
    assert world.pass_().outcome == "applied" and world.weights() == {"1": 40, "2": 60}
    actions = [e.action for e in world.ctl.store.rollout_events("staging")]
    assert actions.count("start") == 1 and actions.count("set_weight") == 2


def test_killed_between_deciding_and_applying_converges_without_skipping(world: World) -> None:
    world.push("2")
    world.pass_()

    class Boom(Exception):
        pass

    real_put = world.serve.put

    def dying_put(apps: list[dict[str, Any]], live: Any) -> None:
        raise Boom("killed")

    world.serve.put = dying_put  # type: ignore[method-assign]
    with pytest.raises(Boom):
        world.pass_()  # decided step 1 and saved it, died before writing Serve
    world.serve.put = real_put  # type: ignore[method-assign]
    assert world.weights() == {"1": 100, "2": 0}

    world.ctl = world.controller()
    assert world.pass_().outcome == "applied"
    assert world.weights() == {"1": 75, "2": 25}  # step 1, not step 2
    assert [e.weight for e in world.ctl.store.rollout_events("staging")] == [25, 0]


def test_too_little_traffic_pauses_and_resume_and_promote_drive_it(world: World) -> None:
    world.push("2")
    world.pass_()
    world.pass_()
    for _ in range(3):
        world.metrics.serve("2", 2)
        world.pass_(30)
    state = world.ctl.store.rollouts("staging")["fraud"].state
    assert state.paused and "inconclusive" in state.message
    world.traffic(60)
    world.pass_()
    assert world.weights() == {"1": 75, "2": 25}  # paused: time and traffic do not move it

    world.ctl.store.add_rollout_command("staging", "fraud", "promote", "alice")
    assert world.pass_().outcome == "applied" and world.weights() == {"1": 40, "2": 60}
    world.ctl.store.add_rollout_command("staging", "fraud", "pause", "bob")
    world.traffic(120)
    world.pass_()
    assert world.weights() == {"1": 40, "2": 60}
    world.ctl.store.add_rollout_command("staging", "fraud", "promote_full", "bob")
    world.pass_()
    assert world.weights() == {"2": 100}
    assert world.ctl.store.pending_rollout_commands("staging") == []


def test_operator_abort(world: World) -> None:
    world.push("2")
    world.pass_()
    world.pass_()
    world.ctl.store.add_rollout_command("staging", "fraud", "abort", "carol: wrong model")
    result = world.pass_()
    assert "aborted by carol: wrong model" in result.message
    assert world.weights() == {"1": 100}


def test_a_revert_during_a_rollout_goes_straight_back(world: World) -> None:
    world.push("2")
    world.pass_()
    world.pass_()
    world.push("1")
    world.pass_()
    assert world.weights() == {"1": 100} and apps(world.serve) == {"fraud", "fraud--v1"}
    assert world.ctl.store.rollouts("staging")["fraud"].state.phase == "completed"


def test_the_candidate_failing_to_start_aborts_without_traffic(world: World) -> None:
    world.serve.failing.add("fraud--v2")
    world.push("2")
    first = world.pass_()
    assert first.outcome == "applied"  # apply does not wait for a rollout's candidate
    aborted = world.pass_()
    assert "aborted: candidate fraud--v2 failed" in aborted.message
    assert world.weights() == {"1": 100}


def test_immediate_strategy_is_unchanged(tmp_path: Path) -> None:
    w = World(tmp_path, rollout="")
    w.push("2")
    result = w.pass_()
    assert result.outcome == "applied" and "rollout" not in result.message
    assert w.weights() == {"2": 100} and apps(w.serve) == {"fraud", "fraud--v2"}
    assert "rollout" not in w.serve.apps["fraud"]["deployments"][0]["user_config"]
    assert w.ctl.store.rollouts("staging") == {}
    w.close()


def test_blue_green_previews_with_mirrored_traffic_switches_in_one_write(tmp_path: Path) -> None:
    w = World(tmp_path, rollout=BLUE_GREEN)
    w.push("2")
    w.pass_()
    w.pass_()
    router = w.router()
    assert w.weights() == {"1": 100, "2": 0}
    assert [(t.version, t.weight) for t in router.shadow] == [("2", 100)]
    w.traffic(30)
    puts = len(w.serve.puts)
    switched = w.pass_()
    assert "switched to fraud--v2" in switched.message
    assert len(w.serve.puts) == puts + 1  # one atomic write
    assert w.weights() == {"1": 0, "2": 100} and not w.router().shadow
    assert apps(w.serve) == {"fraud", "fraud--v1", "fraud--v2"}  # v1 kept for rollback
    w.traffic(30)
    w.pass_()
    w.traffic(60)
    w.pass_()
    assert apps(w.serve) == {"fraud", "fraud--v1", "fraud--v2"}
    w.traffic(30)
    w.pass_()
    assert apps(w.serve) == {"fraud", "fraud--v2"} and w.weights() == {"2": 100}
    w.close()


def test_blue_green_rollback_after_the_switch_is_a_weight_change(tmp_path: Path) -> None:
    w = World(tmp_path, rollout=BLUE_GREEN)
    w.push("2")
    w.pass_()
    w.pass_()
    w.traffic(30)
    w.pass_()
    assert w.weights() == {"1": 0, "2": 100}
    w.traffic(30, errors_v2=30)
    result = w.pass_()
    assert "aborted" in result.message and w.weights() == {"1": 100}
    w.close()


def test_rollback_commit_after_an_abort_brings_git_and_serve_back_to_stable(world: World) -> None:
    from controller.source.rollback import plan_rollback, write_rollback

    world.push("2")
    world.pass_()
    world.pass_()
    world.traffic(30, errors_v2=10)
    assert world.pass_().outcome == "aborted"
    write_rollback(plan_rollback(world.repo, "staging", "fraud"), "v2 errors")
    result = world.pass_()
    assert result.outcome == "applied"  # Git says v1 again: no longer held, no new rollout
    assert world.weights() == {"1": 100} and world.router().rollout is None
    [row] = deployment_statuses(world.serve.get(), "staging")
    assert row.health == "Healthy"
    assert world.pass_().outcome == "in_sync"

"""The GitOps controller's reconcile pass, against FakeServe, real Git repositories and SQLite."""

from __future__ import annotations

import datetime as dt
import random
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.cluster.live import LiveDeployment, LiveState
from controller.gitops.notify import Event
from controller.gitops.reconciler import (
    Controller,
    ControllerSettings,
    DriftMode,
    PassResult,
    Wakeup,
    jittered,
    run_forever,
)
from controller.gitops.state import PassStart, StateStore
from controller.registry.mlflow import FixedRegistry, Registry, ResolvedModel
from controller.source.repository import RepoSource
from controller.sync.apply import apply_plan
from controller.sync.read import Target, plan_revision
from tests.support import FakeServe, commit, deployment_yaml, git, make_repo, unmanaged_app

FRAUD = "deployments/staging/fraud.yaml"
MODELS = {"fraud": {"1": "1", "2": "2", "3": "3", "@champion": "1"}}


class Clock:
    """A settable clock, for leases that expire without waiting."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def notify(self, event: Event) -> None:
        self.events.append(event)

    @property
    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


class World:
    """One repository, one fake cluster, one state file; controllers made on demand."""

    def __init__(self, tmp_path: Path) -> None:
        self.repo = tmp_path / "repo"
        self.head = make_repo(self.repo, {FRAUD: deployment_yaml()})
        self.serve = FakeServe()
        self.state = tmp_path / "state" / "state.db"
        self.clock = Clock()
        self.models = {k: dict(v) for k, v in MODELS.items()}
        self.notes = Recorder()
        self.stores: list[StateStore] = []

    def registry(self) -> Registry:
        return FixedRegistry(self.models)

    def store(self) -> StateStore:
        store = StateStore(self.state, clock=self.clock)
        self.stores.append(store)
        return store

    def controller(
        self, drift: DriftMode = "warn", holder: str = "ctl-a", prune: bool = False
    ) -> Controller:
        return Controller(
            RepoSource(str(self.repo), branch="main"),
            self.serve,
            self.store(),
            self.registry,
            ControllerSettings("staging", interval_s=10, drift=drift, prune=prune, actor="tester"),
            notifier=self.notes,
            holder=holder,
        )

    def commit(self, files: dict[str, str | None], message: str = "change") -> str:
        self.head = commit(self.repo, files, message)
        return self.head

    def close(self) -> None:
        for store in self.stores:
            store.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def router_targets(serve: FakeServe) -> list[str]:
    return [t["app"] for t in serve.apps["fraud"]["deployments"][0]["user_config"]["targets"]]


# --- one apply per commit ---------------------------------------------------------------------


def test_new_commit_is_applied_once_then_passes_do_nothing(world: World) -> None:
    ctl = world.controller()
    first = ctl.reconcile_once()
    assert first.outcome == "applied" and first.commit == world.head
    assert first.requeue_after == 10 and first.exit_code == 0
    assert set(world.serve.apps) == {"fraud", "fraud--v1"}
    puts = len(world.serve.puts)

    for _ in range(3):
        again = ctl.reconcile_once()
        assert again.outcome == "in_sync" and again.pass_id is None
    assert len(world.serve.puts) == puts  # idempotent: nothing written again
    [row] = ctl.store.history("staging")
    assert (row.result, row.commit, row.actor, row.trigger) == (
        "applied",
        world.head,
        "tester",
        "poll",
    )
    assert row.plan is not None and row.plan.source.commit == world.head
    assert row.finished_at is not None and row.finished_at >= row.started_at
    assert world.notes.kinds == ["deployed"]


def test_each_new_commit_is_applied_and_history_lists_newest_first(world: World) -> None:
    ctl = world.controller()
    first = world.head
    ctl.reconcile_once()
    second = world.commit({FRAUD: deployment_yaml(model="models:/fraud/2")}, "v2")
    result = ctl.reconcile_once()
    assert result.outcome == "applied" and result.commit == second
    assert router_targets(world.serve) == ["fraud--v2"]
    assert set(world.serve.apps) == {"fraud", "fraud--v2"}
    assert [(r.commit, r.result) for r in ctl.store.history("staging")] == [
        (second, "applied"),
        (first, "applied"),
    ]
    assert ctl.store.environment("staging").last_applied_commit == second


def test_commit_that_does_not_change_the_environment_writes_nothing(world: World) -> None:
    ctl = world.controller()
    ctl.reconcile_once()
    puts = len(world.serve.puts)
    head = world.commit({"README.md": "docs\n"}, "docs only")
    result = ctl.reconcile_once()
    assert result.outcome == "in_sync" and len(world.serve.puts) == puts
    assert ctl.store.environment("staging").last_applied_commit == head
    assert len(ctl.store.history("staging")) == 1


# --- failures: one attempt per commit ---------------------------------------------------------


def test_failed_revision_is_not_retried_until_a_new_commit(world: World) -> None:
    ctl = world.controller()
    ctl.reconcile_once()
    world.serve.failing.add("fraud--v2")
    bad = world.commit({FRAUD: deployment_yaml(model="models:/fraud/2")}, "v2")
    failed = ctl.reconcile_once()
    assert failed.outcome == "failed" and failed.exit_code == 1
    assert "fraud--v2 is DEPLOY_FAILED" in failed.message
    assert "fraud--v1" in world.serve.apps  # the old version still serves
    puts = len(world.serve.puts)

    for _ in range(3):
        skipped = ctl.reconcile_once()
        assert skipped.outcome == "skipped" and skipped.commit == bad
        assert "not attempted again until a new commit" in skipped.message
        assert "serveops sync --retry" in skipped.message
    assert len(world.serve.puts) == puts
    assert [r.result for r in ctl.store.history("staging")] == ["failed", "applied"]
    assert world.notes.kinds == ["deployed", "sync_failed"]

    world.serve.failing.clear()
    world.serve.status["fraud--v2"] = "RUNNING"  # the cause was fixed
    fixed = world.commit({FRAUD: deployment_yaml(model="models:/fraud/3")}, "v3")
    result = ctl.reconcile_once()
    assert result.outcome == "applied" and result.commit == fixed
    assert router_targets(world.serve) == ["fraud--v3"]
    assert ctl.store.environment("staging").last_failed_commit is None


def test_retry_attempts_a_failed_revision_again(world: World) -> None:
    ctl = world.controller()
    ctl.reconcile_once()
    world.serve.failing.add("fraud--v2")
    world.commit({FRAUD: deployment_yaml(model="models:/fraud/2")}, "v2")
    assert ctl.reconcile_once().outcome == "failed"
    assert ctl.reconcile_once().outcome == "skipped"

    world.serve.failing.clear()
    world.serve.status["fraud--v2"] = "RUNNING"
    result = ctl.reconcile_once(retry=True, trigger="sync")
    assert result.outcome == "applied"
    assert router_targets(world.serve) == ["fraud--v2"]
    assert ctl.store.history("staging")[0].trigger == "sync"


def test_invalid_revision_fails_as_bad_input_once(world: World) -> None:
    ctl = world.controller()
    ctl.reconcile_once()
    world.commit({FRAUD: deployment_yaml().replace("replicas: 1", "replicas: -3")}, "broken")
    result = ctl.reconcile_once()
    assert result.outcome == "failed" and result.bad_input and result.exit_code == 2
    assert "deployments/staging/fraud.yaml" in result.message
    assert ctl.reconcile_once().outcome == "skipped"
    assert [r.result for r in ctl.store.history("staging")] == ["failed", "applied"]


def test_unreachable_serve_is_retried_and_recorded_once(world: World) -> None:
    from controller.errors import Unreachable

    class DownServe(FakeServe):
        def get(self) -> LiveState:
            raise Unreachable("cannot reach the Ray dashboard at http://fake-ray:8265")

    world.serve = DownServe()
    ctl = world.controller()
    for _ in range(3):
        assert ctl.reconcile_once().outcome == "failed"
    [row] = ctl.store.history("staging")
    assert row.result == "failed" and row.repeats == 3
    assert ctl.store.environment("staging").last_failed_commit is None  # not the commit's fault
    assert world.notes.kinds == ["sync_failed"]  # notified once


def test_serve_moving_between_plan_and_apply_is_a_conflict_planned_again_at_once(
    world: World,
) -> None:
    class MovedOnce(FakeServe):
        """Someone else's application changes right after the controller's first read."""

        reads = 0

        def get(self) -> LiveState:
            live = super().get()
            self.reads += 1
            if self.reads == 1:
                self.apps["handmade"]["route_prefix"] = "/moved"
            return live

    world.serve = MovedOnce()
    world.serve.seed(unmanaged_app())
    ctl = world.controller()
    first = ctl.reconcile_once()
    assert first.outcome == "failed" and "changed since this plan was made" in first.message
    assert first.requeue_after < 1 and world.serve.puts == []  # nothing written, soon again
    assert ctl.store.environment("staging").last_failed_commit is None  # not the commit's fault
    assert world.notes.kinds == []
    second = ctl.reconcile_once()
    assert second.outcome == "applied" and set(world.serve.apps) == {
        "fraud",
        "fraud--v1",
        "handmade",
    }
    assert world.serve.apps["handmade"]["route_prefix"] == "/moved"  # their change was kept


def test_controller_misconfiguration_is_retried_not_blamed_on_the_revision(world: World) -> None:
    from controller.errors import BadInput

    class MissingStore(FixedRegistry):
        def resolve(self, uri: str) -> ResolvedModel:
            raise BadInput("no MLflow store at /nope.db")

    ctl = world.controller()
    ctl._registry = lambda: MissingStore({})
    for _ in range(2):
        result = ctl.reconcile_once()
        assert result.outcome == "failed" and result.exit_code == 2
    assert ctl.store.environment("staging").last_failed_commit is None
    [row] = ctl.store.history("staging")
    assert row.repeats == 2
    ctl._registry = world.registry  # fixed: the same revision now goes through
    assert ctl.reconcile_once().outcome == "applied"


def test_policy_gate_refuses_with_the_check_message(world: World) -> None:
    rules = textwrap.dedent(
        """\
        apiVersion: serveops.dev/v1alpha1
        kind: PolicyRules
        rules:
          - id: two-replicas
            description: at least two replicas
            match: {environments: [staging]}
            validations:
              - expression: object.spec.replicas != null && object.spec.replicas >= 2
                message: staging needs two replicas
                field: spec.replicas
        """
    )
    world.commit({"policies/rules.yaml": rules}, "policies")
    ctl = world.controller()
    result = ctl.reconcile_once()
    assert result.outcome == "refused" and result.exit_code == 1
    assert result.message.startswith("policy check failed: 1 error(s)")
    assert "staging needs two replicas" in result.message
    assert world.serve.puts == []
    assert ctl.reconcile_once().outcome == "skipped"
    assert [r.result for r in ctl.store.history("staging")] == ["refused"]
    assert world.notes.kinds == ["sync_failed"]


# --- restarts -----------------------------------------------------------------------------------


def test_restarted_controller_does_not_apply_again(world: World) -> None:
    world.controller(holder="first").reconcile_once()
    puts = len(world.serve.puts)
    # A new instance (a restarted process) on the same SQLite file.
    ctl = world.controller(holder="first")
    result = ctl.reconcile_once()
    assert result.outcome == "in_sync"
    assert len(world.serve.puts) == puts
    assert len(ctl.store.history("staging")) == 1


def test_restarted_controller_remembers_the_failed_revision(world: World) -> None:
    world.serve.failing.add("fraud--v1")
    assert world.controller(holder="first").reconcile_once().outcome == "failed"
    puts = len(world.serve.puts)
    result = world.controller(holder="first").reconcile_once()
    assert result.outcome == "skipped" and len(world.serve.puts) == puts


def test_controller_killed_during_an_apply_converges_without_a_duplicate(world: World) -> None:
    # The first process applied and was killed before recording the result: its audit row
    # says `running` and the environment's state knows nothing of the commit.
    store = world.store()
    plan = plan_revision(
        Target(str(world.repo), world.head, "staging"), world.serve, world.registry()
    )
    store.begin_pass(PassStart("staging", str(world.repo), "main", world.head, "x", "poll", plan))
    apply_plan(plan, world.serve)
    puts = len(world.serve.puts)

    ctl = world.controller(holder="second")
    result = ctl.reconcile_once()
    assert result.outcome == "in_sync"
    assert len(world.serve.puts) == puts
    [row] = ctl.store.history("staging")
    assert row.result == "interrupted" and row.finished_at is not None
    assert ctl.store.environment("staging").last_applied_commit == world.head


# --- the lease ----------------------------------------------------------------------------------


def test_second_controller_waits_while_the_lease_is_held(world: World) -> None:
    a = world.controller(holder="ctl-a")
    b = world.controller(holder="ctl-b")
    assert a.reconcile_once().outcome == "applied"
    world.commit({FRAUD: deployment_yaml(model="models:/fraud/2")}, "v2")
    puts = len(world.serve.puts)

    waiting = b.reconcile_once()
    assert waiting.outcome == "waiting" and waiting.exit_code == 1
    assert "held by controller ctl-a" in waiting.message
    assert len(world.serve.puts) == puts

    world.clock.advance(a.settings.lease_ttl + 1)  # a died: its lease runs out
    assert b.reconcile_once().outcome == "applied"
    assert a.reconcile_once().outcome == "waiting"  # now b holds it

    b.release()
    assert a.reconcile_once().outcome == "in_sync"


def test_lease_is_renewed_by_its_holder(tmp_path: Path) -> None:
    clock = Clock()
    with StateStore(tmp_path / "s.db", clock=clock) as store:
        first = store.acquire_lease("staging", "a", 30)
        clock.advance(20)
        renewed = store.acquire_lease("staging", "a", 30)
        assert first.acquired and renewed.acquired
        assert renewed.lease.acquired_at == first.lease.acquired_at
        assert renewed.lease.expires_at == clock.now + dt.timedelta(seconds=30)
        clock.advance(20)  # past the first expiry, within the renewed one
        other = store.acquire_lease("staging", "b", 30)
        assert not other.acquired and other.lease.holder == "a"


# --- drift --------------------------------------------------------------------------------------


def _hand_edit(serve: FakeServe) -> None:
    serve.apps["fraud--v1"]["deployments"][0]["max_ongoing_requests"] = 99


def test_drift_is_reported_once_in_warn_mode(world: World) -> None:
    ctl = world.controller(drift="warn")
    ctl.reconcile_once()
    _hand_edit(world.serve)
    puts = len(world.serve.puts)

    first = ctl.reconcile_once()
    assert first.outcome == "drift" and first.exit_code == 1
    assert "fraud--v1 changed (deployments[ModelServer].max_ongoing_requests)" in first.message
    second = ctl.reconcile_once()
    assert second.outcome == "drift" and second.pass_id is None
    assert len(world.serve.puts) == puts  # not restored
    assert world.serve.apps["fraud--v1"]["deployments"][0]["max_ongoing_requests"] == 99
    assert [r.result for r in ctl.store.history("staging")] == ["drift", "applied"]
    assert world.notes.kinds == ["deployed", "drift_detected"]


def test_drift_is_healed_in_enabled_mode(world: World) -> None:
    ctl = world.controller(drift="enabled")
    ctl.reconcile_once()
    wanted = dict(world.serve.apps["fraud--v1"]["deployments"][0])
    _hand_edit(world.serve)
    del world.serve.apps["fraud"]  # and the router deleted by hand too

    result = ctl.reconcile_once()
    assert result.outcome == "healed" and result.exit_code == 0
    assert "fraud is missing" in result.message
    assert world.serve.apps["fraud--v1"]["deployments"][0] == wanted
    assert router_targets(world.serve) == ["fraud--v1"]
    assert ctl.reconcile_once().outcome == "in_sync"
    assert [r.result for r in ctl.store.history("staging")] == ["healed", "applied"]
    assert world.notes.kinds == ["deployed", "drift_detected"]


def test_drift_is_ignored_when_disabled(world: World) -> None:
    ctl = world.controller(drift="disabled")
    ctl.reconcile_once()
    _hand_edit(world.serve)
    result = ctl.reconcile_once()
    assert result.outcome == "ignored" and result.exit_code == 0
    assert len(ctl.store.history("staging")) == 1


def test_moved_alias_is_a_change_of_desired_state_not_drift(world: World) -> None:
    world.commit({FRAUD: deployment_yaml(model="models:/fraud@champion")}, "alias")
    ctl = world.controller(drift="warn")
    assert ctl.reconcile_once().outcome == "applied"
    world.models["fraud"]["@champion"] = "2"  # promoted in the registry; Git did not move
    result = ctl.reconcile_once()
    assert result.outcome == "applied"
    assert router_targets(world.serve) == ["fraud--v2"]


class AutoscaledServe(FakeServe):
    """Reports replica counts like Ray does when its autoscaler has scaled a deployment up."""

    def get(self) -> LiveState:
        live = super().get()
        for app in live.apps.values():
            for name in list(app.deployments):
                app.deployments[name] = LiveDeployment(
                    name, "HEALTHY", "", replica_states={"RUNNING": 7}
                )
        return live


def test_replicas_set_by_the_autoscaler_are_never_drift(world: World) -> None:
    world.serve = AutoscaledServe()
    autoscaling = "autoscaling:\n  min_replicas: 1\n  max_replicas: 8\n"
    text = deployment_yaml(extra_spec=autoscaling).replace("  replicas: 1\n", "")
    world.commit({FRAUD: text}, "autoscaling")
    ctl = world.controller(drift="warn")
    assert ctl.reconcile_once().outcome == "applied"
    assert ctl.reconcile_once().outcome == "in_sync"


def test_prune_never_empties_an_environment_unless_allowed(world: World) -> None:
    world.controller().reconcile_once()
    world.commit({FRAUD: None}, "remove everything")
    ctl = world.controller(prune=True)
    result = ctl.reconcile_once()
    assert result.outcome == "failed" and "--allow-empty" in result.message
    assert set(world.serve.apps) == {"fraud", "fraud--v1"}


def test_without_prune_a_deployment_gone_from_git_stays(world: World) -> None:
    ctl = world.controller()
    ctl.reconcile_once()
    world.commit({FRAUD: None}, "remove everything")
    assert ctl.reconcile_once().outcome == "in_sync"
    assert set(world.serve.apps) == {"fraud", "fraud--v1"}


# --- Git sources --------------------------------------------------------------------------------


def test_url_is_mirrored_and_fetched_each_pass(tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    first = make_repo(upstream, {FRAUD: deployment_yaml()})
    source = RepoSource(f"file://{upstream}", branch="main", cache_dir=tmp_path / "cache")
    assert source.head() == first
    assert source.path.parent == tmp_path / "cache"
    second = commit(upstream, {FRAUD: deployment_yaml(model="models:/fraud/2")}, "v2")
    assert source.head() == second


def test_local_clone_follows_its_remote_branch(tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    make_repo(upstream, {FRAUD: deployment_yaml()})
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(upstream), str(clone))
    source = RepoSource(str(clone), branch="main")
    pushed = commit(upstream, {FRAUD: deployment_yaml(model="models:/fraud/2")}, "v2")
    assert source.head() == pushed  # fetched: origin/main, not the stale local main


def test_missing_branch_is_bad_input(world: World) -> None:
    ctl = world.controller()
    ctl.source = RepoSource(str(world.repo), branch="nope")
    result = ctl.reconcile_once()
    assert result.outcome == "failed" and result.exit_code == 2
    assert "branch 'nope' does not exist" in result.message


# --- the loop -----------------------------------------------------------------------------------


def test_run_forever_passes_until_stopped_and_releases_the_lease(world: World) -> None:
    ctl = world.controller()
    wakeup = Wakeup()
    results: list[PassResult] = []

    def on_result(result: PassResult) -> None:
        results.append(result)
        if len(results) == 1:
            wakeup.wake("webhook")  # a push arrived during the first pass: no wait
        else:
            wakeup.stop()

    run_forever(ctl, wakeup, on_result=on_result)
    assert [r.outcome for r in results] == ["applied", "in_sync"]
    assert ctl.store.lease("staging") is None
    assert [r.trigger for r in ctl.store.history("staging")] == ["poll"]


def test_wakeup_reports_what_woke_it() -> None:
    wakeup = Wakeup()
    wakeup.wake("webhook")
    assert wakeup.wait(60) == "webhook"
    assert wakeup.wait(0) == "poll"


def test_jitter_stays_within_its_bounds() -> None:
    rng = random.Random(7)
    delays = [jittered(10, 0.2, rng) for _ in range(200)]
    assert all(8 <= d <= 12 for d in delays)
    assert len(set(delays)) > 1
    assert jittered(10, 0, rng) == 10


def test_store_is_wal_sqlite_and_history_filters_by_environment(tmp_path: Path) -> None:
    import sqlite3

    clock = Clock()
    with StateStore(tmp_path / "s.db", clock=clock) as store:
        for i, env in enumerate(("staging", "production", "staging")):
            start = PassStart(env, "repo", "main", str(i) * 40, "tester", "poll")
            store.record_pass(start, "failed", f"boom in {env}", clock.now)
            clock.advance(1)
        assert [r.environment for r in store.history(limit=10)] == [
            "staging",
            "production",
            "staging",
        ]
        assert [r.message for r in store.history("staging", limit=1)] == ["boom in staging"]
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

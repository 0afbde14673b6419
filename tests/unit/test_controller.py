"""The GitOps controller's reconcile pass, against FakeServe, real Git repositories and SQLite."""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from controller.cli.main import app as cli
from controller.cluster.live import LiveDeployment, LiveState
from controller.errors import BadInput
from controller.gitops.loop import Wakeup, jittered, run_forever
from controller.gitops.outcome import PassResult
from controller.gitops.state import PassStart, StateStore
from controller.policy.evidence import open_store, write_evidence
from controller.registry.mlflow import FixedRegistry, ResolvedModel
from controller.source.repository import RepoSource
from controller.spec.manifest import load_manifests
from controller.sync.apply import ApplyProgress, apply_step
from controller.sync.read import Revision, plan_revision
from tests.support import FakeClock, FakeServe, World, commit, git, make_repo, unmanaged_app

FRAUD = "deployments/staging/fraud.yaml"

TWO_REPLICAS = textwrap.dedent(
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


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def router_targets(serve: FakeServe) -> list[str]:
    return [t["app"] for t in serve.apps["fraud"]["deployments"][0]["user_config"]["targets"]]


def results(world: World) -> list[str]:
    return [r.result for r in world.ctl.store.history("staging")]


# --- one apply per commit ---------------------------------------------------------------------


def test_new_commit_is_applied_once_then_passes_do_nothing(world: World) -> None:
    first = world.pass_()
    assert first.outcome == "applied"
    assert first.commit == world.head
    assert first.requeue_after == 10
    assert first.exit_code == 0
    assert set(world.serve.apps) == {"fraud", "fraud--v1"}
    puts = len(world.serve.puts)

    for _ in range(3):
        again = world.pass_()
        assert again.outcome == "in_sync"
        assert again.pass_id is None
    assert len(world.serve.puts) == puts  # idempotent: nothing written again
    [row] = world.ctl.store.history("staging")
    assert (row.result, row.commit, row.actor, row.trigger) == (
        "applied",
        world.head,
        "tester",
        "poll",
    )
    assert row.plan is not None
    assert row.plan.source.commit == world.head
    assert row.finished_at is not None
    assert row.finished_at >= row.started_at
    assert world.notes.kinds == ["deployed"]


def test_a_pass_never_waits_for_replicas_and_the_next_passes_continue_the_apply(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, latency=3)  # new versions take three reads to run
    first = world.pass_()
    assert first.outcome == "progressing"
    assert first.applying
    assert first.exit_code == 0
    assert "waiting for fraud, fraud--v1 to run" in first.message
    assert first.requeue_after < 1  # looks again soon, without sleeping in the pass
    assert results(world) == ["running"]

    done = world.sync()
    assert done.outcome == "applied"
    assert not done.applying
    assert results(world) == ["applied"]  # one row for the whole apply
    # The pass that ends the apply names what the apply changed, not what was left to do.
    assert "to 'staging': fraud (" in done.message
    assert "to 'staging': fraud (" in world.ctl.store.history("staging")[0].message
    assert world.notes.kinds == ["deployed"]

    second = world.push("2")
    switched = world.pass_()
    assert switched.outcome == "progressing"
    # The switch is written: the router falls back to v1 until v2 runs; nothing is deleted.
    assert set(world.serve.apps) == {"fraud", "fraud--v1", "fraud--v2"}
    fallback = world.serve.apps["fraud"]["deployments"][0]["user_config"]["fallback"]
    assert [t["app"] for t in fallback] == ["fraud--v1"]
    cleaned = world.sync()
    assert cleaned.outcome == "applied"
    assert "to 'staging': fraud (switch, clean," in cleaned.message
    assert set(world.serve.apps) == {"fraud", "fraud--v2"}  # cleaned on a later pass
    assert world.ctl.store.environment("staging").last_applied_commit == second
    assert world.clock.slept == 0  # no real or fake sleep inside any pass


def test_each_new_commit_is_applied_and_history_lists_newest_first(world: World) -> None:
    first = world.head
    world.sync()
    second = world.push("2")
    result = world.sync()
    assert result.outcome == "applied"
    assert result.commit == second
    assert router_targets(world.serve) == ["fraud--v2"]
    assert set(world.serve.apps) == {"fraud", "fraud--v2"}
    assert [(r.commit, r.result) for r in world.ctl.store.history("staging")] == [
        (second, "applied"),
        (first, "applied"),
    ]
    assert world.ctl.store.environment("staging").last_applied_commit == second


def test_commit_that_does_not_change_the_environment_writes_nothing(world: World) -> None:
    world.sync()
    puts = len(world.serve.puts)
    head = world.commit({"README.md": "docs\n"}, "docs only")
    result = world.pass_()
    assert result.outcome == "in_sync"
    assert len(world.serve.puts) == puts
    assert world.ctl.store.environment("staging").last_applied_commit == head
    assert len(world.ctl.store.history("staging")) == 1


# --- the gate comes first, with rules the change cannot touch -----------------------------------

WAIVER = textwrap.dedent(
    """\
    apiVersion: serveops.dev/v1alpha1
    kind: PolicyWaivers
    waivers:
      - rule: two-replicas
        deployments: [fraud]
        environments: [staging]
        owner: mallory
        reason: trust me
        expires: "2099-01-01"
    """
)


def test_policy_gate_refuses_with_the_check_message(world: World) -> None:
    (world.platform / "rules.yaml").write_text(TWO_REPLICAS)
    result = world.pass_()
    assert result.outcome == "refused"
    assert result.exit_code == 1
    assert result.message.startswith("policy check failed: 1 error(s)")
    assert "staging needs two replicas" in result.message
    assert world.serve.puts == []
    assert world.pass_().outcome == "skipped"
    assert results(world) == ["refused"]
    assert world.notes.kinds == ["sync_failed"]
    assert world.ctl.store.environment("staging").admitted is None  # nothing of it stored


def test_a_change_cannot_waive_or_delete_the_rules_that_judge_it(world: World) -> None:
    (world.platform / "rules.yaml").write_text(TWO_REPLICAS)
    # The revision brings its own waiver and an empty copy of the rules: neither counts.
    world.commit({"policies/waivers.yaml": WAIVER, "policies/rules.yaml": "rules: []\n"}, "waive")
    result = world.pass_()
    assert result.outcome == "refused"
    assert "staging needs two replicas" in result.message
    assert world.serve.puts == []


def test_without_a_platform_source_the_last_admitted_revision_judges_the_next(
    world: World,
) -> None:
    ctl = world.controller(policies=None, bootstrap_policies=world.head)  # a reviewed commit
    two = world.spec("1").replace("replicas: 1", "replicas: 2")
    world.commit({"policies/rules.yaml": TWO_REPLICAS, FRAUD: two}, "policies")
    assert world.sync(ctl=ctl).outcome == "applied"  # judged by the bootstrap revision's (none)
    # The next commit deletes the rule and breaks it: judged by the rules that landed before.
    world.commit({"policies/rules.yaml": None, FRAUD: world.spec("1")}, "delete and break it")
    refused = world.pass_(ctl=ctl)
    assert refused.outcome == "refused"
    assert "staging needs two replicas" in refused.message


def test_no_trusted_policies_means_nothing_is_admitted(world: World) -> None:
    ctl = world.controller(policies=None)
    result = world.pass_(ctl=ctl)
    assert result.outcome == "failed"
    assert result.exit_code == 2
    assert "no trusted policies" in result.message
    assert "--bootstrap-policies" in result.message
    assert world.serve.puts == []
    assert ctl.store.environment("staging").last_failed_commit is None


def test_a_lost_state_file_fails_closed_every_deployment_counts_as_created(
    world: World, tmp_path: Path
) -> None:
    created_only = TWO_REPLICAS.replace(
        "match: {environments: [staging]}",
        "match: {environments: [staging], changes: [created]}",
    ).replace("two-replicas", "new-needs-two")
    (world.platform / "rules.yaml").write_text(created_only)
    world.commit({FRAUD: world.spec("1").replace("replicas: 1", "replicas: 2")}, "two")
    assert world.sync().outcome == "applied"
    world.commit({FRAUD: world.spec("2")}, "v2 with one replica")  # an update: not judged
    assert world.sync().outcome == "applied"
    # The state file is lost: the controller no longer knows what is live, so v3 counts as
    # created, and the rule for new deployments applies.
    world.state = tmp_path / "another" / "state.db"
    world.commit({FRAUD: world.spec("3")}, "v3 with one replica")
    result = world.pass_(ctl=world.controller())
    assert result.outcome == "refused"
    assert "staging needs two replicas" in result.message


SIMULATED = textwrap.dedent(
    """\
    apiVersion: serveops.dev/v1alpha1
    kind: PolicyRules
    rules:
      - id: simulated
        description: a model change needs a passed simulation
        match: {environments: [staging], changes: [updated]}
        matchConditions:
          - {name: model-changed, expression: change.modelChanged}
        validations:
          - expression: simulation != null && simulation.passed == true
            message: no simulation evidence for this model change
            field: spec.model
    """
)


def test_simulation_evidence_admits_a_squash_merged_change_and_its_absence_refuses(
    world: World, tmp_path: Path
) -> None:
    key = b"k" * 32
    store = open_store(str(tmp_path / "evidence"))
    (world.platform / "rules.yaml").write_text(SIMULATED)
    ctl = world.controller(evidence=store, evidence_key=key)
    assert world.sync(ctl=ctl).outcome == "applied"

    # The simulate job ran on the pull request's head; the branch is then squash-merged, so
    # the commit the controller sees is not the one simulated: the record is keyed by the spec.
    branch_head = "f" * 40
    spec = load_manifests({FRAUD: world.spec("2")})[0].deployment
    report = {"verdict": "pass", "passed": True, "reason": "equivalent", "checks": []}
    write_evidence(store, spec, "2", report, {"base": world.head, "head": branch_head}, key)
    world.push("2")  # the squash merge
    assert world.sync(ctl=ctl).outcome == "applied"

    world.push("3")  # never simulated
    refused = world.pass_(ctl=ctl)
    assert refused.outcome == "refused"
    assert "no simulation evidence" in refused.message
    assert world.weights() == {"2": 100}


def test_a_commit_that_changes_only_fields_serve_never_sees_is_gated(world: World) -> None:
    assert world.sync().outcome == "applied"
    (world.platform / "rules.yaml").write_text(
        TWO_REPLICAS.replace("staging needs two replicas", "no rollout block").replace(
            "object.spec.replicas != null && object.spec.replicas >= 2",
            "\"object.spec.rollout.strategy == 'immediate'\"",
        )
    )
    rollout = "rollout:\n  strategy: canary\n  steps:\n    - weight: 50\n      pause: 1m\n"
    head = world.commit({FRAUD: world.spec("1", rollout)}, "canary settings only")
    puts = len(world.serve.puts)
    result = world.pass_()
    assert result.outcome == "refused"
    assert "no rollout block" in result.message
    assert len(world.serve.puts) == puts
    state = world.ctl.store.environment("staging")
    assert state.admitted is not None
    assert state.admitted.commit != head
    assert state.last_failed_commit == head


# --- failures: one attempt per commit ---------------------------------------------------------


def test_failed_revision_is_not_retried_until_a_new_commit(world: World) -> None:
    world.sync()
    world.serve.failing.add("fraud--v2")
    bad = world.push("2")
    failed = world.sync()
    assert failed.outcome == "failed"
    assert failed.exit_code == 1
    assert "fraud--v2 is DEPLOY_FAILED" in failed.message
    assert "fraud--v1" in world.serve.apps  # the old version still serves
    puts = len(world.serve.puts)

    for _ in range(3):
        skipped = world.pass_()
        assert skipped.outcome == "skipped"
        assert skipped.commit == bad
        assert "not attempted again until a new commit" in skipped.message
        assert "serveops sync --retry" in skipped.message
    assert len(world.serve.puts) == puts
    assert results(world) == ["failed", "applied"]
    # Later passes still watch health: the failed version left in Serve is Degraded, once.
    assert world.notes.kinds == ["deployed", "sync_failed", "degraded"]

    world.serve.failing.clear()
    world.serve.status["fraud--v2"] = "RUNNING"  # the cause was fixed
    fixed = world.push("3")
    result = world.sync()
    assert result.outcome == "applied"
    assert result.commit == fixed
    assert router_targets(world.serve) == ["fraud--v3"]
    assert world.ctl.store.environment("staging").last_failed_commit is None


def test_retry_attempts_a_failed_revision_again(world: World) -> None:
    world.sync()
    world.serve.failing.add("fraud--v2")
    world.push("2")
    assert world.sync().outcome == "failed"
    assert world.pass_().outcome == "skipped"

    world.serve.failing.clear()
    world.serve.status["fraud--v2"] = "RUNNING"
    first = world.ctl.reconcile_once(retry=True, trigger="sync")
    assert first.outcome in ("applied", "progressing")
    assert world.sync().outcome == "applied"
    assert router_targets(world.serve) == ["fraud--v2"]
    assert world.ctl.store.history("staging")[0].trigger == "sync"


def test_invalid_revision_fails_as_bad_input_once(world: World) -> None:
    world.sync()
    world.commit({FRAUD: world.spec("1").replace("replicas: 1", "replicas: -3")}, "broken")
    result = world.pass_()
    assert result.outcome == "failed"
    assert result.bad_input
    assert result.exit_code == 2
    assert "deployments/staging/fraud.yaml" in result.message
    assert world.pass_().outcome == "skipped"
    assert results(world) == ["failed", "applied"]


def test_unreachable_serve_is_retried_recorded_once_and_the_recovery_recorded(
    world: World,
) -> None:
    world.serve.down = True
    for _ in range(3):
        assert world.pass_().outcome == "failed"
    [row] = world.ctl.store.history("staging")
    assert row.result == "failed"
    assert row.repeats == 3
    state = world.ctl.store.environment("staging")
    assert state.last_failed_commit is None  # not the commit's fault
    assert world.notes.kinds == ["sync_failed"]  # notified once

    world.serve.down = False
    assert world.pass_().outcome == "applied"
    world.serve.down = True
    world.pass_()
    world.serve.down = False
    assert world.pass_().outcome == "in_sync"
    # The newest row is the truth: Serve came back and nothing needed doing.
    assert results(world)[:2] == ["recovered", "failed"]


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
    first = world.pass_()
    assert first.outcome == "failed"
    assert "changed since this plan was made" in first.message
    assert first.requeue_after < 1
    assert world.serve.puts == []
    assert world.ctl.store.environment("staging").last_failed_commit is None
    assert world.notes.kinds == ["sync_failed"]
    second = world.sync()
    assert second.outcome == "applied"
    assert set(world.serve.apps) == {"fraud", "fraud--v1", "handmade"}
    assert world.serve.apps["handmade"]["route_prefix"] == "/moved"  # their change was kept


def test_controller_misconfiguration_is_retried_not_blamed_on_the_revision(world: World) -> None:
    class MissingStore(FixedRegistry):
        def resolve(self, uri: str) -> ResolvedModel:
            raise BadInput("no MLflow store at /nope.db")

    ctl = world.controller()
    broken = world.controller(holder="ctl")
    object.__setattr__(broken.ctx, "registry", lambda: MissingStore({}))
    for _ in range(2):
        result = world.pass_(ctl=broken)
        assert result.outcome == "failed"
        assert result.exit_code == 2
    assert ctl.store.environment("staging").last_failed_commit is None
    [row] = ctl.store.history("staging")
    assert row.repeats == 2
    assert world.sync(ctl=ctl).outcome == "applied"  # fixed: the same revision goes through


def test_a_crashing_pass_is_recorded_notified_and_backed_off(world: World) -> None:
    def boom() -> FixedRegistry:
        raise RuntimeError("a bug")

    ctl = world.controller()
    object.__setattr__(ctl.ctx, "registry", boom)
    delays = [world.pass_(ctl=ctl).requeue_after for _ in range(4)]
    assert delays == [10, 20, 40, 80]  # exponential, from the interval
    [row] = ctl.store.history("staging")
    assert row.result == "failed"
    assert "RuntimeError: a bug" in row.message
    assert row.repeats == 4
    assert world.notes.kinds == ["sync_failed"]


# --- restarts -----------------------------------------------------------------------------------


def test_restarted_controller_does_not_apply_again(world: World) -> None:
    world.sync(ctl=world.controller(holder="first"))
    puts = len(world.serve.puts)
    ctl = world.controller(holder="first")  # a restarted process on the same SQLite file
    assert world.pass_(ctl=ctl).outcome == "in_sync"
    assert len(world.serve.puts) == puts
    assert len(ctl.store.history("staging")) == 1


def test_restarted_controller_remembers_the_failed_revision(world: World) -> None:
    world.serve.failing.add("fraud--v1")
    assert world.pass_(ctl=world.controller(holder="first")).outcome == "failed"
    puts = len(world.serve.puts)
    result = world.pass_(ctl=world.controller(holder="first"))
    assert result.outcome == "skipped"
    assert len(world.serve.puts) == puts


def test_a_controller_killed_during_an_apply_is_continued_by_the_next(tmp_path: Path) -> None:
    world = World(tmp_path, latency=2)
    world.sync()
    world.push("2")
    assert world.pass_().outcome == "progressing"  # switch written, then the process dies
    puts = len(world.serve.puts)

    restarted = world.controller()
    done = world.sync(ctl=restarted)
    assert done.outcome == "applied"
    assert len(world.serve.puts) == puts + 1  # only the clean phase was left to write
    assert results(world) == ["applied", "applied"]  # the apply's own row, not interrupted


def test_a_pass_killed_after_a_write_but_before_recording_converges(world: World) -> None:
    # The first process applied and died before recording: its audit row says `running`
    # and the environment's state knows nothing of the commit.
    store = world.store()
    plan = plan_revision(
        Revision(str(world.repo), world.head, "staging"), world.serve, world.registry()
    )
    store.begin_pass(PassStart("staging", str(world.repo), "main", world.head, "x", "poll", plan))
    apply_step(plan, world.serve, ApplyProgress(world.clock.now()), world.clock.now())
    puts = len(world.serve.puts)

    ctl = world.controller(holder="second")
    result = world.pass_(ctl=ctl)
    assert result.outcome == "in_sync"
    assert len(world.serve.puts) == puts
    assert [r.result for r in ctl.store.history("staging")] == ["recovered", "interrupted"]
    assert ctl.store.history("staging")[1].finished_at is not None
    assert ctl.store.environment("staging").last_applied_commit == world.head


# --- the lease ----------------------------------------------------------------------------------


def test_second_controller_waits_while_the_lease_is_held(world: World) -> None:
    a = world.controller(holder="ctl-a")
    b = world.controller(holder="ctl-b")
    assert world.sync(ctl=a).outcome == "applied"
    world.push("2")
    puts = len(world.serve.puts)

    waiting = world.pass_(ctl=b)
    assert waiting.outcome == "waiting"
    assert waiting.exit_code == 1
    assert "held by controller ctl-a" in waiting.message
    assert len(world.serve.puts) == puts

    world.clock.advance(a.settings.lease_ttl + 1)  # a died: its lease runs out
    assert world.sync(ctl=b).outcome == "applied"
    assert world.pass_(ctl=a).outcome == "waiting"  # now b holds it

    b.release()
    assert world.pass_(ctl=a).outcome == "in_sync"


def test_lease_is_renewed_by_its_holder(tmp_path: Path) -> None:
    clock = FakeClock()
    with StateStore(tmp_path / "s.db", clock=clock) as store:
        first = store.acquire_lease("staging", "a", 30)
        clock.advance(20)
        renewed = store.acquire_lease("staging", "a", 30)
        assert first.acquired
        assert renewed.acquired
        assert renewed.lease.acquired_at == first.lease.acquired_at
        assert renewed.lease.expires_at == clock.now() + dt.timedelta(seconds=30)
        clock.advance(20)  # past the first expiry, within the renewed one
        other = store.acquire_lease("staging", "b", 30)
        assert not other.acquired
        assert other.lease.holder == "a"


def test_a_restarted_controller_takes_its_own_lease_back_at_once(tmp_path: Path) -> None:
    world = World(tmp_path, latency=2)
    first = world.controller(holder="host:state")
    world.sync(ctl=first)
    world.push("2")
    assert world.pass_(ctl=first).outcome == "progressing"  # then SIGKILL: the lease stays

    restarted = world.controller(holder="host:state")  # same identity, a new process
    assert restarted.instance != first.instance
    assert world.sync(ctl=restarted).outcome == "applied"  # no wait for the lease to run out
    assert restarted.store.lease("staging").epoch == 2  # type: ignore[union-attr]


def test_a_superseded_instance_stops_writing(world: World) -> None:
    old = world.controller(holder="host:state")
    assert world.sync(ctl=old).outcome == "applied"
    new = world.controller(holder="host:state")  # restarted while the old one still runs
    assert world.pass_(ctl=new).outcome == "in_sync"
    world.push("2")
    puts = len(world.serve.puts)

    fenced = world.pass_(ctl=old)
    assert fenced.outcome == "waiting"
    assert f"superseded by instance {new.instance} of the same identity" in fenced.message
    assert len(world.serve.puts) == puts  # nothing written by the old instance


def test_a_sync_on_the_same_state_file_takes_the_lease_and_gives_it_back(world: World) -> None:
    running = world.controller(holder="host:state")
    assert world.sync(ctl=running).outcome == "applied"
    by_hand = world.controller(holder="host:state")  # `serveops sync`: same identity
    assert world.pass_(ctl=by_hand).outcome == "in_sync"
    assert world.pass_(ctl=running).outcome == "waiting"  # while the sync holds it
    by_hand.release()  # the sync ends
    world.push("2")
    assert world.pass_(ctl=running).outcome == "progressing"  # the controller goes on


def test_a_lease_that_changes_hands_mid_pass_fences_the_write(world: World) -> None:
    a = world.controller(holder="ctl-a")
    assert world.sync(ctl=a).outcome == "applied"
    world.push("2")
    puts = len(world.serve.puts)
    took = a.store.acquire_lease

    # Between a's lease check and its write, its lease is broken and b takes the environment.
    def steal(*args: Any, **kwargs: Any) -> Any:
        result = took(*args, **kwargs)
        a.store.break_lease("staging")
        took("staging", "ctl-b", 30, "b:1")
        return result

    a.store.acquire_lease = steal  # type: ignore[method-assign]
    fenced = world.pass_(ctl=a)
    assert fenced.outcome == "waiting"
    assert "changed hands during this pass; nothing written" in fenced.message
    assert len(world.serve.puts) == puts


def test_an_operator_breaks_a_stale_lease(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    a = world.controller(holder="ctl-a")
    assert world.sync(ctl=a).outcome == "applied"
    b = world.controller(holder="ctl-b")
    assert world.pass_(ctl=b).outcome == "waiting"
    state = str(world.store().path)

    shown = CliRunner().invoke(cli, ["lease", "--env", "staging", "--state", state])
    assert shown.exit_code == 0, shown.output
    assert f"ctl-a (process {a.instance}, epoch 1)" in shown.output  # the world's clock is not now
    broken = CliRunner().invoke(cli, ["lease", "--env", "staging", "--state", state, "--break"])
    assert broken.exit_code == 0, broken.output
    assert f"broke the lease of ctl-a (process {a.instance}" in broken.output
    assert world.pass_(ctl=b).outcome == "in_sync"


# --- drift --------------------------------------------------------------------------------------


def _hand_edit(serve: FakeServe) -> None:
    serve.apps["fraud--v1"]["deployments"][0]["max_ongoing_requests"] = 99


def test_drift_is_reported_once_in_warn_mode(world: World) -> None:
    world.ctl = world.controller(drift="warn")
    world.sync()
    _hand_edit(world.serve)
    puts = len(world.serve.puts)

    first = world.pass_()
    assert first.outcome == "drift"
    assert first.exit_code == 1
    assert "fraud--v1 changed (deployments[ModelServer].max_ongoing_requests)" in first.message
    second = world.pass_()
    assert second.outcome == "drift"
    assert second.pass_id is None
    assert len(world.serve.puts) == puts  # not restored
    assert world.serve.apps["fraud--v1"]["deployments"][0]["max_ongoing_requests"] == 99
    assert results(world) == ["drift", "applied"]
    assert world.notes.kinds == ["deployed", "drift_detected"]


def test_drift_is_healed_in_enabled_mode(world: World) -> None:
    world.ctl = world.controller(drift="enabled")
    world.sync()
    wanted = dict(world.serve.apps["fraud--v1"]["deployments"][0])
    _hand_edit(world.serve)
    del world.serve.apps["fraud"]  # and the router deleted by hand too

    result = world.sync()
    assert result.outcome == "healed"
    assert result.exit_code == 0
    assert "fraud is missing" in result.message
    assert world.serve.apps["fraud--v1"]["deployments"][0] == wanted
    assert router_targets(world.serve) == ["fraud--v1"]
    assert world.pass_().outcome == "in_sync"
    assert results(world) == ["healed", "applied"]
    assert world.notes.kinds == ["deployed", "drift_detected"]


def test_drift_is_ignored_when_disabled(world: World) -> None:
    world.ctl = world.controller(drift="disabled")
    world.sync()
    _hand_edit(world.serve)
    result = world.pass_()
    assert result.outcome == "ignored"
    assert result.exit_code == 0
    assert len(world.ctl.store.history("staging")) == 1


def test_moved_alias_is_a_change_of_desired_state_not_drift(world: World) -> None:
    world.commit({FRAUD: world.spec("1").replace("fraud/1", "fraud@champion")}, "alias")
    world.ctl = world.controller(drift="warn")
    assert world.sync().outcome == "applied"
    world.models["fraud"]["@champion"] = "2"  # promoted in the registry; Git did not move
    result = world.sync()
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
    text = world.spec("1", autoscaling).replace("  replicas: 1\n", "")
    world.commit({FRAUD: text}, "autoscaling")
    assert world.sync().outcome == "applied"
    assert world.pass_().outcome == "in_sync"


def test_prune_never_empties_an_environment_unless_allowed(world: World) -> None:
    world.sync()
    world.commit({FRAUD: None}, "remove everything")
    result = world.pass_(ctl=world.controller(prune=True))
    assert result.outcome == "failed"
    assert "--allow-empty" in result.message
    assert set(world.serve.apps) == {"fraud", "fraud--v1"}


def test_without_prune_a_deployment_gone_from_git_stays(world: World) -> None:
    world.sync()
    world.commit({FRAUD: None}, "remove everything")
    assert world.pass_().outcome == "in_sync"
    assert set(world.serve.apps) == {"fraud", "fraud--v1"}


# --- Git sources --------------------------------------------------------------------------------


def test_url_is_mirrored_and_fetched_each_pass(tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    world = World(tmp_path)
    first = make_repo(upstream, {FRAUD: world.spec("1")})
    source = RepoSource(f"file://{upstream}", branch="main", cache_dir=tmp_path / "cache")
    assert source.head() == first
    assert source.path.parent == tmp_path / "cache"
    second = commit(upstream, {FRAUD: world.spec("2")}, "v2")
    assert source.head() == second


def test_local_clone_follows_its_remote_branch(tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    world = World(tmp_path)
    make_repo(upstream, {FRAUD: world.spec("1")})
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(upstream), str(clone))
    source = RepoSource(str(clone), branch="main")
    pushed = commit(upstream, {FRAUD: world.spec("2")}, "v2")
    assert source.head() == pushed  # fetched: origin/main, not the stale local main


def test_a_local_clone_whose_remote_is_gone_fails_the_pass_not_the_revision(
    tmp_path: Path,
) -> None:
    upstream = tmp_path / "upstream"
    world = World(tmp_path)
    make_repo(upstream, {FRAUD: world.spec("1")})
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(upstream), str(clone))
    ctl = world.controller()
    object.__setattr__(ctl.ctx, "source", RepoSource(str(clone), branch="main"))
    assert world.sync(ctl=ctl).outcome == "applied"
    commit(upstream, {FRAUD: world.spec("2")}, "v2")
    (upstream / ".git").rename(tmp_path / "moved.git")  # the remote is unreachable

    result = world.pass_(ctl=ctl)
    assert result.outcome == "failed"  # not in_sync on what was fetched last
    assert "cannot fetch origin" in result.message
    assert ctl.store.environment("staging").last_failed_commit is None  # transient: no mark


def test_missing_branch_is_bad_input(world: World) -> None:
    ctl = world.controller()
    object.__setattr__(ctl.ctx, "source", RepoSource(str(world.repo), branch="nope"))
    result = world.pass_(ctl=ctl)
    assert result.outcome == "failed"
    assert result.exit_code == 2
    assert "branch 'nope' does not exist" in result.message


# --- the loop -----------------------------------------------------------------------------------


def test_run_forever_passes_until_stopped_and_releases_the_lease(world: World) -> None:
    ctl = world.controller()
    wakeup = Wakeup()
    seen: list[PassResult] = []

    def on_result(result: PassResult) -> None:
        seen.append(result)
        if len(seen) == 1:
            wakeup.wake("webhook")  # a push arrived during the first pass: no wait
        else:
            wakeup.stop()

    run_forever(ctl, wakeup, on_result=on_result)
    assert [r.outcome for r in seen] == ["applied", "in_sync"]
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
    clock = FakeClock()
    with StateStore(tmp_path / "s.db", clock=clock) as store:
        for i, env in enumerate(("staging", "production", "staging")):
            start = PassStart(env, "repo", "main", str(i) * 40, "tester", "poll")
            store.record_pass(start, "failed", f"boom in {env}", clock.now())
            clock.advance(1)
        assert [r.environment for r in store.history(limit=10)] == [
            "staging",
            "production",
            "staging",
        ]
        assert [r.message for r in store.history("staging", limit=1)] == ["boom in staging"]
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_version_1_state_file_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE environments (environment TEXT PRIMARY KEY, last_applied_commit TEXT,"
            " last_applied_at TEXT, last_applied_plan TEXT, last_failed_commit TEXT,"
            " last_failed_at TEXT, last_failed_message TEXT, drift_fingerprint TEXT)"
        )
        db.execute("INSERT INTO environments (environment, last_applied_commit) VALUES ('s', 'c')")
        db.execute("PRAGMA user_version = 1")
    with StateStore(path) as store:
        state = store.environment("s")
        assert state.last_applied_commit == "c"
        assert state.admitted is None

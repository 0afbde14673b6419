"""Plan: pure diff of desired against live, as a value (no cluster; live state is data)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from controller.cluster.live import LiveState
from controller.cluster.render import DesiredState, RenderSettings, render_environment
from controller.errors import Refused
from controller.registry.mlflow import FixedRegistry
from controller.spec.manifest import load_manifests
from controller.sync.plan import Plan, Source, make_plan
from tests.support import deployment_yaml, unmanaged_app

REGISTRY = FixedRegistry({"fraud": {"1": "1", "2": "2"}, "churn": {"1": "1"}})
SOURCE = Source(repo="/repo", rev="main", commit="c0ffee" * 6 + "abcd")


def desired(*texts: str, env: str = "staging") -> DesiredState:
    files = {f"deployments/{env}/{i}.yaml": t for i, t in enumerate(texts)}
    return render_environment(env, load_manifests(files), REGISTRY, RenderSettings())


def live_of(*apps: dict) -> LiveState:
    return LiveState.from_api(
        {
            "applications": {
                a["name"]: {"status": "RUNNING", "deployed_app_config": copy.deepcopy(a)}
                for a in apps
            }
        }
    )


def plan(d: DesiredState, live: LiveState, prune: bool = False) -> Plan:
    return make_plan(d, live, source=SOURCE, address="http://ray:8265", prune=prune)


def ops(p: Plan) -> list[tuple[str, str, str]]:
    return [(a.op, a.app, a.effect) for a in p.actions]


def applied(p: Plan) -> LiveState:
    """What live looks like once a plan is applied."""
    return live_of(*p.desired)


def test_empty_cluster_creates_version_and_router() -> None:
    p = plan(desired(deployment_yaml()), live_of())
    assert ops(p) == [("create", "fraud--v1", "start"), ("create", "fraud", "start")]
    router = next(a for a in p.desired if a["name"] == "fraud")
    assert router["deployments"][0]["user_config"]["revision"] == SOURCE.commit


def test_applied_plan_leaves_nothing_to_do() -> None:
    d = desired(deployment_yaml())
    p = plan(d, applied(plan(d, live_of())))
    assert p.actions == []
    assert not p.has_changes


def test_new_revision_with_no_change_keeps_the_recorded_revision() -> None:
    d = desired(deployment_yaml())
    live = applied(plan(d, live_of()))
    later = make_plan(d, live, source=SOURCE.model_copy(update={"commit": "f" * 40}), address="x")
    assert later.actions == []
    router = next(a for a in later.desired if a["name"] == "fraud")
    assert router["deployments"][0]["user_config"]["revision"] == SOURCE.commit


def test_model_version_change_adds_version_switches_router_removes_old() -> None:
    live = applied(plan(desired(deployment_yaml(model="models:/fraud/1")), live_of()))
    p = plan(desired(deployment_yaml(model="models:/fraud/2")), live)
    assert ops(p) == [
        ("create", "fraud--v2", "start"),
        ("update", "fraud", "reconfigure"),
        ("delete", "fraud--v1", "stop"),
    ]
    [change] = p.actions[1].changes
    assert change.path == "deployments[Router].user_config.targets"
    assert change.old[0]["app"] == "fraud--v1"
    assert change.new[0]["app"] == "fraud--v2"


@pytest.mark.parametrize(
    ("edit", "path", "effect"),
    [
        (("replicas: 1", "replicas: 3"), "deployments[ModelServer].num_replicas", "scale"),
        (
            ("num_cpus: 0.25", "num_cpus: 0.5"),
            "deployments[ModelServer].ray_actor_options.num_cpus",
            "restart",
        ),
        (
            ("replicas: 1", "replicas: 1\n  max_ongoing_requests: 4"),
            "deployments[ModelServer].max_ongoing_requests",
            "reconfigure",
        ),
    ],
)
def test_field_changes_say_what_they_do_to_replicas(
    edit: tuple[str, str], path: str, effect: str
) -> None:
    live = applied(plan(desired(deployment_yaml()), live_of()))
    p = plan(desired(deployment_yaml().replace(*edit)), live)
    action, *router = p.actions
    assert (action.op, action.app, action.effect) == ("update", "fraud--v1", effect)
    assert [(c.path, c.effect) for c in action.changes] == [(path, effect)]
    # What a replica holds at once changes what the router may have in flight to the version.
    if "num_cpus" in path:
        assert router == []
    else:
        [bound] = router
        assert (bound.app, bound.effect) == ("fraud", "reconfigure")
        assert [c.path for c in bound.changes] == ["deployments[Router].user_config.targets"]


def test_turning_the_access_log_off_reconfigures_both_apps_in_place() -> None:
    """`access_log: false` sets Serve's `logging_config` on the model and router deployments;
    Serve applies it to running replicas, so the plan says reconfigure, never restart."""
    live = applied(plan(desired(deployment_yaml()), live_of()))
    quiet = deployment_yaml().replace("replicas: 1", "replicas: 1\n  access_log: false")
    p = plan(desired(quiet), live)
    assert ops(p) == [("update", "fraud--v1", "reconfigure"), ("update", "fraud", "reconfigure")]
    for action, deployment in zip(p.actions, ("ModelServer", "Router"), strict=True):
        [change] = action.changes
        assert change.path == f"deployments[{deployment}].logging_config.enable_access_log"
        assert (change.old, change.new) == (None, False)
    assert plan(desired(quiet), applied(p)).actions == []
    back = plan(desired(deployment_yaml()), applied(p))
    assert ops(back) == [("update", "fraud--v1", "reconfigure"), ("update", "fraud", "reconfigure")]


def test_route_change_updates_the_router_only() -> None:
    live = applied(plan(desired(deployment_yaml()), live_of()))
    p = plan(desired(deployment_yaml(route="/fraud/v2")), live)
    [action] = p.actions
    assert action.app == "fraud"
    assert action.changes[0].path == "route_prefix"
    assert (action.changes[0].old, action.changes[0].new) == ("/fraud", "/fraud/v2")


def test_unmanaged_and_other_environment_apps_are_never_in_the_plan() -> None:
    prod = desired(
        deployment_yaml(name="churn", environment="production", model="models:/churn/1"),
        env="production",
    )
    prod_apps = plan(prod, live_of()).desired
    live = live_of(unmanaged_app(), *prod_apps)
    p = plan(desired(deployment_yaml()), live)
    assert {a.app for a in p.actions} == {"fraud--v1", "fraud"}
    assert {a["name"] for a in p.desired} == {"fraud--v1", "fraud"}


def test_deployment_gone_from_git_is_orphaned_unless_pruned() -> None:
    both = desired(deployment_yaml(), deployment_yaml(name="churn", model="models:/churn/1"))
    live = applied(plan(both, live_of()))
    only_fraud = desired(deployment_yaml())
    p = plan(only_fraud, live)
    assert ops(p) == [("orphan", "churn", "stop"), ("orphan", "churn--v1", "stop")]
    assert not p.has_changes
    assert {"churn", "churn--v1"} <= {a["name"] for a in p.desired}  # kept
    pruned = plan(only_fraud, live, prune=True)
    assert ops(pruned) == [("delete", "churn", "stop"), ("delete", "churn--v1", "stop")]
    assert {a["name"] for a in pruned.desired} == {"fraud", "fraud--v1"}


def test_empty_desired_state_deletes_nothing_by_default() -> None:
    live = applied(plan(desired(deployment_yaml()), live_of()))
    p = plan(DesiredState("staging"), live)
    assert not p.has_changes
    assert len(p.desired) == 2


def test_refuses_to_take_over_an_unmanaged_app_or_route() -> None:
    with pytest.raises(Refused, match=r"'fraud' already exists.*no serveops marker"):
        plan(desired(deployment_yaml()), live_of(unmanaged_app(name="fraud", route="/x")))
    with pytest.raises(Refused, match="route '/fraud' is already served by application 'other'"):
        plan(desired(deployment_yaml()), live_of(unmanaged_app(name="other", route="/fraud")))


def test_plan_round_trips_through_json() -> None:
    p = plan(desired(deployment_yaml()), live_of(unmanaged_app()))
    again = Plan.model_validate_json(p.model_dump_json())
    assert again == p
    assert again.live_fingerprint == live_of(unmanaged_app()).fingerprint()


def test_fingerprint_moves_with_any_live_config_change() -> None:
    a = live_of(unmanaged_app())
    changed = unmanaged_app()
    changed["deployments"][0]["num_replicas"] = 2
    assert a.fingerprint() == live_of(unmanaged_app()).fingerprint()
    assert a.fingerprint() != live_of(changed).fingerprint()


def test_slow_scheduling_is_degraded_only_when_the_replica_does_not_fit() -> None:
    from controller.cluster.live import does_not_fit

    msg = (
        "Deployment 'ModelServer' in application 'x' has 1 replicas that have taken more than "
        "30s to be scheduled. This may be due to waiting for the cluster to auto-scale or for a "
        'runtime environment to be installed. Resources required for each replica: {"CPU": %s}, '
        'total resources available: {"CPU": 1.7}. Use `ray status` for more details.'
    )
    assert does_not_fit(msg % "1.9")
    assert not does_not_fit(msg % "0.2")  # a loaded machine, not a full one
    assert not does_not_fit("has 1 replicas that have taken more than 30s to initialize.")


def test_an_app_being_deleted_is_neither_carried_over_nor_a_conflict() -> None:
    # Serve drops the config of an app it is deleting: the GET shows it with no config (so no
    # marker). Its name and route are free, and it must not be PUT back as `{"name": ...}`.
    from controller.cluster.serve_api import merged_config

    d = desired(deployment_yaml())
    live = LiveState.from_api(
        {
            "applications": {
                "fraud--v1": {"status": "DELETING", "deployed_app_config": None},
                "old-handmade": {"status": "DELETING", "deployed_app_config": None},
            }
        }
    )
    p = plan(d, live)
    assert ops(p) == [("create", "fraud--v1", "start"), ("create", "fraud", "start")]
    names = [a["name"] for a in merged_config(live, "staging", p.desired)]
    assert names == ["fraud--v1", "fraud"]


def test_an_app_finishing_its_deletion_does_not_make_a_plan_stale() -> None:
    # Someone else's app was being deleted while we planned and is gone by apply: nothing a
    # plan writes depends on it, so the fingerprint must not move.
    running = {"status": "RUNNING", "deployed_app_config": unmanaged_app()}
    deleting = {"status": "DELETING", "deployed_app_config": None}
    during = LiveState.from_api({"applications": {"handmade": running, "old": deleting}})
    after = LiveState.from_api({"applications": {"handmade": running}})
    assert during.fingerprint() == after.fingerprint()
    scaled = {**running, "deployed_app_config": {**unmanaged_app(), "route_prefix": "/moved"}}
    moved = LiveState.from_api({"applications": {"handmade": scaled}})
    assert moved.fingerprint() != after.fingerprint()


def test_plan_of_a_canary_shows_the_rollout_not_a_switch(tmp_path: Path) -> None:
    from controller.cli.display import plan_text
    from controller.sync.read import Revision, plan_revision
    from tests.support import World
    from tests.unit.test_rollout_controller import CANARY

    world = World(tmp_path, rollout=CANARY)
    assert world.sync().outcome == "applied"
    world.push("2")
    revision = Revision(str(world.repo), "HEAD", "staging")
    plan = plan_revision(revision, world.serve, world.registry(), rollouts=True)
    ops = {(a.op, a.app) for a in plan.actions}
    assert ("create", "fraud--v2") in ops
    assert ("delete", "fraud--v1") not in ops
    router = next(a for a in plan.desired if a["name"] == "fraud")
    targets = router["deployments"][0]["user_config"]["targets"]
    assert {(t["version"], t["weight"]) for t in targets} == {("1", 100.0), ("2", 0.0)}
    [path] = plan.rollouts
    assert (path.deployment, path.strategy, path.stable, path.candidate) == (
        "fraud",
        "canary",
        "v1",
        "v2",
    )
    assert path.steps[1:4] == [
        "step 1: 25% to v2, held 1m and a passing analysis",
        "step 2: 60% to v2, held 1m and a passing analysis",
        "100% to v2",
    ]
    assert path.analysis is not None
    assert "at least 20 candidate requests" in path.analysis
    printed = plan_text(plan).plain
    assert "canary rollout from v1 to v2, driven by the controller" in printed
    immediate = plan_revision(revision, world.serve, world.registry())
    assert ("delete", "fraud--v1") in {(a.op, a.app) for a in immediate.actions}
    assert immediate.rollouts == []
    world.close()

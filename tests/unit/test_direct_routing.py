"""`routing: direct`: the serving version owns the route between rollouts, the router only
while one is in flight (controller/sync/routes.py). FakeServe with a start latency, real Git
and SQLite: after every pass, a route is held by one application, and only by one that runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.cluster.live import LiveState
from controller.cluster.status import deployment_statuses
from controller.spec.manifest import parse_manifest
from tests.support import World, deployment_yaml
from tests.unit.test_rollout_controller import CANARY

DIRECT = "routing: direct\n"


def owners(world: World) -> dict[str, str]:
    """route -> the application that answers on it; never two."""
    held = {n: a["route_prefix"] for n, a in world.serve.apps.items() if a.get("route_prefix")}
    assert len(set(held.values())) == len(held), held
    return {route: name for name, route in held.items()}


def guarded(world: World) -> World:
    """Every write checked: a route taken from the application holding it goes only to one
    that is RUNNING when the controller writes."""
    put = world.serve.put

    def checked_put(apps: list[dict[str, Any]], live: LiveState) -> None:
        held = owners(world)
        for app in apps:
            route, name = app.get("route_prefix"), app["name"]
            if route and held.get(route) not in (None, name):
                assert world.serve.status.get(name) == "RUNNING", (route, name, world.serve.status)
        put(apps, live)

    world.serve.put = checked_put  # type: ignore[method-assign]
    return world


def passes_until_settled(world: World) -> list[dict[str, str]]:
    """Passes until no apply is under way; the route owners after each one."""
    seen = []
    result = world.pass_()
    for _ in range(50):
        seen.append(owners(world))
        if not result.applying:
            return seen
        result = world.pass_(result.requeue_after)
    raise AssertionError(result.message)


def test_a_first_deploy_hands_the_route_to_the_version_once_it_runs(tmp_path: Path) -> None:
    world = guarded(World(tmp_path, rollout=DIRECT, latency=2))
    seen = passes_until_settled(world)
    # The router holds the route while v1 starts (nothing answers yet), then v1 takes it.
    assert seen[0] == {"/fraud": "fraud"}
    assert seen[-1] == {"/fraud": "fraud--v1"}
    assert world.serve.apps["fraud"]["route_prefix"] is None  # deployed, idle, ready
    assert world.pass_().outcome == "in_sync"  # the hand-over is Git's state, not drift
    [row] = deployment_statuses(world.serve.get(), "staging")
    assert (row.route, row.health) == ("/fraud", "Healthy")
    world.close()


def test_a_new_version_takes_the_route_only_after_the_router_held_it(tmp_path: Path) -> None:
    world = guarded(World(tmp_path, rollout=DIRECT, latency=2))
    world.sync()
    world.push("2")
    seen = passes_until_settled(world)
    # The router takes the route from v1 in the switch and gives it to v2 in the clean phase.
    assert seen[0] == {"/fraud": "fraud"}
    assert seen[-1] == {"/fraud": "fraud--v2"}
    assert set(world.serve.apps) == {"fraud", "fraud--v2"}
    assert "fraud--v2" not in {o for s in seen[:-1] for o in s.values()}
    settled = world.pass_()
    assert settled.outcome == "in_sync", settled.message
    world.close()


def test_a_canary_runs_through_the_router_and_the_route_comes_back_after(
    tmp_path: Path,
) -> None:
    world = guarded(World(tmp_path, rollout=DIRECT + CANARY, latency=1))
    assert world.sync().outcome == "applied"
    assert owners(world) == {"/fraud": "fraud--v1"}
    world.push("2")
    world.pass_()
    assert owners(world) == {"/fraud": "fraud"}  # the rollout's first write
    weights = []
    for _ in range(12):
        world.traffic(30)
        world.pass_()
        weights.append(world.weights())
        if world.router().rollout is None:
            break
        assert owners(world) == {"/fraud": "fraud"}  # every step through the router
    assert {"1": 75, "2": 25} in weights
    world.sync()
    assert owners(world) == {"/fraud": "fraud--v2"}
    assert set(world.serve.apps) == {"fraud", "fraud--v2"}
    world.close()


def test_turning_direct_routing_off_gives_the_route_back_to_the_router(tmp_path: Path) -> None:
    world = guarded(World(tmp_path, rollout=DIRECT, latency=1))
    world.sync()
    assert owners(world) == {"/fraud": "fraud--v1"}
    world.rollout = ""
    world.push("1")
    assert world.sync().outcome == "applied"
    assert owners(world) == {"/fraud": "fraud"}
    world.close()


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("recording: {sample_rate: 1, dir: /tmp/rec}\n", "spec.recording"),
        (
            "rollout: {strategy: ab, sticky_header: x-user, variants: "
            "[{name: a, weight: 50}, {name: b, weight: 50, model: models:/fraud/2}]}\n",
            "spec.routing",
        ),
    ],
)
def test_direct_routing_is_refused_where_the_router_must_stay(extra: str, field: str) -> None:
    manifest, problems = parse_manifest(
        "deployments/staging/fraud.yaml", deployment_yaml(extra_spec=DIRECT + extra)
    )
    assert manifest is None
    [problem] = problems
    assert str(problem).startswith("deployments/staging/fraud.yaml:"), problem  # file:line
    assert f": {field}:" in str(problem) or problem.location.field == field, problem

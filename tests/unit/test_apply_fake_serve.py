"""Apply's phases and failure handling, against FakeServe (an in-memory fake of Serve's REST API)."""

from __future__ import annotations

import pytest

from controller.apply import ApplyFailed, apply_plan
from controller.errors import Refused
from controller.manifest import load_manifests
from controller.plan import Plan, Source, make_plan
from controller.registry import FixedRegistry
from controller.render import RenderSettings, render_environment
from tests.support import FakeServe, deployment_yaml, is_managed, unmanaged_app

REGISTRY = FixedRegistry({"fraud": {"1": "1", "2": "2"}})


def plan_for(serve: FakeServe, model: str = "models:/fraud/1", commit: str = "a" * 40) -> Plan:
    files = {"deployments/staging/fraud.yaml": deployment_yaml(model=model)}
    d = render_environment("staging", load_manifests(files), REGISTRY, RenderSettings())
    return make_plan(
        d, serve.get(), source=Source(repo="r", rev="main", commit=commit), address=serve.address
    )


def router_targets(apps: list[dict]) -> list[str]:
    router = next((a for a in apps if a["name"] == "fraud"), None)
    if router is None:
        return []
    return [t["app"] for t in router["deployments"][0]["user_config"]["targets"]]


def test_first_apply_starts_versions_before_the_router() -> None:
    serve = FakeServe()
    result = apply_plan(plan_for(serve), serve)
    assert result.phases == ["start", "switch"]
    assert [a["name"] for a in serve.puts[0]] == ["fraud--v1"]
    assert {a["name"] for a in serve.puts[1]} == {"fraud--v1", "fraud"}
    assert serve.status == {"fraud--v1": "RUNNING", "fraud": "RUNNING"}


def test_version_change_runs_start_switch_clean_in_order() -> None:
    serve = FakeServe()
    apply_plan(plan_for(serve), serve)
    serve.puts.clear()
    result = apply_plan(plan_for(serve, "models:/fraud/2", commit="b" * 40), serve)
    assert result.phases == ["start", "switch", "clean"]
    start, switch, clean = serve.puts
    # start: v2 added next to v1; the router still points at v1
    assert {a["name"] for a in start} == {"fraud", "fraud--v1", "fraud--v2"}
    assert router_targets(start) == ["fraud--v1"]
    # switch: the router points at v2; v1 still up for in-flight requests
    assert router_targets(switch) == ["fraud--v2"] and "fraud--v1" in {a["name"] for a in switch}
    # clean: v1 gone
    assert {a["name"] for a in clean} == {"fraud", "fraud--v2"}


def test_every_put_carries_unmanaged_apps_unchanged() -> None:
    serve = FakeServe()
    serve.seed(unmanaged_app())
    apply_plan(plan_for(serve), serve)
    apply_plan(plan_for(serve, "models:/fraud/2"), serve)
    assert len(serve.puts) == 5
    for put in serve.puts:
        [theirs] = [a for a in put if not is_managed(a)]
        assert theirs == unmanaged_app()


def test_stale_plan_is_refused_and_nothing_is_written() -> None:
    serve = FakeServe()
    p = plan_for(serve)
    serve.seed(unmanaged_app())  # someone changed the cluster after the plan was made
    with pytest.raises(Refused, match="changed since this plan was made"):
        apply_plan(p, serve)
    assert serve.puts == []


def test_failed_version_stops_before_the_switch_and_next_apply_converges() -> None:
    serve = FakeServe()
    apply_plan(plan_for(serve), serve)
    serve.failing.add("fraud--v2")
    with pytest.raises(ApplyFailed, match=r"phase 'start': fraud--v2 is DEPLOY_FAILED") as info:
        apply_plan(plan_for(serve, "models:/fraud/2"), serve)
    assert "traffic still goes to the versions that served it before" in info.value.message
    assert router_targets(list(serve.apps.values())) == ["fraud--v1"]

    serve.failing.clear()
    serve.status["fraud--v2"] = "RUNNING"  # the cause was fixed (say, the model store is back)
    apply_plan(plan_for(serve, "models:/fraud/2"), serve)
    assert set(serve.apps) == {"fraud", "fraud--v2"}
    assert router_targets(list(serve.apps.values())) == ["fraud--v2"]


def test_unschedulable_version_is_reported_with_serves_message() -> None:
    serve = FakeServe()
    serve.unschedulable.add("fraud--v1")
    with pytest.raises(ApplyFailed, match="taken more than 2s to be scheduled"):
        apply_plan(plan_for(serve), serve, timeout_s=30)
    assert "fraud" not in serve.apps  # the route was never switched on


def test_nothing_to_do_writes_nothing() -> None:
    serve = FakeServe()
    apply_plan(plan_for(serve), serve)
    serve.puts.clear()
    result = apply_plan(plan_for(serve), serve)
    assert result.phases == [] and serve.puts == []

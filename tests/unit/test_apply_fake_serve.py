"""Apply's phases and failure handling, against FakeServe (an in-memory fake of Serve's REST API)."""

from __future__ import annotations

import pytest

from controller.cluster.render import RenderSettings, render_environment
from controller.errors import Refused
from controller.registry.mlflow import FixedRegistry
from controller.serving.protocol import RouterConfig
from controller.spec.manifest import load_manifests
from controller.sync.apply import ApplyFailed, apply_plan
from controller.sync.plan import Plan, Source, make_plan
from tests.support import FakeClock, FakeServe, deployment_yaml, is_managed, unmanaged_app

REGISTRY = FixedRegistry({"fraud": {"1": "1", "2": "2"}})


def plan_for(serve: FakeServe, model: str = "models:/fraud/1", commit: str = "a" * 40) -> Plan:
    files = {"deployments/staging/fraud.yaml": deployment_yaml(model=model)}
    d = render_environment("staging", load_manifests(files), REGISTRY, RenderSettings())
    return make_plan(
        d, serve.get(), source=Source(repo="r", rev="main", commit=commit), address=serve.address
    )


def router(apps: list[dict]) -> RouterConfig | None:
    app = next((a for a in apps if a["name"] == "fraud"), None)
    return RouterConfig.model_validate(app["deployments"][0]["user_config"]) if app else None


def router_targets(apps: list[dict]) -> list[str]:
    config = router(apps)
    return [t.app for t in config.targets] if config else []


def router_fallback(apps: list[dict]) -> list[str]:
    config = router(apps)
    return [t.app for t in config.fallback] if config else []


def test_first_apply_starts_version_and_router_in_one_write() -> None:
    serve = FakeServe()
    result = apply_plan(plan_for(serve), serve, clock=FakeClock())
    assert result.phases == ["switch"]
    [put] = serve.puts
    assert {a["name"] for a in put} == {"fraud--v1", "fraud"}
    assert router_targets(put) == ["fraud--v1"]
    assert router_fallback(put) == []
    assert serve.status == {"fraud--v1": "RUNNING", "fraud": "RUNNING"}


def test_version_change_falls_back_to_the_old_version_until_the_new_one_runs() -> None:
    serve = FakeServe()
    apply_plan(plan_for(serve), serve, clock=FakeClock())
    serve.puts.clear()
    result = apply_plan(
        plan_for(serve, "models:/fraud/2", commit="b" * 40), serve, clock=FakeClock()
    )
    assert result.phases == ["switch", "clean"]
    switch, clean = serve.puts
    # switch: v2 added next to v1; the router targets v2 and falls back to v1 meanwhile
    assert {a["name"] for a in switch} == {"fraud", "fraud--v1", "fraud--v2"}
    assert router_targets(switch) == ["fraud--v2"]
    assert router_fallback(switch) == ["fraud--v1"]
    # clean: v1 and the fallback gone
    assert {a["name"] for a in clean} == {"fraud", "fraud--v2"}
    assert router_targets(clean) == ["fraud--v2"]
    assert router_fallback(clean) == []


def test_every_put_carries_unmanaged_apps_unchanged() -> None:
    serve = FakeServe()
    serve.seed(unmanaged_app())
    apply_plan(plan_for(serve), serve, clock=FakeClock())
    apply_plan(plan_for(serve, "models:/fraud/2"), serve, clock=FakeClock())
    assert len(serve.puts) == 3
    for put in serve.puts:
        [theirs] = [a for a in put if not is_managed(a)]
        assert theirs == unmanaged_app()


def test_stale_plan_is_refused_and_nothing_is_written() -> None:
    serve = FakeServe()
    p = plan_for(serve)
    serve.seed(unmanaged_app())  # someone changed the cluster after the plan was made
    with pytest.raises(Refused, match="changed since this plan was made"):
        apply_plan(p, serve, clock=FakeClock())
    assert serve.puts == []


def test_failed_version_stops_before_the_switch_and_next_apply_converges() -> None:
    serve = FakeServe()
    apply_plan(plan_for(serve), serve, clock=FakeClock())
    serve.failing.add("fraud--v2")
    with pytest.raises(ApplyFailed, match=r"phase 'switch': fraud--v2 is DEPLOY_FAILED") as info:
        apply_plan(plan_for(serve, "models:/fraud/2"), serve, clock=FakeClock())
    assert "keep sending traffic to the versions that served it before" in info.value.message
    live_apps = list(serve.apps.values())
    assert router_fallback(live_apps) == ["fraud--v1"]
    assert "fraud--v1" in serve.apps

    serve.failing.clear()
    serve.status["fraud--v2"] = "RUNNING"  # the cause was fixed (say, the model store is back)
    apply_plan(plan_for(serve, "models:/fraud/2"), serve, clock=FakeClock())
    assert set(serve.apps) == {"fraud", "fraud--v2"}
    assert router_targets(list(serve.apps.values())) == ["fraud--v2"]
    assert router_fallback(list(serve.apps.values())) == []


def test_rerun_after_a_failed_switch_keeps_the_versions_that_serve() -> None:
    serve = FakeServe()
    apply_plan(plan_for(serve), serve, clock=FakeClock())
    serve.failing.add("fraud--v2")
    with pytest.raises(ApplyFailed):
        apply_plan(plan_for(serve, "models:/fraud/2"), serve, clock=FakeClock())
    with pytest.raises(ApplyFailed):  # same failure again: v1 must still be the fallback
        apply_plan(plan_for(serve, "models:/fraud/2"), serve, clock=FakeClock())
    assert router_fallback(list(serve.apps.values())) == ["fraud--v1"]
    assert "fraud--v1" in serve.apps


def test_unschedulable_version_is_reported_with_serves_message() -> None:
    serve = FakeServe()
    serve.unschedulable.add("fraud--v1")
    with pytest.raises(ApplyFailed, match="taken more than 2s to be scheduled"):
        apply_plan(plan_for(serve), serve, timeout_s=30, clock=FakeClock())


def test_nothing_to_do_writes_nothing() -> None:
    serve = FakeServe()
    apply_plan(plan_for(serve), serve, clock=FakeClock())
    serve.puts.clear()
    result = apply_plan(plan_for(serve), serve, clock=FakeClock())
    assert result.phases == []
    assert serve.puts == []

"""Which applications the router routes to, from Serve's status (pure)."""

from __future__ import annotations

from controller.serving.protocol import RouterConfig, Target
from controller.serving.router import mirrors, routable


def test_a_put_marking_running_apps_deploying_does_not_drop_them() -> None:
    running = routable(set(), {"fraud--v1": "RUNNING", "fraud--v2": "DEPLOYING"})
    assert running == {"fraud--v1"}  # a new application waits until it runs
    during_put = routable(running, {"fraud--v1": "DEPLOYING", "fraud--v2": "DEPLOYING"})
    assert during_put == {"fraud--v1"}
    assert routable(during_put, {"fraud--v1": "RUNNING", "fraud--v2": "RUNNING"}) == {
        "fraud--v1",
        "fraud--v2",
    }


def test_failed_or_deleting_apps_are_dropped() -> None:
    before = {"a", "b", "c"}
    after = routable(before, {"a": "DEPLOY_FAILED", "b": "DELETING", "c": "UNHEALTHY"})
    assert after == set()


def test_mirrors_copy_a_share_to_running_shadow_targets() -> None:
    shadow = Target(app="fraud--v2", version="2", weight=25)
    config = RouterConfig(
        deployment="fraud",
        targets=[Target(app="fraud--v1", version="1", weight=100)],
        shadow=[shadow],
        timeout_s=1,
    )
    running = {"fraud--v1", "fraud--v2"}
    assert sum(bool(mirrors(config, running, i / 100)) for i in range(100)) == 25
    assert mirrors(config, {"fraud--v1"}, 0.0) == []

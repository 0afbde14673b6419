"""Which applications the router routes to, from Serve's status (pure; the last two tests drive
the router's class outside Serve with a fake status read)."""

from __future__ import annotations

import pytest

from controller.serving.protocol import RouterConfig, Target
from controller.serving.routing import mirrors, routable


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


class StatusReads:
    """Stands in for the router's read of Serve's status: counts reads, may fail."""

    def __init__(self, running: set[str]) -> None:
        self.running, self.reads, self.fail = running, 0, False

    async def __call__(self) -> dict[str, str]:
        self.reads += 1
        if self.fail:
            raise RuntimeError("Serve controller unreachable")
        return dict.fromkeys(self.running, "RUNNING")


def test_pinned_requests_refresh_the_status_at_most_every_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    from controller.serving import router

    clock = [100.0]
    monkeypatch.setattr(router.time, "monotonic", lambda: clock[0])
    replica = router.Router.func_or_class("fraud")  # the class behind the Serve deployment
    reads = StatusReads({"fraud--v1", "fraud--v2"})
    replica._read_status = reads
    replica._running = {"fraud--v1"}
    made: list[str] = []  # stands in for serve.get_app_handle (outside Serve it starts Ray)
    replica._get_handle = lambda app: made.append(app) or f"handle to {app}"

    asyncio.run(replica._refresh_for_pin())
    assert reads.reads == 1
    assert replica._running == {"fraud--v1", "fraud--v2"}
    # Handles to the apps seen running are made then, off the event loop, not by a request.
    assert sorted(made) == ["fraud--v1", "fraud--v2"]
    assert replica._handles["fraud--v2"] == "handle to fraud--v2"
    asyncio.run(replica._refresh_for_pin())  # a burst of pins: no second read yet
    assert reads.reads == 1
    clock[0] += router.PIN_REFRESH_S * 1.5
    reads.fail = True
    asyncio.run(replica._refresh_for_pin())  # read again; a failed read keeps the last set
    assert reads.reads == 2
    assert replica._running == {"fraud--v1", "fraud--v2"}
    assert len(made) == 2  # a handle is made once per app


def test_a_shadow_version_seen_running_by_a_status_read_starts_its_mirror_ramp() -> None:
    import asyncio

    from controller.serving import router

    replica = router.Router.func_or_class("fraud")  # the class behind the Serve deployment
    replica._get_handle = lambda app: f"handle to {app}"
    replica._running = {"fraud--v1"}
    replica.reconfigure(
        RouterConfig(
            deployment="fraud",
            targets=[Target(app="fraud--v1", version="1", weight=100)],
            shadow=[Target(app="fraud--v2", version="2", weight=100)],
            timeout_s=10,
        ).model_dump()
    )
    governor = replica._governor
    assert (governor.share, governor.ramping) == (1.0, False)  # the preview is still starting
    replica._read_status = StatusReads({"fraud--v1", "fraud--v2"})
    asyncio.run(replica._refresh())
    assert (governor.share, governor.ramping) == (0.0, True)  # RUNNING: its mirrors ramp from 0

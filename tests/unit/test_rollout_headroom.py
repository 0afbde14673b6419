"""A rollout does not start its candidate into a queue standing in front of the stable
version: it waits, says so in every view, and starts once the queue is gone
(controller/rollout/headroom.py; FakeServe and fake router metrics, the controller's real
passes). The router's side, the gauge it sets, is in test_router_pressure.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.cli.views import rollouts_renderable
from controller.errors import Unreachable
from controller.rollout.headroom import HEADROOM_WAIT_SHARE, stable_queue
from controller.rollout.router_metrics import Counts, merge, parse
from controller.rollout.state import RolloutState
from controller.serving.pressure import QUEUE_WAIT_SHARE
from tests.support import World
from tests.unit.test_rollout_controller import CANARY, candidate_replicas, previewing_a_quarter
from tests.unit.test_rollout_engine import new as new_rollout
from tests.unit.test_views import Views, text

SAYS = "headroom on the serving path: fraud--v2 starts once a request to fraud--v1 would wait"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, rollout=CANARY)
    assert w.sync().outcome == "applied"
    yield w
    w.close()


def queue(world: World, version: str, wait_s: float) -> None:
    """The router says a request to `version` admitted now would wait `wait_s` for a slot."""
    world.metrics.serve(version, 10)
    world.metrics.counts["fraud"][version].slot_wait_s = wait_s


def test_a_candidate_waits_while_a_queue_stands_in_front_of_the_stable_version(
    world: World,
) -> None:
    queue(world, "1", 3.0)  # over 1 s: a fifth of half the default 10 s timeout
    world.push("2")
    held = world.pass_()
    assert held.outcome == "progressing"
    assert set(world.serve.apps) == {"fraud", "fraud--v1"}  # the start's load is not added
    assert world.weights() == {"1": 100}
    assert held.requeue_after <= 5
    [fraud] = Views(world).view().deployments
    assert fraud.rollout is not None
    assert SAYS in fraud.rollout.waiting
    assert SAYS in text(rollouts_renderable(Views(world).view(), terminal=False))
    since = world.clock.now()
    assert f"(held since {since:%H:%M:%S} UTC)" in fraud.rollout.waiting

    # Past the progress deadline, still queued: waiting for headroom is not a failed start.
    for _ in range(3):
        assert world.pass_(300).outcome == "progressing"
    assert set(world.serve.apps) == {"fraud", "fraud--v1"}
    stored = world.store().rollouts(world.env)["fraud"].state
    assert stored.held_since == since  # since the first pass that held it, 15 minutes ago
    assert f"(held since {since:%H:%M:%S} UTC)" in stored.waiting

    queue(world, "1", 0.2)  # the queue drained
    assert world.pass_().outcome == "progressing"
    assert set(world.serve.apps) == {"fraud", "fraud--v1", "fraud--v2"}
    [fraud] = Views(world).view().deployments
    assert fraud.rollout is not None
    assert "headroom" not in fraud.rollout.waiting
    assert world.store().rollouts(world.env)["fraud"].state.held_since is None


def test_promote_starts_the_candidate_into_a_queue(world: World) -> None:
    """An operator who needs the change out now says so; a queue does not hold it then."""
    queue(world, "1", 3.0)
    world.push("2")
    world.pass_()
    assert "fraud--v2" not in world.serve.apps
    world.ctl.store.add_rollout_command("staging", "fraud", "promote", "alice")
    world.pass_()
    assert "fraud--v2" in world.serve.apps


def test_a_preview_is_scaled_for_the_switch_only_once_the_queue_is_gone(tmp_path: Path) -> None:
    """A blue-green candidate previewing at 1 of 4 replicas: its three new replicas start as a
    candidate does, so they wait for the stable version's queue too. It keeps previewing (no
    client traffic), says why, and its scaling deadline has not begun."""
    w = previewing_a_quarter(tmp_path)  # a passing window's traffic served
    queue(w, "1", 3.0)
    held = w.pass_()
    assert "scaling" not in held.message
    assert candidate_replicas(w.serve) == 1
    assert w.weights() == {"1": 100, "2": 0}
    stored = w.store().rollouts(w.env)["fraud"].state
    assert (stored.phase, stored.scaling, stored.held_for_room) == ("preview", False, True)
    says = "fraud--v2 is scaled to full size once a request to fraud--v1 would wait at most 1s"
    assert says in stored.waiting
    [fraud] = Views(w).view().deployments
    assert fraud.rollout is not None
    assert says in fraud.rollout.waiting
    for _ in range(3):  # past the World's 120 s progress deadline: no rollback for this
        w.traffic(30)
        assert w.pass_(60).outcome == "progressing"
    assert candidate_replicas(w.serve) == 1
    assert w.store().rollouts(w.env)["fraud"].state.held_since == stored.held_since  # kept

    queue(w, "1", 0.1)  # drained
    w.traffic(30)
    scaling = w.pass_()
    assert "scaling fraud--v2 to full size" in scaling.message
    assert candidate_replicas(w.serve) == 4
    assert not w.store().rollouts(w.env)["fraud"].state.held_for_room
    w.close()


@pytest.mark.parametrize("why", ["no request yet", "metrics unreadable"])
def test_unknown_queues_never_hold_a_rollout(
    world: World, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    """No router figures: the start goes on, as with unknown CPUs."""
    if why == "metrics unreadable":
        queue(world, "1", 3.0)

        def unreachable() -> None:
            raise Unreachable("cannot list Ray nodes")

        monkeypatch.setattr(world.metrics, "scrape", unreachable)
    world.push("2")
    world.pass_()
    assert "fraud--v2" in world.serve.apps


def test_the_bound_is_a_share_of_the_routers_wait_bound() -> None:
    snap = {"d": {"1": Counts(slot_wait_s=0.9)}}
    q = stable_queue(snap, "d", "1", "d--v1", request_timeout_s=10.0)
    assert q is not None
    assert q.bound_s == pytest.approx(HEADROOM_WAIT_SHARE * QUEUE_WAIT_SHARE * 10.0)
    assert not q.standing
    slow = stable_queue(snap, "d", "1", "d--v1", request_timeout_s=2.0)  # 0.2 s
    assert slow is not None
    assert slow.standing
    assert stable_queue(snap, "d", "2", "d--v2", 10.0) is None
    assert stable_queue(None, "d", "1", "d--v1", 10.0) is None


def test_the_gauge_is_read_as_the_longest_wait_of_any_router_replica() -> None:
    text_ = "\n".join(
        [
            "# TYPE ray_serveops_router_slot_wait_seconds gauge",
            'ray_serveops_router_slot_wait_seconds{serveops_deployment="d",version="1",'
            'traffic="live",replica="a"} 0.4',
            'ray_serveops_router_slot_wait_seconds{serveops_deployment="d",version="1",'
            'traffic="live",replica="b"} 2.5',
        ]
    )
    assert parse(text_)["d"]["1"].slot_wait_s == 2.5
    other_node = {"d": {"1": Counts(slot_wait_s=1.0)}}
    assert merge([parse(text_), other_node])["d"]["1"].slot_wait_s == 2.5


def test_a_gauge_that_is_not_a_number_holds_nothing() -> None:
    """Whoever runs code on a Ray node can export this series (as every router figure): a
    NaN reads as no wait, so it cannot hold a rollout by itself; within the scrape's size and
    time limits (tests/hostile)."""
    nan = "\n".join(
        [
            "# TYPE ray_serveops_router_slot_wait_seconds gauge",
            'ray_serveops_router_slot_wait_seconds{serveops_deployment="d",version="1"} NaN',
        ]
    )
    q = stable_queue(parse(nan), "d", "1", "d--v1", 10.0)
    assert q is not None
    assert not q.standing


def test_a_hold_stored_before_its_time_was_kept_reads_as_held_since_the_phase_began() -> None:
    """States written by an older controller said only `held_for_room: true`."""
    state = new_rollout()
    old = json.loads(state.to_json())
    del old["held_since"]
    old["held_for_room"] = True
    restored = RolloutState.from_json(json.dumps(old))
    assert restored.held_for_room
    assert restored.held_since == state.phase_started_at
    old["held_for_room"] = False
    assert RolloutState.from_json(json.dumps(old)).held_since is None

"""A rollout whose candidate would overcommit the cluster's CPUs waits, says so in `serveops
rollouts`, and starts the candidate once it fits (controller/cluster/capacity.py; FakeServe with
a known CPU count, the controller's real passes)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controller.cli.views import rollouts_renderable
from controller.cluster import serve_api
from controller.cluster.capacity import app_cpus, cluster_cpus, room_for
from controller.cluster.live import LiveState
from controller.cluster.serve_api import ServeClient
from tests.support import World
from tests.unit.test_rollout_controller import CANARY, candidate_replicas, previewing_a_quarter
from tests.unit.test_views import Views, text

# v1 reserves 0.25 CPU (deployment_yaml), its router 0.05: 0.3 of 0.5; v2 needs 0.25 more.
SMALL = 0.5


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, rollout=CANARY)
    w.serve.cpus = SMALL
    assert w.sync().outcome == "applied"
    yield w
    w.close()


def test_a_candidate_that_does_not_fit_waits_and_says_so(world: World) -> None:
    world.push("2")
    held = world.pass_()
    assert held.outcome == "progressing"
    assert set(world.serve.apps) == {"fraud", "fraud--v1"}  # nothing started that cannot run
    assert world.weights() == {"1": 100}
    assert held.requeue_after <= 5  # looks again soon
    [fraud] = Views(world).view().deployments
    assert fraud.rollout is not None
    says = "room on the cluster: fraud--v2 needs 0.25 CPU, 0.2 of 0.5 free"
    assert says in fraud.rollout.waiting
    assert says in text(rollouts_renderable(Views(world).view(), terminal=False))

    # Far past the progress deadline while waiting: waiting for room is not a failed start.
    for _ in range(4):
        assert world.pass_(300).outcome == "progressing"
    assert set(world.serve.apps) == {"fraud", "fraud--v1"}

    world.serve.cpus = 2.0  # a node joined (or another deployment was removed)
    started = world.pass_()
    assert started.outcome == "progressing"
    assert set(world.serve.apps) == {"fraud", "fraud--v1", "fraud--v2"}
    assert world.weights() == {"1": 100, "2": 0}
    [fraud] = Views(world).view().deployments
    assert fraud.rollout is not None
    assert "room on the cluster" not in fraud.rollout.waiting
    assert world.pass_().outcome == "progressing"  # the candidate runs: step 1, not an abort
    assert world.weights() == {"1": 75, "2": 25}


def test_unknown_cpus_never_hold_a_rollout(tmp_path: Path) -> None:
    w = World(tmp_path, rollout=CANARY)
    assert w.sync().outcome == "applied"
    w.push("2")
    w.pass_()
    assert "fraud--v2" in w.serve.apps
    w.close()


def test_reserved_cpus_follow_replicas_and_serves_default() -> None:
    app = {
        "name": "x",
        "deployments": [
            {"name": "A", "num_replicas": 3, "ray_actor_options": {"num_cpus": 0.5}},
            {"name": "B", "autoscaling_config": {"min_replicas": 0, "max_replicas": 9}},
        ],
    }
    assert app_cpus(app) == 1.5 + 1.0  # B: Serve's default of 1 CPU, at least one replica
    live = LiveState.from_api(
        {"applications": {"y": {"status": "RUNNING", "deployed_app_config": app}}}, cpus=4.0
    )
    room = room_for({"name": "new", "deployments": [{"name": "C", "num_replicas": 2}]}, live)
    assert room is not None
    assert (room.needs, room.free, room.fits) == (2.0, 1.5, False)
    assert room_for(app | {"name": "y"}, live) is not None  # itself does not count twice


def test_cluster_cpus_read_from_the_dashboards_node_summary() -> None:
    def node(state: str, cpus: float) -> dict[str, object]:
        return {"raylet": {"state": state, "resourcesTotal": {"CPU": cpus, "memory": 1e9}}}

    assert cluster_cpus([node("ALIVE", 2.0), node("ALIVE", 4.0), node("DEAD", 8.0)]) == 6.0
    assert cluster_cpus([{"raylet": {"resourcesTotal": "junk"}}]) is None
    assert cluster_cpus(["not a node"]) is None
    assert cluster_cpus([]) is None
    # Entries that are not nodes are skipped, as the metrics scrape skips them (alive_raylets).
    assert cluster_cpus([node("ALIVE", 2.0), "not a node", {"raylet": None}]) == 2.0


def client_answering(nodes: httpx.Response | Exception) -> tuple[ServeClient, list[str]]:
    """A ServeClient against a dashboard that answers the node list with `nodes`."""
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path == "/nodes":
            if isinstance(nodes, Exception):
                raise nodes
            return nodes
        return httpx.Response(200, json={"applications": {}})

    return ServeClient("http://ray:8265", transport=httpx.MockTransport(handler)), asked


def summary(cpus: float) -> dict[str, object]:
    return {"data": {"summary": [{"raylet": {"state": "ALIVE", "resourcesTotal": {"CPU": cpus}}}]}}


def test_the_client_reads_the_cpus_at_most_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(serve_api.time, "monotonic", lambda: clock[0])
    client, asked = client_answering(httpx.Response(200, json=summary(2.0)))
    assert client.get().cpus == 2.0
    assert client.get().cpus == 2.0
    assert asked.count("/nodes") == 1
    clock[0] += serve_api.CPUS_READ_EVERY_S
    client.get()
    assert asked.count("/nodes") == 2


def test_a_trickling_node_list_is_given_up_at_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dashboard that sends its node list a byte at a time holds no pass longer than the
    read's deadline: the CPUs are unknown, the applications still read."""

    def trickle() -> Iterator[bytes]:
        while True:
            time.sleep(0.01)
            yield b" "

    monkeypatch.setattr(serve_api, "NODES_TIMEOUT_S", 0.3)
    client, asked = client_answering(httpx.Response(200, content=trickle()))
    live = client.get()
    assert (live.apps, live.cpus) == ({}, None)
    assert asked == ["/api/serve/applications/", "/nodes"]


@pytest.mark.parametrize(
    "nodes",
    [
        httpx.Response(500, text="boom"),
        httpx.Response(200, text="not json"),
        httpx.Response(200, json=["a", "list"]),
        httpx.Response(
            200, json={"data": {"summary": [{"raylet": {"resourcesTotal": {"CPU": "x"}}}]}}
        ),
        httpx.Response(200, content=b" " * (serve_api.MAX_NODES_BYTES + 1)),
        httpx.ReadTimeout("slow dashboard"),
        httpx.ConnectError("refused"),
    ],
)
def test_a_node_list_that_cannot_be_read_means_unknown_cpus(
    nodes: httpx.Response | Exception,
) -> None:
    client, _ = client_answering(nodes)
    live = client.get()  # the applications are still read; nothing waits for room
    assert (live.apps, live.cpus) == ({}, None)


def test_a_preview_whose_full_size_does_not_fit_is_not_scaled_until_it_does(
    tmp_path: Path,
) -> None:
    """A blue-green candidate previewing at 1 of 4 replicas (0.25 CPU each): scaling it for
    the switch needs 1 CPU where v1's 4 replicas and the router leave 0.45 of 1.5. It keeps
    previewing and says so, and is scaled once a node joins."""
    w = previewing_a_quarter(tmp_path)
    w.serve.cpus = 1.5
    held = w.pass_()
    assert "scaling" not in held.message
    assert candidate_replicas(w.serve) == 1
    stored = w.store().rollouts(w.env)["fraud"].state
    assert stored.phase == "preview"
    assert "room on the cluster: fraud--v2 needs 1 CPU, 0.45 of 1.5 free" in stored.waiting
    w.serve.cpus = 4.0
    w.traffic(30)
    assert "scaling fraud--v2 to full size" in w.pass_().message
    assert candidate_replicas(w.serve) == 4
    w.close()

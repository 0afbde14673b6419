"""The controller's scrape of Ray's metrics (controller/rollout/router_metrics.py,
RayMetricsSource) against a fake cluster behind httpx's MockTransport, no network: what a node
exports is written by code on that node (a model server can emit any series it likes), so every
answer is read within a size and a deadline, and a cut one holds the step (Unreachable)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from controller.errors import Unreachable
from controller.rollout.router_metrics import RayMetricsSource
from tests.unit.test_metrics_source import exposition

DASHBOARD = "http://ray:8265"
NODES = {
    "data": {
        "summary": [
            {"ip": "10.0.0.1", "raylet": {"state": "ALIVE", "metricsExportPort": 9101}},
            {"ip": "10.0.0.2", "raylet": {"state": "ALIVE", "metricsExportPort": 9101}},
            {"ip": "10.0.0.3", "raylet": {"state": "DEAD", "metricsExportPort": 9101}},
        ]
    }
}


def cluster(metrics: Callable[[str], httpx.Response]) -> httpx.MockTransport:
    """The dashboard's node list, and each node's metrics answer from `metrics(host)`."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "ray":
            return httpx.Response(200, json=NODES)
        return metrics(request.url.host)

    return httpx.MockTransport(handle)


def test_alive_nodes_are_scraped_and_summed() -> None:
    seen: list[str] = []

    def metrics(host: str) -> httpx.Response:
        seen.append(host)
        return httpx.Response(200, text=exposition(host, "2", 10, 1, 10))

    snap = RayMetricsSource(DASHBOARD, transport=cluster(metrics)).scrape()
    assert sorted(seen) == ["10.0.0.1", "10.0.0.2"]  # the dead node is not asked
    assert (snap["fraud"]["2"].requests, snap["fraud"]["2"].errors) == (20, 2)


def test_a_node_exporting_without_end_is_cut_and_holds_the_step() -> None:
    def metrics(host: str) -> httpx.Response:
        endless = itertools.repeat(b"# HELP padding " + b"x" * 65536 + b"\n")
        return httpx.Response(200, content=endless)

    source = RayMetricsSource(DASHBOARD, max_bytes=1_000_000, transport=cluster(metrics))
    with pytest.raises(Unreachable, match=r"10\.0\.0\.\d:9101/metrics: answer over 1,000,000"):
        source.scrape()


def test_a_trickling_node_stops_at_the_deadline() -> None:
    def trickle() -> Iterator[bytes]:
        while True:
            time.sleep(0.01)
            yield b"#"

    source = RayMetricsSource(
        DASHBOARD,
        timeout_s=0.3,
        transport=cluster(lambda h: httpx.Response(200, content=trickle())),
    )
    with pytest.raises(Unreachable, match="no whole answer in time"):
        source.scrape()


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, content=b"x" * 2_000_000),  # over the limit
        httpx.Response(200, text="[1, 2"),  # not JSON
        httpx.Response(200, json={"data": []}),  # not the dashboard's shape
        httpx.Response(503, text="starting"),
    ],
)
def test_a_bad_node_list_says_the_nodes_could_not_be_listed(answer: httpx.Response) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return answer

    source = RayMetricsSource(
        DASHBOARD, max_nodes_bytes=1_000_000, transport=httpx.MockTransport(handle)
    )
    with pytest.raises(Unreachable, match=f"cannot list Ray nodes at {DASHBOARD}"):
        source.endpoints()


def test_entries_that_are_not_nodes_are_skipped() -> None:
    listed = {"data": {"summary": [*NODES["data"]["summary"], "x", {"raylet": "y"}, {"ip": 1}]}}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=listed))
    source = RayMetricsSource(DASHBOARD, transport=transport)
    assert source.endpoints() == ["http://10.0.0.1:9101/metrics", "http://10.0.0.2:9101/metrics"]


def test_endpoints_are_the_alive_nodes_metrics_ports() -> None:
    source = RayMetricsSource(DASHBOARD, transport=cluster(lambda h: httpx.Response(200)))
    assert source.endpoints() == ["http://10.0.0.1:9101/metrics", "http://10.0.0.2:9101/metrics"]

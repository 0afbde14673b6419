"""Router metrics as Ray exports them (Prometheus text), summed and diffed into windows."""

from __future__ import annotations

import math

import pytest

from controller.rollout.router_metrics import (
    ROUTER_PREFIX,
    from_json,
    merge,
    parse,
    routers_only,
    to_json,
    window,
)
from controller.serving import protocol

LABELS = (
    'Component="core_worker",SessionName="s",application="fraud",deployment="Router",'
    'replica="{replica}",serveops_deployment="fraud",traffic="live",version="{version}"'
)


def exposition(replica: str, version: str, requests: int, errors: int, fast: int) -> str:
    labels = LABELS.format(replica=replica, version=version)
    return f"""\
# HELP ray_serveops_router_requests_total Requests answered, by version.
# TYPE ray_serveops_router_requests_total counter
ray_serveops_router_requests_total{{{labels}}} {requests}.0
# HELP ray_serveops_router_errors_total 5xx answers.
# TYPE ray_serveops_router_errors_total counter
ray_serveops_router_errors_total{{{labels}}} {errors}.0
# HELP ray_serveops_router_latency_ms Latency.
# TYPE ray_serveops_router_latency_ms histogram
ray_serveops_router_latency_ms_bucket{{{labels},le="5.0"}} {fast}.0
ray_serveops_router_latency_ms_bucket{{{labels},le="50.0"}} {requests}.0
ray_serveops_router_latency_ms_bucket{{{labels},le="+Inf"}} {requests}.0
ray_serveops_router_latency_ms_count{{{labels}}} {requests}.0
ray_serveops_router_latency_ms_sum{{{labels}}} 1.0
# TYPE ray_serve_num_http_requests_total counter
ray_serve_num_http_requests_total{{application="fraud"}} 99.0
"""


def test_parse_sums_router_replicas_per_version() -> None:
    snap = parse(
        exposition("a", "1", 100, 2, 90) + exposition("b", "1", 50, 1, 40).split("\n", 2)[2]
    )
    c = snap["fraud"]["1"]
    assert (c.requests, c.errors) == (150, 3)
    assert c.buckets == {5.0: 130, 50.0: 150, math.inf: 150}


def test_only_the_routers_lines_are_parsed_and_every_router_metric_is_among_them() -> None:
    """A node's export is mostly Ray's own series: they are dropped before the parser reads
    them, so a metric the router records must keep the prefix the filter keeps."""
    noise = "# HELP ray_tasks Tasks.\n# TYPE ray_tasks gauge\n" + "".join(
        f'ray_tasks{{State="RUNNING",Name="t{i}"}} {i}.0\n' for i in range(1000)
    )
    text = noise + exposition("a", "1", 100, 2, 90)
    kept = routers_only(text)
    assert "ray_tasks" not in kept
    assert "ray_serve_num_http_requests" not in kept
    assert parse(text) == parse(exposition("a", "1", 100, 2, 90))
    assert parse(text)["fraud"]["1"].requests == 100
    names = [v for k, v in vars(protocol).items() if k.startswith("METRIC_") and k != "METRIC_TAGS"]
    assert names
    assert all(f"ray_{name}".startswith(ROUTER_PREFIX) for name in names)


def test_window_diffs_two_scrapes() -> None:
    before = parse(exposition("a", "2", 100, 1, 100))
    after = merge([parse(exposition("a", "2", 160, 4, 130))])
    w = window(before, after, "fraud", "2")
    assert (w.requests, w.errors) == (60, 3)
    assert w.buckets == ((5.0, 30), (50.0, 60), (math.inf, 60))
    assert w.quantile_ms(0.5) == 5.0


def test_a_counter_reset_counts_from_zero() -> None:
    before = parse(exposition("a", "2", 500, 10, 500))
    after = parse(exposition("b", "2", 40, 0, 40))  # the router replica restarted
    assert window(before, after, "fraud", "2").requests == 40


def test_unknown_versions_are_empty_and_snapshots_round_trip() -> None:
    snap = parse(exposition("a", "1", 10, 0, 10))
    assert window(None, snap, "fraud", "9").requests == 0
    assert from_json(to_json(snap)) == snap


def test_shed_requests_are_counted_apart_and_survive_the_baseline() -> None:
    labels = LABELS.format(replica="a", version="2")
    shed = f"""\
# TYPE ray_serveops_router_shed_total counter
ray_serveops_router_shed_total{{{labels}}} 7.0
"""
    before = parse(exposition("a", "2", 100, 0, 90))
    after = parse(exposition("a", "2", 200, 0, 180) + shed)
    w = window(from_json(to_json(before)), after, "fraud", "2")
    assert (w.requests, w.errors, w.shed) == (100, 0, 7)  # shed: no request, no error
    legacy = '{"fraud": {"2": {"requests": 1, "errors": 0, "buckets": []}}}'  # before shedding
    assert from_json(legacy)["fraud"]["2"].shed == 0


def test_mirrors_dropped_are_summed_over_reasons_and_survive_the_baseline() -> None:
    labels = LABELS.format(replica="a", version="2")
    dropped = f"""\
# TYPE ray_serveops_router_mirror_dropped_total counter
ray_serveops_router_mirror_dropped_total{{{labels},reason="pressure"}} 30.0
ray_serveops_router_mirror_dropped_total{{{labels},reason="full"}} 5.0
"""
    before = parse(exposition("a", "2", 10, 0, 10))
    after = parse(exposition("a", "2", 14, 0, 14) + dropped)
    w = window(from_json(to_json(before)), after, "fraud", "2")
    assert (w.requests, w.mirrors_dropped) == (4, 35)
    legacy = '{"fraud": {"2": {"requests": 1, "errors": 0, "buckets": [], "shed": 0}}}'
    assert from_json(legacy)["fraud"]["2"].mirror_dropped == 0


def queue_wait(replica: str, version: str, seconds: float, traffic: str = "live") -> str:
    labels = LABELS.format(replica=replica, version=version).replace('"live"', f'"{traffic}"')
    return f"""\
# TYPE ray_serveops_router_queue_wait_seconds_total counter
ray_serveops_router_queue_wait_seconds_total{{{labels}}} {seconds}
"""


def test_queue_waits_sum_over_replicas_and_give_a_windows_mean_wait() -> None:
    before = parse(exposition("a", "2", 100, 0, 90) + queue_wait("a", "2", 1.5))
    after = parse(
        exposition("a", "2", 150, 0, 130)
        + queue_wait("a", "2", 2.5)
        + queue_wait("b", "2", 1.5)
        + queue_wait("b", "2", 9.0, traffic="pinned")  # smoke hooks' waits are not analysed
    )
    w = window(from_json(to_json(before)), after, "fraud", "2")
    assert w.requests == 50
    assert math.isclose(w.queue_wait_s, 2.5)  # (2.5 + 1.5) - 1.5
    assert w.mean_wait_ms == pytest.approx(50.0)
    reset = parse(exposition("c", "2", 10, 0, 10) + queue_wait("c", "2", 0.2))
    assert math.isclose(window(after, reset, "fraud", "2").queue_wait_s, 0.2)
    legacy = '{"fraud": {"2": {"requests": 1, "errors": 0, "buckets": [], "shed": 0}}}'
    assert from_json(legacy)["fraud"]["2"].queue_wait_s == 0
    assert window(None, parse(exposition("a", "3", 0, 0, 0)), "fraud", "3").mean_wait_ms is None


def service(replica: str, version: str, fast: int, total: int) -> str:
    """The own-time histogram (slot to answer): `fast` of `total` within 5 ms."""
    labels = LABELS.format(replica=replica, version=version)
    return f"""\
# TYPE ray_serveops_router_service_ms histogram
ray_serveops_router_service_ms_bucket{{{labels},le="5.0"}} {fast}.0
ray_serveops_router_service_ms_bucket{{{labels},le="+Inf"}} {total}.0
ray_serveops_router_service_ms_count{{{labels}}} {total}.0
ray_serveops_router_service_ms_sum{{{labels}}} 1.0
"""


def test_a_versions_own_time_is_a_histogram_of_its_own_diffed_like_the_latency() -> None:
    before = parse(exposition("a", "2", 100, 0, 10) + service("a", "2", 90, 100))
    after = parse(
        exposition("a", "2", 150, 0, 20) + service("a", "2", 120, 130) + service("b", "2", 20, 20)
    )
    w = window(from_json(to_json(before)), after, "fraud", "2")
    assert w.buckets == ((5.0, 10), (50.0, 50), (math.inf, 50))  # through the router: slow
    assert w.service_buckets == ((5.0, 50), (math.inf, 50))  # its own time: all within 5 ms
    assert w.own_quantile_ms(0.95) == pytest.approx(4.75)
    legacy = '{"fraud": {"2": {"requests": 1, "errors": 0, "buckets": [], "shed": 0}}}'
    assert from_json(legacy)["fraud"]["2"].service_buckets == {}
    assert window(None, parse(exposition("a", "3", 5, 0, 5)), "fraud", "3").service_buckets == ()

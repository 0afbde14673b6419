"""Reading the routers' per-version metrics: scrape, keep a baseline, diff into a window.

The router records per version (controller/serving/router.py, through `ray.serve.metrics`):
requests, 5xx errors, a latency histogram, the version's own time (from its slot to its answer,
a second histogram), requests shed (503 at once: the version had no
room, controller/serving/pressure.py) and seconds waited in the router's queue for a slot,
labelled by traffic (live, shadow, pinned).
Pinned requests (the controller's own smoke hooks) are left out here: a window holds only what
clients sent and the router mirrored. Ray exports them on every node's metrics export
port in Prometheus text format, where a cluster's Prometheus scrapes them too. The controller
scrapes the same endpoints (nodes listed by the dashboard), sums the series of all router
replicas, and diffs two scrapes: counters are cumulative, so a window is `after - before`.

Ray exports metrics every `RAY_metrics_report_interval_ms` (10 s by default): a window read at
time t covers roughly [t0 - lag, t - lag], lag at most that interval. Keep analysis intervals
well above it (the default 30 s), or lower the export interval on the cluster.

A snapshot is plain data (JSON), so the baseline of an analysis window is persisted with the
rollout and survives a controller restart.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Protocol

import httpx
from prometheus_client.parser import text_string_to_metric_families

from controller.cluster.capacity import alive_raylets
from controller.cluster.serve_api import MAX_NODES_BYTES, NODES_PATH, read_nodes
from controller.errors import Unreachable
from controller.httpread import get_capped
from controller.rollout.analysis import Buckets, VersionWindow
from controller.serving.protocol import (
    METRIC_ERRORS,
    METRIC_LATENCY,
    METRIC_MIRROR_DROPPED,
    METRIC_QUEUE_WAIT,
    METRIC_REQUESTS,
    METRIC_SERVICE,
    METRIC_SHED,
    METRIC_SLOT_WAIT,
)

PREFIX = "ray_"  # Ray prefixes application metrics
ROUTER_PREFIX = f"{PREFIX}serveops_router_"  # every series the router records (protocol.py)
# One node's exposition: Ray's own series and every replica's are a few MB on a busy node.
MAX_SCRAPE_BYTES = 64 * 1024 * 1024


@dataclass
class Counts:
    """Cumulative figures of one version of one deployment, summed over router replicas."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound (ms) -> cumulative
    shed: float = 0.0  # answered 503 at once by the router: this version had no room
    mirror_dropped: float = 0.0  # mirrored copies to this version not sent (pressure, full)
    queue_wait_s: float = 0.0  # seconds its requests waited in the router's queue for a slot
    service_buckets: dict[float, float] = field(default_factory=dict)  # slot to answer, as above
    # Not cumulative: the longest wait for a slot a router replica estimates now (a gauge,
    # METRIC_SLOT_WAIT). Read before a candidate starts; no part of a window or a baseline.
    slot_wait_s: float = 0.0


Snapshot = dict[str, dict[str, Counts]]  # deployment -> version -> counts


class MetricsSource(Protocol):
    """Where the controller reads router metrics; RayMetricsSource, or a fake in tests."""

    def scrape(self) -> Snapshot: ...


def routers_only(text: str) -> str:
    """The routers' lines of a node's exposition (samples, HELP and TYPE). The rest, Ray's own
    series and every replica's, is most of the text: not parsed, every pass that reads it."""
    comments = (f"# HELP {ROUTER_PREFIX}", f"# TYPE {ROUTER_PREFIX}")
    return "\n".join(
        line
        for line in text.splitlines()
        if line.startswith(ROUTER_PREFIX) or line.startswith(comments)
    )


def parse(text: str) -> Snapshot:
    """Router series from a Prometheus text exposition, summed per (deployment, version)."""
    out: Snapshot = {}
    names = {
        f"{PREFIX}{METRIC_REQUESTS}_total": "requests",
        f"{PREFIX}{METRIC_ERRORS}_total": "errors",
        f"{PREFIX}{METRIC_LATENCY}_bucket": "bucket",
        f"{PREFIX}{METRIC_SHED}_total": "shed",
        f"{PREFIX}{METRIC_MIRROR_DROPPED}_total": "mirror_dropped",
        f"{PREFIX}{METRIC_QUEUE_WAIT}_total": "queue_wait",
        f"{PREFIX}{METRIC_SERVICE}_bucket": "service",
        f"{PREFIX}{METRIC_SLOT_WAIT}": "slot_wait",
    }
    for family in text_string_to_metric_families(routers_only(text)):
        for sample in family.samples:
            kind = names.get(sample.name)
            if kind is None:
                continue
            deployment = sample.labels.get("serveops_deployment")
            version = sample.labels.get("version")
            if not deployment or version is None:
                continue
            if sample.labels.get("traffic") == "pinned":  # smoke hooks' requests: never analysed
                continue
            counts = out.setdefault(deployment, {}).setdefault(version, Counts())
            if kind == "requests":
                counts.requests += sample.value
            elif kind == "errors":
                counts.errors += sample.value
            elif kind == "shed":
                counts.shed += sample.value
            elif kind == "mirror_dropped":
                counts.mirror_dropped += sample.value
            elif kind == "queue_wait":
                counts.queue_wait_s += sample.value
            elif kind == "slot_wait":  # a gauge per router replica: the longest wait
                counts.slot_wait_s = max(counts.slot_wait_s, sample.value)
            else:
                le = float(sample.labels.get("le", "+Inf"))
                hist = counts.buckets if kind == "bucket" else counts.service_buckets
                hist[le] = hist.get(le, 0.0) + sample.value
    return out


def merge(snapshots: list[Snapshot]) -> Snapshot:
    out: Snapshot = {}
    for snap in snapshots:
        for dep, versions in snap.items():
            for version, c in versions.items():
                total = out.setdefault(dep, {}).setdefault(version, Counts())
                total.requests += c.requests
                total.errors += c.errors
                total.shed += c.shed
                total.mirror_dropped += c.mirror_dropped
                total.queue_wait_s += c.queue_wait_s
                total.slot_wait_s = max(total.slot_wait_s, c.slot_wait_s)
                for le, n in c.buckets.items():
                    total.buckets[le] = total.buckets.get(le, 0.0) + n
                for le, n in c.service_buckets.items():
                    total.service_buckets[le] = total.service_buckets.get(le, 0.0) + n
    return out


def window(
    before: Snapshot | None, after: Snapshot, deployment: str, version: str
) -> VersionWindow:
    """What `version` did between two snapshots. A counter that went down was reset (a router
    replica restarted): its value after the reset is what happened since."""
    now = after.get(deployment, {}).get(version, Counts())
    then = (before or {}).get(deployment, {}).get(version, Counts())

    def grown(a: float, b: float) -> float:
        return a - b if a >= b else a

    def delta(a: float, b: float) -> int:
        return round(grown(a, b))

    def histogram(
        now_h: dict[float, float], then_h: dict[float, float], total: int | None
    ) -> Buckets:
        """The window's buckets, closed with `total` (None: the last bound's count) when no
        +Inf bucket was exported."""
        out = tuple((le, delta(now_h[le], then_h.get(le, 0.0))) for le in sorted(now_h))
        if not out or math.isinf(out[-1][0]):
            return out
        return (*out, (math.inf, out[-1][1] if total is None else total))

    requests = delta(now.requests, then.requests)
    errors = min(requests, delta(now.errors, then.errors))
    buckets = histogram(now.buckets, then.buckets, requests)
    dropped = delta(now.mirror_dropped, then.mirror_dropped)
    waited = grown(now.queue_wait_s, then.queue_wait_s)  # seconds: not rounded
    service = histogram(now.service_buckets, then.service_buckets, None)  # its count unread
    shed = delta(now.shed, then.shed)
    return VersionWindow(requests, errors, buckets, shed, dropped, waited, service)


def _listed(buckets: dict[float, float]) -> list[list[float | str]]:
    return [[("+Inf" if math.isinf(le) else le), n] for le, n in buckets.items()]


def to_json(snapshot: Snapshot) -> str:
    return json.dumps(
        {
            dep: {
                v: {
                    "requests": c.requests,
                    "errors": c.errors,
                    "shed": c.shed,
                    "mirror_dropped": c.mirror_dropped,
                    "queue_wait_s": c.queue_wait_s,
                    "buckets": _listed(c.buckets),
                    "service_buckets": _listed(c.service_buckets),
                }
                for v, c in versions.items()
            }
            for dep, versions in snapshot.items()
        },
        sort_keys=True,
    )


def from_json(text: str) -> Snapshot:
    data = json.loads(text)
    return {
        dep: {
            v: Counts(
                c["requests"],
                c["errors"],
                {float(le): n for le, n in c["buckets"]},
                c.get("shed", 0.0),  # baselines persisted before shedding existed have none
                c.get("mirror_dropped", 0.0),
                c.get("queue_wait_s", 0.0),  # nor, before it was counted, waits
                {float(le): n for le, n in c.get("service_buckets", [])},  # nor service time
            )
            for v, c in versions.items()
        }
        for dep, versions in data.items()
    }


class RayMetricsSource:
    """Scrapes the metrics export port of every alive node the Ray dashboard lists. Each
    exposition is read within `max_bytes`, the node list within `max_nodes_bytes` (the limit
    ServeClient reads it with), each within `timeout_s` (controller/httpread.py): code
    on a node (a model server's own metrics) decides what a node exports, and a cut answer
    holds the step (Unreachable) instead of costing the controller its memory."""

    def __init__(
        self,
        address: str,
        *,
        timeout_s: float = 5.0,
        max_bytes: int = MAX_SCRAPE_BYTES,
        max_nodes_bytes: int = MAX_NODES_BYTES,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.address = address.rstrip("/")
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.max_nodes_bytes = max_nodes_bytes
        self._transport = transport  # unit tests: a fake cluster

    def _client(self) -> httpx.Client:
        return httpx.Client(transport=self._transport)

    def endpoints(self) -> list[str]:
        """The metrics export URL of every alive node."""
        with self._client() as client:
            return self._endpoints(client)

    def _endpoints(self, client: httpx.Client) -> list[str]:
        url = f"{self.address}{NODES_PATH}"
        try:
            nodes = read_nodes(client, url, timeout_s=self.timeout_s, limit=self.max_nodes_bytes)
        except Unreachable as err:
            raise Unreachable(f"cannot list Ray nodes at {self.address}: {err.message}") from None
        return [
            f"http://{node.get('ip') or raylet.get('nodeManagerAddress') or '127.0.0.1'}:"
            f"{raylet['metricsExportPort']}/metrics"
            for node, raylet in alive_raylets(nodes)
            if raylet.get("metricsExportPort")
        ]

    def scrape(self) -> Snapshot:
        """Every node's exposition, merged; one client (its connections) for the whole read."""
        snapshots = []
        with self._client() as client:
            for url in self._endpoints(client):
                try:
                    body = get_capped(client, url, self.max_bytes, self.timeout_s)
                except Unreachable as err:
                    raise Unreachable(f"cannot scrape Ray metrics: {err.message}") from None
                snapshots.append(parse(body.decode("utf-8", errors="replace")))
        return merge(snapshots)

"""The router's counters and latency histogram, per version, through Ray Serve's metrics API.

Names and tags are in protocol.py (the controller reads them back: rollout/router_metrics.py).
"""

from __future__ import annotations

import time
from typing import Any

from controller.serving.protocol import (
    LATENCY_BOUNDARIES_MS,
    METRIC_ERRORS,
    METRIC_LATENCY,
    METRIC_MIRROR_DROPPED,
    METRIC_OVERFLOW,
    METRIC_QUEUE_WAIT,
    METRIC_RECORDING_DROPPED,
    METRIC_REQUESTS,
    METRIC_SERVICE,
    METRIC_SHADOW_AGREEMENT,
    METRIC_SHED,
    METRIC_SLOT_WAIT,
    METRIC_TAGS,
    Target,
)


class RouterMetrics:
    """Per-version counters and a latency histogram through Ray Serve's metrics API."""

    def __init__(self) -> None:
        from ray.serve import metrics

        # Ray annotates tag_keys as `tuple[str]` but takes any number of keys.
        tags: Any = METRIC_TAGS
        agreement_tags: Any = ("serveops_deployment", "version", "agree")
        mirror_tags: Any = ("serveops_deployment", "version", "reason")
        self.requests = metrics.Counter(
            METRIC_REQUESTS, description="Requests answered, by version.", tag_keys=tags
        )
        self.errors = metrics.Counter(
            METRIC_ERRORS, description="5xx answers (failures, timeouts).", tag_keys=tags
        )
        self.latency = metrics.Histogram(
            METRIC_LATENCY,
            description="Latency of a version's answer through the router, ms.",
            boundaries=LATENCY_BOUNDARIES_MS,
            tag_keys=tags,
        )
        self.service = metrics.Histogram(
            METRIC_SERVICE,
            description="A version's own time, ms: from its slot to its answer, without the "
            "router's queue.",
            boundaries=LATENCY_BOUNDARIES_MS,
            tag_keys=tags,
        )
        self.recording_dropped = metrics.Counter(
            METRIC_RECORDING_DROPPED,
            description="Sampled requests not recorded: the recorder's queue was full.",
            tag_keys=("serveops_deployment",),
        )
        self.shed = metrics.Counter(
            METRIC_SHED,
            description="Requests answered 503 at once: their version had max_in_flight.",
            tag_keys=tags,
        )
        self.overflow = metrics.Counter(
            METRIC_OVERFLOW,
            description="Live requests moved to the other weighted version: theirs was full.",
            tag_keys=tags,
        )
        self.mirror_dropped = metrics.Counter(
            METRIC_MIRROR_DROPPED,
            description="Mirrors not sent: the stable version under pressure, a new one's ramp, "
            "or theirs full.",
            tag_keys=mirror_tags,
        )
        self.queue_wait = metrics.Counter(
            METRIC_QUEUE_WAIT,
            description="Seconds requests waited in the router's queue for a slot of their "
            "version (rate: how many wait on average).",
            tag_keys=tags,
        )
        self.slot_wait = metrics.Gauge(
            METRIC_SLOT_WAIT,
            description="Longest wait for a slot of its version a request would have had in "
            "the last 10 s (the router's estimate).",
            tag_keys=tags,
        )
        self.agreement_total = metrics.Counter(
            METRIC_SHADOW_AGREEMENT,
            description="Mirrored answers equal to the served one (agree=true) or not.",
            tag_keys=agreement_tags,
        )

    def record(
        self, deployment: str, target: Target, traffic: str, status: int, started: float
    ) -> None:
        tags = _tags(deployment, target, traffic)
        self.requests.inc(tags=tags)
        if status >= 500:
            self.errors.inc(tags=tags)
        self.latency.observe((time.perf_counter() - started) * 1000.0, tags=tags)

    def waited(self, deployment: str, target: Target, traffic: str, seconds: float) -> None:
        """A request got its slot after `seconds` in the router's queue (0: none, not counted:
        Ray's counters take only positive increments)."""
        if seconds > 0:
            self.queue_wait.inc(seconds, tags=_tags(deployment, target, traffic))

    def served(self, deployment: str, target: Target, traffic: str, started: float) -> None:
        """A version held a request's slot from `started` (perf_counter) until now: answered,
        failed or given up at the timeout."""
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        self.service.observe(elapsed_ms, tags=_tags(deployment, target, traffic))

    def queue_now(self, deployment: str, target: Target, wait_s: float) -> None:
        """The longest wait for one of `target`'s slots a live request admitted lately would
        have had (METRIC_SLOT_WAIT)."""
        self.slot_wait.set(wait_s, tags=_tags(deployment, target, "live"))

    def count(self, counter: Any, deployment: str, target: Target, traffic: str) -> None:
        counter.inc(tags=_tags(deployment, target, traffic))

    def mirror_unsent(self, deployment: str, target: Target, reason: str) -> None:
        """A mirror to `target` not sent, or given up in its queue (`reason`: full, ramp,
        pressure)."""
        tags = {"serveops_deployment": deployment, "version": target.version, "reason": reason}
        self.mirror_dropped.inc(tags=tags)

    def agreement(self, deployment: str, target: Target, agree: bool) -> None:
        self.agreement_total.inc(
            tags={
                "serveops_deployment": deployment,
                "version": target.version,
                "agree": "true" if agree else "false",
            }
        )


def _tags(deployment: str, target: Target, traffic: str) -> dict[str, str]:
    """The tags of METRIC_TAGS for one request."""
    return {"serveops_deployment": deployment, "version": target.version, "traffic": traffic}

"""What the controller and the serving code agree on: names, headers, and the router's config."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

VERSION_HEADER = "x-serveops-version"  # model version that answered
DEPLOYMENT_HEADER = "x-serveops-deployment"
REPLAY_HEADER = "x-serveops-replay"  # sent by serveops replays; routers never record them
VARIANT_HEADER = "x-serveops-variant"  # A/B: the variant that answered
ROUTING_HEADER = "x-serveops-routing"  # `routing_id` of the weights the answer was routed by
MARKER_KEY = "serveops"  # key under an application's `args` marking it as ours
STATUS_POLL_S = 0.5  # how often a router re-reads Serve's status: how soon a new version serves

ROUTER_IMPORT_PATH = "controller.serving.router:build"
MODEL_IMPORT_PATH = "controller.serving.model:build"
ROUTER_DEPLOYMENT = "Router"
MODEL_DEPLOYMENT = "ModelServer"

# Router metrics, per version, through Ray's metrics API (ray.serve.metrics). A Prometheus
# scraping the Ray nodes sees them as ray_<name>_total / ray_<name>_bucket, with Serve's own
# tags (application, deployment, replica) plus these.
METRIC_REQUESTS = "serveops_router_requests"  # answers, any status
METRIC_ERRORS = "serveops_router_errors"  # 5xx answers: failures and timeouts
METRIC_LATENCY = "serveops_router_latency_ms"  # histogram, from dispatch to answer
METRIC_SHADOW_AGREEMENT = "serveops_router_shadow_agreement"  # mirrored answer == served answer
# traffic: live | shadow | pinned (authenticated pins: smoke hooks; never analysed as live)
METRIC_TAGS = ("serveops_deployment", "version", "traffic")
METRIC_RECORDING_DROPPED = "serveops_router_recording_dropped"  # sampled, not recorded
# Pressure (controller/serving/pressure.py): requests answered 503 at once because the version
# they were routed to had `max_in_flight` requests in flight (tags METRIC_TAGS, `version`: the
# full one); live requests moved to the other weighted version instead; mirrored copies the
# config asked for but the router did not send (reason: pressure | ramp | full).
METRIC_SHED = "serveops_router_shed"
METRIC_OVERFLOW = "serveops_router_overflow"
METRIC_MIRROR_DROPPED = "serveops_router_mirror_dropped"
# Seconds requests waited in the router's queue for one of their version's slots (tags
# METRIC_TAGS): its rate is how many wait on average (Little's law), and a window's increase
# over its requests is the mean wait per request.
METRIC_QUEUE_WAIT = "serveops_router_queue_wait_seconds"
# Histogram (ms, tags METRIC_TAGS) of a version's own time: from the slot the router handed a
# request to its answer, the router's queue left out. Under saturation the analysis judges
# the p95 conditions by it too (controller/rollout/analysis.py).
METRIC_SERVICE = "serveops_router_service_ms"
# Gauge (seconds, tags METRIC_TAGS, traffic "live"): the longest wait for one of its version's
# slots the router estimated (`InFlight.wait_s`, every STATUS_POLL_S while requests come) in
# the last SLOT_WAIT_PEAK_S. The controller reads it before it starts a candidate: a start's
# load added to a standing queue is shed (controller/rollout/headroom.py). A peak, not the
# last estimate: a queue's length swings, and Ray exports a gauge's last value only every
# `RAY_metrics_report_interval_ms` (10 s by default).
METRIC_SLOT_WAIT = "serveops_router_slot_wait_seconds"
SLOT_WAIT_PEAK_S = 10.0
SHED_HEADER = "x-serveops-shed"  # on a shed 503: the version that was full
RETRY_AFTER_S = 1  # Retry-After of a shed 503, seconds
# Requests one router replica takes from Serve's proxy at once. Past it the proxy's handle
# queues and backs off in front of the router, out of its sight: the path stalls into client
# timeouts (docs/benchmarks.md, 2026-12-04). So it is far above what the versions' bounds let
# the router hold, and the router sheds on its own before reaching it (ROUTER_SHED_AT).
ROUTER_MAX_ONGOING = 2048
ROUTER_SHED_AT = ROUTER_MAX_ONGOING - 64  # room left to answer the shed ones
# 0.5 ms to ~55 s, 25% apart: a p95 regression of 20% is resolved by interpolation.
LATENCY_BOUNDARIES_MS = [round(0.5 * 1.25**k, 3) for k in range(53)]


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid")

    app: str = Field(description="Serve application of one model version, e.g. `fraud--v7`.")
    version: str = Field(description="Registry version it serves, echoed in the response header.")
    weight: float = Field(ge=0, le=100, description="Share of traffic, in percent.")
    max_in_flight: int | None = Field(
        default=None,
        ge=1,
        description="Requests this router replica may have in flight to the version (sent, "
        "not answered: running or queued in its replicas); one more is shed at once with 503 "
        "and Retry-After (or, during a canary, moved to the other version). None: no bound.",
    )
    max_running: int | None = Field(
        default=None,
        ge=1,
        description="Requests this router replica hands the version's replicas at once (their "
        "slots); the rest of `max_in_flight` waits in the router, first in first out, for an "
        "answer to free a slot (controller/serving/slots.py). None: all go to Serve's handle "
        "(autoscaled versions: Serve's autoscaler counts what waits there).",
    )


class RolloutNote(BaseModel):
    """A rollout in flight or aborted, written into the router so `serveops status` shows it."""

    model_config = ConfigDict(extra="forbid")

    strategy: str
    phase: str  # loading, steps, preview, switched, aborted
    candidate: str = Field(description="Version the rollout moves to.")
    message: str = ""


class ABTest(BaseModel):
    """A/B variants: the router's `targets` are the variants, with their weights."""

    model_config = ConfigDict(extra="forbid")

    header: str = Field(description="Lowercase request header whose value picks the variant.")
    variants: dict[str, str] = Field(
        description="Variant name by application, echoed in `x-serveops-variant`."
    )


# Headers a recording keeps unless a deployment lists others: what a replay needs to send the
# same request, nothing that identifies a user or carries a credential.
DEFAULT_RECORD_HEADERS = ("content-type", "content-encoding", "accept", "accept-encoding")


class RecordingConfig(BaseModel):
    """What the router records (see controller/serving/recorder.py); rendered from the spec."""

    model_config = ConfigDict(extra="forbid")

    sample_rate: float = Field(gt=0, le=1, description="Share of live requests recorded.")
    dir: str = Field(
        description="Directory, on the router's node, the files are written to (`~` is the "
        "replica's home); made 0700, files 0600."
    )
    max_file_mb: float = Field(gt=0, description="A file is rotated once it reaches this size.")
    keep_files: int = Field(
        ge=1,
        description="Files of this deployment the directory keeps, across replicas and "
        "restarts; oldest go first.",
    )
    queue_size: int = Field(ge=1, description="Requests waiting for the writer; more are dropped.")
    deny_headers: list[str] = Field(description="Header names or globs never written.")
    allow_headers: list[str] = Field(
        default_factory=lambda: list(DEFAULT_RECORD_HEADERS),
        description="Header names or globs written (when not denied); no other header is.",
    )
    redact_query: list[str] = Field(
        default_factory=list,
        description="Query parameter names or globs whose values are masked, besides any "
        "secret-looking name (token, key, password, ...).",
    )
    redact_fields: list[str] = Field(
        default_factory=list,
        description="JSON body fields masked, in requests and answers: a key glob at any depth "
        "(`email`), or a dotted path from the top (`customer.*.ssn`).",
    )
    max_total_mb: float = Field(
        default=1024,
        gt=0,
        description="Size of this deployment's files in the directory, across replicas and "
        "restarts, beyond which the oldest are deleted.",
    )


def routing_id(targets: list[Target]) -> str:
    """A short id of a router's weights, echoed in `x-serveops-routing`: a client (or a
    benchmark) sees from which answer on a weight change applies."""
    blob = json.dumps(sorted((t.app, t.weight) for t in targets))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


class RouterConfig(BaseModel):
    """The router's `user_config`. Changing it calls `reconfigure()`; no replica restarts."""

    model_config = ConfigDict(extra="forbid")

    deployment: str
    targets: list[Target]
    fallback: list[Target] = Field(
        default_factory=list,
        description="Versions that serve while none of `targets` is RUNNING: the previous "
        "versions during a switch, so traffic moves the moment the new version can take it.",
    )
    shadow: list[Target] = Field(
        default_factory=list,
        description="Versions that receive a copy of a share of the requests (`weight`: percent "
        "mirrored); their answers are discarded, compared with the served one, and counted in "
        "the router's metrics. Rollouts use it for shadow and blue-green previews.",
    )
    rollout: RolloutNote | None = Field(
        default=None, description="Set while a progressive rollout shapes the weights."
    )
    ab: ABTest | None = Field(
        default=None,
        description="Set for an A/B deployment: requests are sticky to a variant by a hash of "
        "a header's value.",
    )
    timeout_s: float = Field(gt=0)
    revision: str | None = Field(
        default=None, description="Git commit that last changed this deployment (not diffed)."
    )
    recording: RecordingConfig | None = Field(
        default=None, description="Record a sample of live requests; None records nothing."
    )
    pin_keys: list[str] = Field(
        default_factory=list,
        description="Public Ed25519 keys (base64url) whose tokens may pin a request to a "
        "version (controller/serving/pinning.py). Public: the controller keeps the private key. "
        "Empty: no request is ever pinned.",
    )

    @property
    def apps(self) -> set[str]:
        """Every version application the router may send to: weighted, fallback, shadow."""
        return {t.app for t in [*self.targets, *self.fallback, *self.shadow]}


def router_config(app: dict[str, Any]) -> RouterConfig | None:
    """The `user_config` of a router application's config (as rendered or as live), or None
    when the application has no router deployment with one."""
    for dep in app.get("deployments") or []:
        if dep.get("name") == ROUTER_DEPLOYMENT and dep.get("user_config"):
            return RouterConfig.model_validate(dep["user_config"])
    return None

"""The controller's own Prometheus metrics, and the HTTP endpoint that exposes them.

Passes, sync status, rollouts and analyses are recorded into one registry (`METRICS`), served by
`serveops controller --metrics-port N` at `/metrics`. The router's per-version metrics are not
here: routers record them inside Ray Serve (`controller/serving/router.py`), and a Prometheus
scraping the Ray nodes sees them.

Label sets are per environment and deployment; a deployment that leaves the desired state (or
a rollout that leaves the store) has its series removed, so dashboards do not show ghosts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import get_args
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from controller.monitor.drift_report import DriftReport
from controller.rollout.state import Phase, RolloutState
from controller.sync.plan import Plan

# A pass that finds nothing to do takes milliseconds; one that applies waits for replicas
# (up to --timeout, 300 s by default).
DURATION_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
SYNC_STATES = ("Synced", "OutOfSync")
PHASES: tuple[str, ...] = get_args(Phase)
# Outcomes after which Serve holds what the pass planned (applied or healed in this pass).
_APPLIED = frozenset({"applied", "healed"})

MAX_QUALITY_VERSIONS = 20  # model versions exported per deployment by the quality gauge


@dataclass(frozen=True)
class PassFigures:
    """What one pass tells the metrics; filled by the controller after the pass."""

    environment: str
    outcome: str
    seconds: float
    finished_at: float  # unix time
    plan: Plan | None  # None: the pass did not plan (waiting, skipped, fetch failed)


class ControllerMetrics:
    """The metrics of the controllers in this process. One instance (`METRICS`) serves them all;
    tests make their own with a fresh registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        env = ("environment",)
        dep = ("environment", "deployment")
        self.duration = Histogram(
            "serveops_controller_reconcile_duration_seconds",
            "Duration of a reconcile pass (lease, fetch, plan, gate, apply, record).",
            env,
            buckets=DURATION_BUCKETS_S,
            registry=reg,
        )
        self.passes = Counter(
            "serveops_controller_reconcile",
            "Reconcile passes, by outcome (applied, in_sync, drift, failed, refused, ...).",
            (*env, "outcome"),
            registry=reg,
        )
        self.last_pass = Gauge(
            "serveops_controller_last_reconcile_timestamp_seconds",
            "When the last pass ended (unix time): a controller that stopped passing shows here.",
            env,
            registry=reg,
        )
        self.sync = Gauge(
            "serveops_controller_sync_status",
            "1 for the deployment's sync status (Synced: Serve holds what the pass planned; "
            "OutOfSync: it does not), 0 for the other.",
            (*dep, "status"),
            registry=reg,
        )
        self.step = Gauge(
            "serveops_controller_rollout_step",
            "Canary step the rollout stands at, from 1; 0 before the first step and for other "
            "strategies.",
            dep,
            registry=reg,
        )
        self.weight = Gauge(
            "serveops_controller_rollout_weight",
            "Share of client traffic, in percent, the rollout gives its candidate.",
            dep,
            registry=reg,
        )
        self.phase = Gauge(
            "serveops_controller_rollout_phase",
            "1 for the phase the deployment's latest rollout is in, 0 for the others.",
            (*dep, "phase"),
            registry=reg,
        )
        self.held_since = Gauge(
            "serveops_controller_rollout_held_since_timestamp_seconds",
            "When the rollout's hold began (unix time), by reason: `headroom` (its candidate "
            "waits to start or to be scaled for the switch until it fits and no queue stands in "
            "front of the stable version) or `saturated` (its analyses hold while the serving "
            "path is saturated). No series while not held. A hold has no deadline of its own: "
            "alert on `time() - serveops_controller_rollout_held_since_timestamp_seconds`.",
            (*dep, "reason"),
            registry=reg,
        )
        self.analyses = Counter(
            "serveops_controller_analysis",
            "Rollout analyses, by result (pass, fail, inconclusive).",
            (*dep, "result"),
            registry=reg,
        )
        self.drift = Gauge(
            "serveops_monitor_drift",
            "1 when the deployment's last judged monitoring window drifted from its reference, "
            "0 when it was healthy (windows with too few rows leave it as it was).",
            dep,
            registry=reg,
        )
        self.feature_psi = Gauge(
            "serveops_monitor_feature_psi",
            "PSI of each watched feature in the last judged window, against the reference.",
            (*dep, "feature"),
            registry=reg,
        )
        self.feature_js = Gauge(
            "serveops_monitor_feature_js",
            "Jensen-Shannon distance (base 2) of each watched feature in the last judged window.",
            (*dep, "feature"),
            registry=reg,
        )
        self.feature_missing = Gauge(
            "serveops_monitor_feature_missing_share",
            "Share of the last judged window's rows without a number for each watched feature.",
            (*dep, "feature"),
            registry=reg,
        )
        self.feature_out_of_range = Gauge(
            "serveops_monitor_feature_out_of_range_share",
            "Share of each watched feature's values outside the reference's range, last window.",
            (*dep, "feature"),
            registry=reg,
        )
        self.schema_violations = Gauge(
            "serveops_monitor_schema_violation_share",
            "Share of the last judged window's input rows that break the model's signature.",
            dep,
            registry=reg,
        )
        self.window_rows = Gauge(
            "serveops_monitor_window_rows",
            "Input rows read from the recordings of the last monitoring window.",
            dep,
            registry=reg,
        )
        self.quality = Gauge(
            "serveops_monitor_quality",
            "Live quality of each model version over the last window whose labels are due "
            "(`spec.monitoring.labels`): metric accuracy or roc_auc (classifiers), mae "
            "(regressors).",
            (*dep, "version", "metric"),
            registry=reg,
        )
        self.labels_joined = Gauge(
            "serveops_monitor_labels_joined",
            "Recorded requests joined with a label in the last scored window.",
            dep,
            registry=reg,
        )
        self._lock = threading.Lock()
        self._features: dict[tuple[str, str], set[str]] = {}  # (env, deployment) -> features
        self._synced: dict[str, set[str]] = {}  # environment -> deployments with a sync series
        self._rollouts: dict[str, set[str]] = {}  # environment -> deployments with rollout series
        self._held: set[tuple[str, str, str]] = set()  # (env, deployment, reason) with a series

    def with_process_metrics(self) -> ControllerMetrics:
        """Add the process_*, python_gc_* and python_info series (for the served registry)."""
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        return self

    # --- recording ------------------------------------------------------------------------------

    def record_pass(self, figures: PassFigures, rollouts: Mapping[str, RolloutState]) -> None:
        env = figures.environment
        self.duration.labels(env).observe(figures.seconds)
        self.passes.labels(env, figures.outcome).inc()
        self.last_pass.labels(env).set(figures.finished_at)
        with self._lock:
            if figures.plan is not None:
                self._set_sync(env, sync_statuses(figures.plan, figures.outcome))
            self._set_rollouts(env, rollouts)

    def record_analysis(self, environment: str, deployment: str, verdict: str) -> None:
        self.analyses.labels(environment, deployment, verdict).inc()

    def record_drift(self, report: DriftReport) -> None:
        """The gauges of one judged window (an error or too few rows changes only the rows)."""
        env, name = report.environment, report.deployment
        self.window_rows.labels(env, name).set(report.rows)
        self._record_quality(report)
        if report.status not in ("drift", "ok"):
            return
        self.drift.labels(env, name).set(1 if report.drifted else 0)
        schema = report.extra.get("schema")
        if isinstance(schema, dict) and isinstance(schema.get("share"), int | float):
            self.schema_violations.labels(env, name).set(schema["share"])
        with self._lock:
            features = {f.name: f for f in report.features}
            gauges = (
                (self.feature_psi, "psi"),
                (self.feature_js, "js_distance"),
                (self.feature_missing, "missing_share"),
                (self.feature_out_of_range, "out_of_range_share"),
            )
            for gone in self._features.get((env, name), set()) - features.keys():
                for gauge, _ in gauges:
                    gauge.remove(env, name, gone)
            for feature, figures in features.items():
                for gauge, field in gauges:
                    gauge.labels(env, name, feature).set(getattr(figures, field))
            self._features[(env, name)] = set(features)

    def _record_quality(self, report: DriftReport) -> None:
        """The scored window's quality per version (its labels are in whatever the drift)."""
        quality = report.extra.get("quality")
        if not isinstance(quality, dict) or "versions" not in quality:
            return
        env, name = report.environment, report.deployment
        self.labels_joined.labels(env, name).set(quality.get("joined", 0))
        # Versions come from the recordings: a bounded number of series, whatever they hold.
        for version, figures in list(quality["versions"].items())[:MAX_QUALITY_VERSIONS]:
            for metric in ("accuracy", "roc_auc", "mae"):
                value = figures.get(metric)
                if isinstance(value, int | float):
                    self.quality.labels(env, name, version, metric).set(value)

    def _set_sync(self, env: str, statuses: Mapping[str, str]) -> None:
        for gone in self._synced.get(env, set()) - statuses.keys():
            for state in SYNC_STATES:
                self.sync.remove(env, gone, state)
        for deployment, status in statuses.items():
            for state in SYNC_STATES:
                self.sync.labels(env, deployment, state).set(1 if state == status else 0)
        self._synced[env] = set(statuses)

    def _set_rollouts(self, env: str, rollouts: Mapping[str, RolloutState]) -> None:
        for gone in self._rollouts.get(env, set()) - rollouts.keys():
            self.step.remove(env, gone)
            self.weight.remove(env, gone)
            for phase in PHASES:
                self.phase.remove(env, gone, phase)
            self._set_held(env, gone, None)
        for deployment, state in rollouts.items():
            step = state.step + 1 if state.strategy == "canary" and state.phase == "steps" else 0
            self.step.labels(env, deployment).set(step)
            self.weight.labels(env, deployment).set(state.weight)
            for phase in PHASES:
                self.phase.labels(env, deployment, phase).set(1 if phase == state.phase else 0)
            self._set_held(env, deployment, state if state.active else None)
        self._rollouts[env] = set(rollouts)

    def _set_held(self, env: str, deployment: str, state: RolloutState | None) -> None:
        """A series per reason the rollout is held for now, none for the others."""
        held = {
            "headroom": state.held_since if state else None,
            "saturated": state.saturated_since if state else None,
        }
        for reason, since in held.items():
            key = (env, deployment, reason)
            if since is not None:
                self.held_since.labels(*key).set(since.timestamp())
                self._held.add(key)
            elif key in self._held:
                self.held_since.remove(*key)
                self._held.discard(key)


def sync_statuses(plan: Plan, outcome: str) -> dict[str, str]:
    """Each deployment of the plan (desired or orphaned): Synced when Serve holds what the pass
    planned for it (no change was needed, or this pass applied it), OutOfSync otherwise."""
    pending = set() if outcome in _APPLIED else plan.deployments_changed()
    orphans = {a.deployment for a in plan.actions if a.op == "orphan"}
    names: Iterable[str] = {m.deployment for m in plan.models} | orphans
    return {
        name: "OutOfSync" if name in pending or name in orphans else "Synced"
        for name in sorted(names)
    }


METRICS = ControllerMetrics().with_process_metrics()


def serve(port: int, host: str = "127.0.0.1", metrics: ControllerMetrics = METRICS) -> WSGIServer:
    """Serve `/metrics` in a daemon thread; port 0 picks a free one (`server.server_port`).
    Stop it with `server.shutdown()`."""
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server

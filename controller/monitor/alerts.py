"""Alerts of the monitoring step, one per episode each way: inputs drifting from the reference
(`model_drift`, then `model_drift_resolved`) and live quality below its thresholds
(`model_quality_low`, then `model_quality_recovered`), sent to the targets the deployment
names (`default`: the controller's notifier; others: webhooks the operator configured).

Hysteresis: a window that cannot say (too few rows or labels, an error) neither opens nor
closes an episode. Drift episodes are kept in the store; a quality episode is read back from
the reports, whose stored quality carries its status.
"""

from __future__ import annotations

import logging

from controller.gitops.context import PassContext
from controller.gitops.notify import Event, EventKind, WebhookNotifier
from controller.monitor.drift_report import DriftReport
from controller.monitor.retrain_step import queue_retraining
from controller.spec.models import ModelDeployment

log = logging.getLogger("serveops.controller")
HISTORY = 48  # earlier reports searched for the quality episode's state


def alert_drift(ctx: PassContext, spec: ModelDeployment, report: DriftReport) -> None:
    """Once when a drift episode opens, once when it closes (hysteresis: too few rows or an
    error neither opens nor closes one)."""
    env, name, store = report.environment, report.deployment, ctx.store
    kind: EventKind
    if report.status == "drift":
        if not store.set_drift_episode(env, name, report.window_end):
            return
        kind = "model_drift"
        message = f"inputs drifted: {report.summary()}"
        try:
            queue_retraining(ctx, spec, report)
        except Exception:
            log.exception("%s: queueing the retraining of %s failed", env, name)
    elif report.status == "ok":
        since = store.drift_episode(env, name)
        if since is None or not store.set_drift_episode(env, name, None):
            return
        kind = "model_drift_resolved"
        message = f"inputs back to the reference (drifting since {since:%Y-%m-%d %H:%M} UTC): "
        message += report.summary()
    else:
        return
    _announce(ctx, spec, report, kind, message)


def _announce(
    ctx: PassContext, spec: ModelDeployment, report: DriftReport, kind: EventKind, message: str
) -> None:
    """The event to every target the deployment names; a target that fails is logged."""
    mon = spec.spec.monitoring
    assert mon is not None
    env = report.environment
    event = Event(kind, env, report.commit, message, ctx.store.now(), ctx.source.display)
    for target in mon.alert_targets:
        try:
            send_alert(ctx, target, event, report.deployment)
        except Exception:
            log.exception("%s: alert %s to %r failed", env, kind, target)


def send_alert(ctx: PassContext, target: str, event: Event, deployment: str) -> None:
    """To the controller's notifier (`default`) or an operator-configured target."""
    if target == "default":
        ctx.notifier.notify(event)
        return
    urls = [url for name, url in ctx.settings.alert_targets if name == target]
    if not urls:
        log.warning(
            "%s: %s names alert target %r, which is not configured (--alert-target)",
            event.environment,
            deployment,
            target,
        )
        return
    notifier = WebhookNotifier(json_urls=urls)
    try:
        notifier.notify(event)
    finally:
        notifier.close()


def alert_quality(ctx: PassContext, spec: ModelDeployment, report: DriftReport) -> None:
    """Once when the scored window's quality turns low, once when it is back (the report is
    stored already: the episode's state is the last judged quality before it)."""
    quality = report.extra.get("quality")
    status = quality.get("status") if isinstance(quality, dict) else None
    if status not in ("low", "ok"):
        return
    assert isinstance(quality, dict)
    env, name = report.environment, report.deployment
    before = None
    for earlier in ctx.store.drift_history(env, name, HISTORY)[1:]:
        q = earlier.extra.get("quality")
        if isinstance(q, dict) and q.get("status") in ("low", "ok"):
            before = q["status"]
            break
    window = f"{quality.get('window_start')} .. {quality.get('window_end')}"
    kind: EventKind
    if status == "low" and before != "low":
        kind, message = "model_quality_low", f"live quality low in {window}: {quality['message']}"
    elif status == "ok" and before == "low":
        kind, message = (
            "model_quality_recovered",
            f"live quality back in {window}: {quality['message']}",
        )
    else:
        return
    _announce(ctx, spec, report, kind, message)

"""Per-deployment sync status and health, from live state and (optionally) a plan of Git."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from controller.cluster.live import LiveApp, LiveState
from controller.serving.protocol import router_config
from controller.sync.plan import Plan

Sync = Literal["Synced", "OutOfSync", "Unknown"]
Health = Literal["Healthy", "Progressing", "Degraded", "Missing"]


@dataclass
class VersionStatus:
    app: str
    version: str
    weight: float
    status: str
    fallback: bool = False  # serves only while no target runs (a switch in progress)


@dataclass
class DeploymentStatus:
    name: str
    route: str | None
    sync: Sync
    revision: str | None  # the commit that last changed what is live
    health: Health
    message: str = ""
    versions: list[VersionStatus] = field(default_factory=list)


def _health(apps: list[LiveApp]) -> tuple[Health, str]:
    for app in apps:
        if app.problem:
            return "Degraded", f"{app.name}: {app.problem}"
    for app in apps:
        if app.status != "RUNNING":
            return "Progressing", f"{app.name} is {app.status}" + (
                f": {app.message}" if app.message else ""
            )
    return "Healthy", ""


def deployment_statuses(
    live: LiveState, environment: str, plan: Plan | None = None
) -> list[DeploymentStatus]:
    """One row per deployment that is live or desired. Without a plan, sync is Unknown."""
    by_deployment: dict[str, list[LiveApp]] = {}
    for app in live.managed(environment).values():
        by_deployment.setdefault((app.marker or {}).get("deployment", app.name), []).append(app)
    changed = plan.deployments_changed() if plan else set()
    desired = {m.deployment for m in plan.models} if plan else set()
    rows = []
    for name in sorted(set(by_deployment) | desired):
        sync: Sync = "Unknown"
        if plan is not None:
            sync = "OutOfSync" if name in changed or name not in desired else "Synced"
        rows.append(_row(name, sync, by_deployment.get(name, []), live))
    return rows


def _row(name: str, sync: Sync, apps: list[LiveApp], live: LiveState) -> DeploymentStatus:
    router = next((a for a in apps if (a.marker or {}).get("role") == "router"), None)
    if router is None:
        # Versions without a router: an apply that stopped before the switch (say, unschedulable).
        health, message = _health(apps) if apps else ("Missing", "not deployed")
        if health == "Healthy":
            health, message = (
                "Progressing",
                "model versions are running; the router is not deployed",
            )
        versions = [
            VersionStatus(a.name, a.config.get("args", {}).get("version", "?"), 0, a.status)
            for a in apps
        ]
        return DeploymentStatus(name, None, sync, None, health, message, versions)
    config = router_config(router.config)
    targets = config.targets if config else []
    fallback = config.fallback if config else []
    health, message = _health([router, *(live.apps[t.app] for t in targets if t.app in live.apps)])
    missing = [t.app for t in targets if t.app not in live.apps]
    if missing and health != "Degraded":
        health, message = "Degraded", f"router targets missing applications: {', '.join(missing)}"
    rollout = config.rollout if config else None
    if rollout is not None and health != "Degraded":
        if rollout.phase == "aborted":
            health, message = "Degraded", f"rollout to v{rollout.candidate} {rollout.message}"
        elif health == "Healthy":
            weights = ", ".join(f"v{t.version} {t.weight:g}%" for t in targets)
            health, message = (
                "Progressing",
                f"{rollout.strategy} rollout to v{rollout.candidate}: {rollout.phase} ({weights})"
                + (f", {rollout.message}" if rollout.message else ""),
            )
    return DeploymentStatus(
        name=name,
        # With `routing: direct` between rollouts, the serving version owns the route.
        route=router.config.get("route_prefix")
        or next((r for t in targets if t.app in live.apps and (r := live.apps[t.app].route)), None),
        sync=sync,
        revision=config.revision if config else None,
        health=health,
        message=message,
        versions=[
            VersionStatus(
                t.app,
                t.version,
                t.weight,
                live.apps[t.app].status if t.app in live.apps else "MISSING",
                fallback=t in fallback,
            )
            for t in [*targets, *fallback]
        ],
    )

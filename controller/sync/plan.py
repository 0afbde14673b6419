"""The Plan: a pure diff of desired applications against live ones, as a value.

Like a Terraform plan it can be printed, saved as JSON, reviewed, and applied later; `apply`
refuses it when the live state or the revision it was made from has moved since.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field

from controller import __version__
from controller.cluster.live import LiveApp, LiveState
from controller.cluster.render import AppConfig, DesiredState
from controller.errors import Refused
from controller.serving.protocol import MARKER_KEY, ROUTER_DEPLOYMENT
from controller.sync.routes import direct_routes

Effect = Literal["start", "stop", "restart", "scale", "reconfigure"]
# Severity order: an action is as disruptive as its most disruptive change.
_SEVERITY: dict[str, int] = {"reconfigure": 0, "scale": 1, "restart": 2, "start": 3, "stop": 3}

# Deployment options Ray Serve applies in place; anything else redeploys the replicas.
_SCALE_FIELDS = {"num_replicas", "autoscaling_config"}
_RECONFIGURE_FIELDS = {
    "user_config",
    "logging_config",  # Serve: NeedsActorReconfigure
    "max_ongoing_requests",
    "max_queued_requests",
    "max_surge_percent",
    "rolling_update_percentage",
    "graceful_shutdown_wait_loop_s",
    "graceful_shutdown_timeout_s",
    "health_check_period_s",
    "health_check_timeout_s",
}
# Bookkeeping that must not count as a difference: the revision changes on every apply; the pin
# key is the applier's own (a controller's, or none for `serveops apply`), written with any
# change but never a change by itself.
_IGNORED_ROUTER_KEYS = ("revision", "pin_keys")


class FieldChange(BaseModel):
    path: str = Field(description="Dotted path in the Serve application config.")
    old: Any = None
    new: Any = None
    effect: Effect


class Action(BaseModel):
    op: Literal["create", "update", "delete", "orphan"] = Field(
        description="`orphan`: managed by serveops but gone from Git; kept unless --prune."
    )
    app: str
    deployment: str
    role: str
    effect: Effect
    changes: list[FieldChange] = Field(default_factory=list)


class Source(BaseModel):
    repo: str
    rev: str
    commit: str


class ModelRef(BaseModel):
    deployment: str
    uri: str
    version: str


class RolloutPlan(BaseModel):
    """What the controller will do for a deployment whose strategy is progressive: the path
    from the version serving now to the new one, of which the plan's actions are the start."""

    deployment: str
    strategy: str
    stable: str = Field(description="The version serving now.")
    candidate: str = Field(description="The version Git asks for.")
    steps: list[str] = Field(description="The path, one entry per step, in words.")
    analysis: str | None = Field(None, description="What each step is held to, if analysed.")


class Plan(BaseModel):
    format: Literal[1] = 1
    serveops_version: str = __version__
    created_at: str = Field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())
    environment: str
    address: str
    source: Source
    live_fingerprint: str = Field(description="Hash of the live config the plan was made from.")
    prune: bool = False
    models: list[ModelRef]
    actions: list[Action]
    desired: list[dict[str, Any]] = Field(
        description="Every managed application of the environment after the apply."
    )
    rollouts: list[RolloutPlan] = Field(
        default_factory=list,
        description="Deployments the controller moves progressively: the actions are their "
        "first step (the candidate started beside the stable version, with no traffic).",
    )

    @property
    def changes(self) -> list[Action]:
        return [a for a in self.actions if a.op != "orphan"]

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def deployments_changed(self) -> set[str]:
        return {a.deployment for a in self.changes}


def comparable(app: AppConfig) -> AppConfig:
    """An app config without the bookkeeping that does not describe what serves. Shares what
    it does not change with `app` (no deep copy: a pass compares thousands): read it only."""
    deployments = app.get("deployments") or []
    if not any(_bookkept(dep) for dep in deployments):
        return app
    out = dict(app)
    out["deployments"] = [
        {
            **dep,
            "user_config": {
                k: v for k, v in dep["user_config"].items() if k not in _IGNORED_ROUTER_KEYS
            },
        }
        if _bookkept(dep)
        else dep
        for dep in deployments
    ]
    return out


def _bookkept(dep: dict[str, Any]) -> bool:
    config = dep.get("user_config")
    return (
        dep.get("name") == ROUTER_DEPLOYMENT
        and isinstance(config, dict)
        and any(key in config for key in _IGNORED_ROUTER_KEYS)
    )


def _effect_of(path: tuple[str, ...]) -> Effect:
    if len(path) >= 2 and path[0].startswith("deployments["):
        if path[1] in _SCALE_FIELDS:
            return "scale"
        if path[1] in _RECONFIGURE_FIELDS:
            return "reconfigure"
    return "restart"


def _flatten(app: AppConfig) -> dict[tuple[str, ...], Any]:
    """Leaf values by path; deployments are keyed by name so their order never matters."""
    out: dict[tuple[str, ...], Any] = {}

    def walk(value: Any, path: tuple[str, ...]) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(v, (*path, str(k)))
        else:
            out[path] = value

    for key, value in app.items():
        if key == "deployments":
            for dep in value or []:
                rest = {k: v for k, v in dep.items() if k != "name"}
                walk(rest, (f"deployments[{dep.get('name')}]",))
        elif key != "name":
            walk(value, (key,))
    return out


def diff_app(old: AppConfig, new: AppConfig) -> list[FieldChange]:
    """Field-level changes from `old` to `new`, each with what it does to running replicas."""
    old, new = comparable(old), comparable(new)
    if old == new:  # the common case, compared in C
        return []
    a, b = _flatten(old), _flatten(new)
    changes = []
    for path in sorted(set(a) | set(b)):
        if a.get(path) != b.get(path):
            changes.append(
                FieldChange(
                    path=".".join(path), old=a.get(path), new=b.get(path), effect=_effect_of(path)
                )
            )
    return changes


def _worst(changes: list[FieldChange]) -> Effect:
    return max((c.effect for c in changes), key=lambda e: _SEVERITY[e])


def make_plan(
    desired: DesiredState,
    live: LiveState,
    *,
    source: Source,
    address: str,
    prune: bool = False,
) -> Plan:
    """Diff desired against live for one environment. Pure: no I/O, same inputs, same plan."""
    desired = direct_routes(desired)  # `routing: direct` deployments between rollouts
    env = desired.environment
    managed = live.managed(env)
    _check_conflicts(desired, live)
    actions: list[Action] = []
    desired_names: set[str] = set()
    for dep in desired.deployments.values():
        for app in dep.apps:
            name = app["name"]
            desired_names.add(name)
            role = app["args"][MARKER_KEY]["role"]
            if name not in managed:
                actions.append(
                    Action(op="create", app=name, deployment=dep.name, role=role, effect="start")
                )
                continue
            changes = diff_app(managed[name].config, app)
            if changes:
                actions.append(
                    Action(
                        op="update",
                        app=name,
                        deployment=dep.name,
                        role=role,
                        effect=_worst(changes),
                        changes=changes,
                    )
                )
    kept: list[AppConfig] = []
    for name, live_app in sorted(managed.items()):
        if name in desired_names:
            continue
        marker = live_app.marker or {}
        deployment = marker.get("deployment", name)
        # Old versions of a deployment still in Git are always ours to remove; a deployment gone
        # from Git is removed only on request, so an emptied folder never wipes an environment.
        if deployment in desired.deployments or prune:
            actions.append(
                Action(
                    op="delete",
                    app=name,
                    deployment=deployment,
                    role=marker.get("role", "?"),
                    effect="stop",
                )
            )
        else:
            actions.append(
                Action(
                    op="orphan",
                    app=name,
                    deployment=deployment,
                    role=marker.get("role", "?"),
                    effect="stop",
                )
            )
            kept.append(live_app.config)
    changed = {a.deployment for a in actions if a.op != "orphan"}
    stamped = [_stamp_revision(app, managed, source.commit, changed) for app in desired.apps]
    return Plan(
        environment=env,
        address=address,
        source=source,
        live_fingerprint=live.fingerprint(),
        prune=prune,
        models=[
            ModelRef(deployment=d.name, uri=d.model.uri, version=d.model.version)
            for d in desired.deployments.values()
        ],
        actions=actions,
        desired=stamped + kept,
    )


def _stamp_revision(
    app: AppConfig, managed: dict[str, LiveApp], commit: str, changed: set[str]
) -> AppConfig:
    """Routers record the commit that last changed their deployment; status reports it."""
    if app["args"][MARKER_KEY]["role"] != "router":
        return app
    deployment = app["args"][MARKER_KEY]["deployment"]
    if deployment in changed or app["name"] not in managed:
        revision: str | None = commit
    else:
        live_user_config = managed[app["name"]].config["deployments"][0].get("user_config") or {}
        revision = live_user_config.get("revision")
    # Copy only what changes: the rest is shared with the rendered desired state.
    router, *rest = app["deployments"]
    stamped = {**router, "user_config": {**router["user_config"], "revision": revision}}
    return {**app, "deployments": [stamped, *rest]}


def _check_conflicts(desired: DesiredState, live: LiveState) -> None:
    """Refuse to take over an application or a route that someone else owns."""
    env = desired.environment
    foreign_routes = {a.route: a.name for a in live.others(env) if a.route}
    problems = []
    for app in desired.apps:
        existing = live.apps.get(app["name"])
        if existing is not None and not existing.managed_in(env) and not existing.deleting:
            owner = (
                f"serveops environment {existing.marker.get('environment')!r}"
                if existing.marker
                else "someone else (it has no serveops marker)"
            )
            problems.append(
                f"application {app['name']!r} already exists on the cluster, owned by {owner}"
            )
        route = app.get("route_prefix")
        if route and route in foreign_routes and foreign_routes[route] != app["name"]:
            problems.append(
                f"route {route!r} is already served by application {foreign_routes[route]!r}, which serveops does not manage here"
            )
    if problems:
        raise Refused("refusing to plan:\n" + "\n".join(f"  {p}" for p in problems))

"""Who owns a deployment's route: its router, or, with `routing: direct` between rollouts, the
serving version's own application.

A steady router forwards every request to one version, a hop that costs a fifth to a quarter
of the path's saturation throughput and about 5 ms at p50 on 2 cores (docs/benchmarks.md).
With `routing: direct` the version application owns the route while it serves alone; the
router stays deployed without a route and takes it back for any change (a new version, a
rollout). Each move is part of one Serve config write, measured to fail no request
(bench/route_handover.py).

Two rules, both pure:
- `direct_routes` (planning): the desired state of a direct deployment whose router sends
  everything to one version gives that version the route.
- `switch_routes` (applying): the switch phase never hands a route to a version application;
  the router keeps or takes it until the clean phase, which runs once every new version is
  RUNNING. So a route only ever moves to an application that answers.
"""

from __future__ import annotations

import dataclasses

from controller.cluster.live import LiveState
from controller.cluster.render import AppConfig, DesiredState
from controller.serving.protocol import MARKER_KEY, router_config


def role(app: AppConfig) -> str:
    """`router` or `version`: what serveops rendered an application as ("" if not ours)."""
    return str((app.get("args") or {}).get(MARKER_KEY, {}).get("role", ""))


def steady_target(router: AppConfig) -> str | None:
    """The one application a router sends all of its traffic to, with nothing else to do (no
    rollout, A/B test, mirrors, fallback or recording); None otherwise."""
    config = router_config(router)
    if config is None or config.rollout or config.ab or config.shadow or config.fallback:
        return None
    if config.recording or len(config.targets) != 1 or config.targets[0].weight != 100:
        return None
    return config.targets[0].app


def direct_routes(desired: DesiredState) -> DesiredState:
    """`desired` with the route of each steady direct deployment on its version application."""
    out = DesiredState(desired.environment)
    for name, dep in desired.deployments.items():
        out.deployments[name] = dep
        if dep.routing != "direct":
            continue
        [router] = [a for a in dep.apps if role(a) == "router"]
        target, route = steady_target(router), router.get("route_prefix")
        if target is None or not route or target not in {a["name"] for a in dep.apps}:
            continue
        apps = [
            {**a, "route_prefix": route if a["name"] == target else None}
            if a is router or a["name"] == target
            else a
            for a in dep.apps
        ]
        out.deployments[name] = dataclasses.replace(dep, apps=apps)
    return out


def switch_routes(switch: dict[str, AppConfig], live: LiveState) -> None:
    """Route owners for the switch phase, in place: a version application that does not own
    its route in `live` yet leaves it to its router until the clean phase; any other
    application in `switch` still holding a route that another one now owns gives it up
    (an old version that served directly, when its router takes the route back)."""
    for name, app in list(switch.items()):
        route = app.get("route_prefix")
        if role(app) != "version" or not route:
            continue
        if _holds(live, name, route):
            continue  # it answers on the route already
        deployment = app["args"][MARKER_KEY].get("deployment")
        [router] = [
            n
            for n, a in switch.items()
            if role(a) == "router" and a["args"][MARKER_KEY].get("deployment") == deployment
        ]
        switch[name] = {**app, "route_prefix": None}
        switch[router] = {**switch[router], "route_prefix": route}
    # A route taken by an application that did not hold it: whoever held it lets it go.
    taken = {
        app["route_prefix"]: name
        for name, app in switch.items()
        if app.get("route_prefix") and not _holds(live, name, app["route_prefix"])
    }
    for name, app in list(switch.items()):
        route = app.get("route_prefix")
        if route in taken and taken[route] != name:
            switch[name] = {**app, "route_prefix": None}


def _holds(live: LiveState, name: str, route: str) -> bool:
    app = live.apps.get(name)
    return app is not None and app.route == route

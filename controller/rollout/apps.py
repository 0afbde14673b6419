"""A rollout's state as Serve applications: the stable version as it runs, the candidate
beside it while it takes traffic, and a router holding the weights and mirror share that
`state.traffic` gives for the phase.

A blue-green or shadow candidate that only receives a mirrored share of the requests previews
at the size that share needs (`preview_size`) and is scaled to its full size before the switch
(`state.scaling`): a preview of 25% of the traffic does not hold a whole second replica set.
"""

from __future__ import annotations

import copy
import dataclasses
import math

from controller.cluster.live import LiveApp, LiveState
from controller.cluster.render import AppConfig, DesiredDeployment, render_router_app
from controller.rollout.state import RolloutState, mirror_percent, traffic
from controller.serving.protocol import MARKER_KEY, MODEL_DEPLOYMENT, RolloutNote, router_config
from controller.serving.protocol import Target as RouteTarget
from controller.spec.models import ModelDeployment


def rollout_apps(
    dep: DesiredDeployment,
    spec: ModelDeployment,
    live: LiveState,
    state: RolloutState,
    *,
    with_candidate: bool = True,
) -> list[AppConfig] | None:
    """The applications that run `state`; None once the rollout no longer shapes them (completed)."""
    t = traffic(spec.spec.rollout, state)
    if t is None:
        return None
    if not with_candidate:
        t = dataclasses.replace(t, keep_candidate=False)
    stable_app = live.apps[state.stable_app].config
    candidate_app = candidate_config(dep, spec, state)
    stable = RouteTarget(app=state.stable_app, version=state.stable_version, weight=t.stable_weight)
    candidate = RouteTarget(
        app=state.candidate_app, version=state.candidate_version, weight=t.candidate_weight
    )
    shadow = [candidate.model_copy(update={"weight": t.mirror_percent})] if t.mirror_percent else []
    note = RolloutNote(
        strategy=state.strategy,
        phase=state.phase,
        candidate=state.candidate_version,
        # Only what changes rarely: a message with live figures would reconfigure every pass.
        message=state.message if state.phase == "aborted" else ("paused" if state.paused else ""),
    )
    targets = [stable, candidate] if t.keep_candidate else [stable]
    desired_router = next(a for a in dep.apps if a["args"][MARKER_KEY]["role"] == "router")
    desired_router_config = router_config(desired_router)
    router = render_router_app(
        spec,
        targets,
        shadow=shadow,
        rollout=note,
        runtime_env=desired_router.get("runtime_env"),  # where the serving code comes from
        pin_key=next(iter(desired_router_config.pin_keys), None) if desired_router_config else None,
    )
    apps = [stable_app, router]
    if t.keep_candidate:
        apps.insert(1, candidate_app)
    return apps


def preview_size(spec: ModelDeployment) -> int | None:
    """Replicas a previewing candidate runs: enough for its mirrored share, at least one. None
    when that is its full size (autoscaled, a canary, every request mirrored)."""
    rollout, serving = spec.spec.rollout, spec.spec
    if rollout.strategy not in ("blue_green", "shadow") or serving.autoscaling is not None:
        return None
    full = serving.replicas or 1
    size = max(1, math.ceil(full * mirror_percent(rollout) / 100))
    return size if size < full else None


def candidate_config(
    dep: DesiredDeployment, spec: ModelDeployment, state: RolloutState
) -> AppConfig:
    """The candidate's application for `state`: at its preview size until it is scaled for the
    switch, as Git has it otherwise."""
    app = next(a for a in dep.apps if a["args"][MARKER_KEY]["role"] != "router")
    size = preview_size(spec)
    if size is None or state.scaling or state.phase not in ("loading", "preview"):
        return app
    sized = copy.deepcopy(app)
    for deployment in sized["deployments"]:
        if deployment["name"] == MODEL_DEPLOYMENT:
            deployment["num_replicas"] = size
    return sized


def at_full_size(spec: ModelDeployment, app: LiveApp | None) -> bool | None:
    """Does a candidate that previewed smaller run at its full size now? None: it never
    previews smaller. True once Serve runs the full-size config and every replica of it."""
    if preview_size(spec) is None:
        return None
    if app is None or app.status != "RUNNING":
        return False
    full = spec.spec.replicas or 1
    sizes = [
        d.get("num_replicas")
        for d in app.config.get("deployments", [])
        if d.get("name") == MODEL_DEPLOYMENT
    ]
    if sizes != [full]:
        return False
    live = app.deployments.get(MODEL_DEPLOYMENT)
    if live is None or not live.replica_states:  # not reported: the app's status says it
        return True
    return live.replica_states.get("RUNNING", 0) >= full

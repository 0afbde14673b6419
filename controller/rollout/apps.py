"""A rollout's state as Serve applications: the stable version as it runs, the candidate
beside it while it takes traffic, and a router holding the weights and mirror share that
`state.traffic` gives for the phase."""

from __future__ import annotations

import dataclasses

from controller.cluster.live import LiveState
from controller.cluster.render import AppConfig, DesiredDeployment, render_router_app
from controller.rollout.state import RolloutState, traffic
from controller.serving.protocol import MARKER_KEY, RolloutNote, router_config
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
    candidate_app = next(a for a in dep.apps if a["args"][MARKER_KEY]["role"] != "router")
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

"""A rollout before it starts: what `serveops plan` shows for progressive deployments.

The first step is the engine's own (`progress.advance` on no stored state: the candidate
started beside the stable version, with no traffic); the rest of the path is read from the
deployment's `rollout` block.
"""

from __future__ import annotations

import datetime as dt

from controller.cluster.live import LiveState
from controller.cluster.render import DesiredState
from controller.rollout.apps import preview_size
from controller.rollout.progress import MetricsOnce, advance
from controller.rollout.state import DEFAULT_LIMITS, RolloutState
from controller.spec.models import ModelDeployment
from controller.sync.plan import RolloutPlan


def first_steps(
    desired: DesiredState, specs: dict[str, ModelDeployment], live: LiveState, commit: str
) -> tuple[DesiredState, list[RolloutPlan]]:
    """Git's desired state shaped as the controller's first pass would, and each rollout's
    path."""
    shaped, started = advance(
        desired,
        specs,
        live,
        {},
        [],
        MetricsOnce(None),
        commit=commit,
        now=dt.datetime.now(dt.UTC),
        limits=DEFAULT_LIMITS,
    )
    latest = {u.state.deployment: u.state for u in started.updates}  # start, then its first wait
    paths = [path(state, specs[name]) for name, state in latest.items()]
    return shaped, paths


def path(state: RolloutState, spec: ModelDeployment) -> RolloutPlan:
    rollout, size = spec.spec.rollout, preview_size(spec)
    stable, candidate = f"v{state.stable_version}", f"v{state.candidate_version}"
    steps = [f"start {candidate} beside {stable}, no traffic, until it runs"]
    if rollout.hooks.pre_rollout:
        steps.append("pre-rollout hooks: " + ", ".join(h.name for h in rollout.hooks.pre_rollout))
    if state.strategy == "canary":
        for i, step in enumerate(rollout.steps):
            hold = "until `serveops promote`" if step.pause == "indefinite" else f"{step.pause}"
            analysed = " and a passing analysis" if rollout.analysis else ""
            steps.append(f"step {i + 1}: {step.weight:g}% to {candidate}, held {hold}{analysed}")
        steps.append(f"100% to {candidate}")
    else:
        share = f"{rollout.shadow_percent or 100:g}% of requests mirrored"
        gate = (
            "a passing analysis"
            if rollout.analysis
            else ("at once" if state.strategy == "blue_green" else "`serveops promote`")
        )
        sized = "" if size is None else f" at {size} of {spec.spec.replicas} replicas"
        steps.append(f"preview: {share} to {candidate}{sized}, no client traffic, until {gate}")
        if size is not None:
            steps.append(f"scale {candidate} to {spec.spec.replicas} replicas, until they run")
        steps.append(
            f"switch: 100% to {candidate} in one write; {stable} kept {rollout.scale_down_delay}"
        )
    if rollout.hooks.post_rollout:
        steps.append("post-rollout hooks: " + ", ".join(h.name for h in rollout.hooks.post_rollout))
    steps.append(f"{stable} removed; a failed analysis or hook at any step: back to {stable}")
    analysis = None
    if rollout.analysis is not None:
        a = rollout.analysis
        held = [f"every {a.interval}", f"at least {a.min_requests} candidate requests"]
        held.append(f"error rate at most +{a.max_error_rate_increase} pt")
        if a.max_p95_latency_ms is not None:
            held.append(f"p95 at most {a.max_p95_latency_ms} ms")
        if a.max_p95_regression_pct is not None:
            held.append(f"p95 at most {a.max_p95_regression_pct}% above {stable}'s")
        analysis = ", ".join(held)
    return RolloutPlan(
        deployment=state.deployment,
        strategy=state.strategy,
        stable=stable,
        candidate=candidate,
        steps=steps,
        analysis=analysis,
    )

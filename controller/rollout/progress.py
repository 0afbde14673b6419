"""Progressive delivery in a controller pass: the admitted desired state, shaped by rollouts.

`advance` takes the desired state the gate admitted (Git's steady state: the new version at
100%) and, for every deployment whose strategy is canary, blue_green or shadow and whose model
version changes, replaces it with what the rollout's state says: the stable version kept as it
runs now, the candidate next to it, and the router's weights (and mirroring) from
`engine.traffic`. The rollout engine (`engine.decide`) moves that state one decision per pass,
with operator commands folded in, hooks run when due and, when a window is complete, an
analysis of the router's metrics (`analysis`, `router_metrics`).

The pass persists the new rollout states *before* it applies the plan they rendered, so a
controller killed in between converges to the same weights at its next pass. The metrics
baseline of the current analysis window is persisted with them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass, field

from controller.cluster.live import LiveApp, LiveState
from controller.cluster.render import (
    AppConfig,
    DesiredDeployment,
    DesiredState,
    version_app_name,
)
from controller.errors import ServeopsError
from controller.gitops.state import RolloutCommand, RolloutUpdate, StateStore, StoredRollout
from controller.gitops.telemetry import METRICS
from controller.rollout.analysis import AnalysisResult, analyse
from controller.rollout.apps import at_full_size, candidate_config, rollout_apps
from controller.rollout.engine import analysis_due, decide, hooks_due
from controller.rollout.headroom import no_room
from controller.rollout.hooks import HookContext, HookRunner
from controller.rollout.router_metrics import MetricsSource, Snapshot, from_json, to_json, window
from controller.rollout.state import (
    PROGRESSIVE,
    Decision,
    HookResult,
    HookStage,
    Limits,
    Readiness,
    RolloutState,
    start,
    started_message,
    with_command,
)
from controller.rollout.waiting import waiting_for
from controller.serving.protocol import RouterConfig, router_config
from controller.serving.protocol import Target as RouteTarget
from controller.spec.models import ModelDeployment, Rollout
from controller.sync.plan import comparable

log = logging.getLogger("serveops.controller")


@dataclass
class RolloutPass:
    """What the rollout step of a pass decided; `save` persists it (before applying)."""

    environment: str
    updates: list[RolloutUpdate] = field(default_factory=list)
    starting: set[str] = field(default_factory=set)  # candidates apply must not wait for
    requeue_after: float = float("inf")
    aborted: list[RolloutState] = field(default_factory=list)  # aborted by this pass
    # Aborted earlier, still holding their deployment on the stable version: that desired state
    # is not tried again until a commit changes the deployment (or `serveops sync --retry`).
    held: list[RolloutState] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)  # what changed, for the pass's message
    consumed: list[int] = field(default_factory=list)  # operator commands read this pass
    live: LiveState | None = None  # what Serve ran when the pass began (for health)

    def save(self, store: StateStore) -> None:
        store.save_rollouts(self.environment, self.updates, self.consumed)


def desired_key(dep: DesiredDeployment) -> str:
    """Fingerprint of a deployment's desired state as Git renders it: a rollout belongs to it,
    and an aborted one is not tried again until it changes (a new commit that changes it)."""
    blob = json.dumps([comparable(a) for a in dep.apps], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _router(live: LiveState, environment: str, deployment: str) -> RouterConfig | None:
    app = live.managed(environment).get(deployment)
    if app is None or (app.marker or {}).get("role") != "router":
        return None
    return router_config(app.config)


def _stable(router: RouterConfig | None, live: LiveState) -> RouteTarget | None:
    """The version serving now: the live router's heaviest target that is RUNNING."""
    if router is None:
        return None
    running = [
        t for t in router.targets if t.app in live.apps and live.apps[t.app].status == "RUNNING"
    ]
    return max(running, key=lambda t: t.weight, default=None)


def readiness(app: LiveApp | None) -> tuple[Readiness, str]:
    if app is None:
        return "starting", ""
    if app.problem:
        return "failed", app.problem
    if app.status == "RUNNING":
        return "ready", ""
    return "starting", app.status


@dataclass(frozen=True)
class HookSetup:
    """How a pass runs a rollout's hooks: the runner, and where Serve's HTTP proxy is."""

    runner: HookRunner | None
    serve_url: str

    def run(self, stage: HookStage, spec: ModelDeployment, state: RolloutState) -> HookResult:
        if self.runner is None:
            return HookResult(stage, False, "this controller has no hook runner")
        ctx = HookContext(
            environment=spec.metadata.environment,
            deployment=state.deployment,
            route=spec.spec.route,
            candidate_version=state.candidate_version,
            stable_version=state.stable_version,
            commit=state.commit,
            serve_url=self.serve_url,
        )
        return self.runner.run(stage, getattr(spec.spec.rollout.hooks, stage), ctx)


class MetricsOnce:
    """One scrape per pass, at most, and only when a rollout needs it."""

    def __init__(self, source: MetricsSource | None) -> None:
        self.source = source
        self._snapshot: Snapshot | None = None
        self.error: str | None = None

    def snapshot(self) -> Snapshot | None:
        if self.source is None:
            self.error = "no metrics source"
        elif self._snapshot is None and self.error is None:
            try:
                self._snapshot = self.source.scrape()
            except ServeopsError as err:
                self.error = err.message
                log.warning("cannot read router metrics: %s", err.message)
        return self._snapshot


def advance(
    desired: DesiredState,
    specs: dict[str, ModelDeployment],
    live: LiveState,
    stored: dict[str, StoredRollout],
    commands: list[RolloutCommand],
    metrics: MetricsOnce,
    *,
    commit: str,
    now: dt.datetime,
    limits: Limits,
    retry: bool = False,
    hooks: HookSetup | None = None,
) -> tuple[DesiredState, RolloutPass]:
    """One decision per progressive deployment; returns the shaped desired state. `retry`
    starts an aborted rollout of the same desired state again."""
    env = desired.environment
    result = RolloutPass(env)
    shaped = DesiredState(env)
    for name, dep in desired.deployments.items():
        spec = specs[name]
        mine = [c for c in commands if c.deployment == name]
        step = _DeploymentStep(dep, spec, live, stored.get(name), commit, now, limits, result)
        apps = _one(step, mine, metrics, retry, hooks or HookSetup(None, ""))
        shaped.deployments[name] = dataclasses.replace(dep, apps=apps) if apps else dep
    # Every pending command is consumed: acted on by a rollout in flight, or without effect
    # (the rollout ended before the controller saw it; `serveops promote` & co. say so).
    result.consumed = [c.id for c in commands]
    return shaped, result


@dataclass
class _DeploymentStep:
    """One deployment's rollout decision in one pass: the pieces `advance` hands it."""

    dep: DesiredDeployment
    spec: ModelDeployment
    live: LiveState
    stored: StoredRollout | None
    commit: str
    now: dt.datetime
    limits: Limits
    result: RolloutPass

    @property
    def rollout(self) -> Rollout:
        return self.spec.spec.rollout

    def record(self, decision: Decision, baseline: str | None) -> None:
        result = self.result
        result.updates.append(
            RolloutUpdate(decision.state, baseline, decision.action, decision.reason)
        )
        if decision.action != "wait":
            result.messages.append(f"{self.dep.name}: {decision.reason}")
        if decision.action == "abort":
            result.aborted.append(decision.state)
        result.requeue_after = min(result.requeue_after, decision.requeue_after)

    def end(self, state: RolloutState, why: str) -> None:
        ended = _ended(state, self.now, why)
        self.record(Decision("complete", ended, ended.message, float("inf")), None)

    def begin(self, state: RolloutState | None, retry: bool) -> RolloutState | None:
        """The rollout this pass drives: the stored one, or a new one when Git wants a new
        version of a deployment that serves (None: Git's steady state, no rollout)."""
        key = desired_key(self.dep)
        if state is not None and state.key == key and not (retry and state.phase == "aborted"):
            return state
        router = _router(self.live, self.result.environment, self.dep.name)
        stable = _stable(router, self.live)
        if state is not None and state.active and state.stable_app in self.live.apps:
            stable = RouteTarget(app=state.stable_app, version=state.stable_version, weight=100)
        candidate_app = version_app_name(self.dep.name, self.dep.model.version)
        if stable is None or stable.app == candidate_app:
            # Nothing serves yet (first deploy), or the version does not change: Git's state.
            if state is not None and state.active:
                self.end(state, "superseded by a new desired state")
            return None
        started = start(
            self.rollout.strategy,  # type: ignore[arg-type]
            self.dep.name,
            stable=(stable.app, stable.version),
            candidate=(candidate_app, self.dep.model.version),
            key=key,
            commit=self.commit,
            now=self.now,
        )
        self.result.messages.append(
            f"{self.dep.name}: {self.rollout.strategy} rollout from {stable.app} to {candidate_app}"
        )
        self.result.updates.append(RolloutUpdate(started, None, "start", started.message))
        return started

    def hold_for_room(self, state: RolloutState, metrics: MetricsOnce) -> Decision | None:
        """A rollout about to start its candidate waits, and says so, while the candidate's
        replicas would not fit in the cluster's CPUs next to what runs (Ray would leave them
        pending), or while a queue stands in the router in front of the stable version (the
        start's load would be shed: headroom.py; `serveops promote` starts it anyway). None:
        go on (it fits, it runs already, or what it needs is unknown)."""
        if state.phase != "loading" or state.candidate_app in self.live.apps or state.abort:
            return None
        candidate = candidate_config(self.dep, self.spec, state)  # at its preview size, if any
        says = self._no_room(state, candidate, metrics, "starts")
        return self._held(state, says) if says else None

    def hold_scale_for_room(
        self, decision: Decision, metrics: MetricsOnce, held_since: dt.datetime | None
    ) -> Decision | None:
        """A candidate that previewed smaller is scaled to its full size for the switch only
        as a candidate starts: when its new replicas fit and no queue stands in front of the
        stable version (their starts are the same load). Until then it keeps previewing, and
        says why (held since `held_since`, or from now); the scaling's progress deadline has
        not begun. None: scale."""
        if decision.action != "scale":
            return None
        full = candidate_config(self.dep, self.spec, decision.state)  # scaling: full size
        unscaled = dataclasses.replace(decision.state, scaling_since=None, held_since=held_since)
        says = self._no_room(unscaled, full, metrics, "is scaled to full size")
        return self._held(unscaled, says) if says else None

    def _no_room(
        self, state: RolloutState, config: AppConfig, metrics: MetricsOnce, doing: str
    ) -> str:
        """What the candidate's replicas of `config` wait for before it `doing`: "" when
        nothing (`no_room`)."""
        return no_room(
            state, config, self.live, metrics.snapshot(), self.spec.spec.request_timeout_s, doing
        )

    def _held(self, state: RolloutState, says: str) -> Decision:
        """Held for room: in loading, the candidate not started, or in a preview, not yet
        scaled for the switch; since the first pass that held it. `says` the same pass to
        pass, so the state is written only when it changes."""
        held = dataclasses.replace(state, held_since=state.held_since or self.now, message=says)
        waiting, _ = waiting_for(self.rollout, held, self.limits)
        held = dataclasses.replace(held, waiting=waiting, until=None)
        return Decision("wait", held, f"waiting for {waiting}", self.limits.held_poll_s)

    def analyse(
        self, state: RolloutState, baseline: str | None, metrics: MetricsOnce
    ) -> tuple[RolloutState, AnalysisResult | None, str | None]:
        """When a window is complete: the analysis of its router figures, and the baseline of
        the next window. Unreadable metrics hold the step and say why."""
        if not (
            state.active and self.rollout.analysis and analysis_due(self.rollout, state, self.now)
        ):
            return state, None, baseline
        snap = metrics.snapshot()
        if snap is None:
            why = f"analysis waits: cannot read router metrics: {metrics.error}"
            return dataclasses.replace(state, message=why), None, baseline
        if baseline is None:
            # No baseline (metrics were unreachable when the window began): start it now.
            return dataclasses.replace(state, window_started_at=self.now), None, to_json(snap)
        before = from_json(baseline)
        analysis = analyse(
            self.rollout.analysis,
            window(before, snap, self.dep.name, state.candidate_version),
            window(before, snap, self.dep.name, state.stable_version),
        )
        METRICS.record_analysis(self.result.environment, self.dep.name, analysis.verdict)
        return state, analysis, baseline


def _one(
    step: _DeploymentStep,
    commands: list[RolloutCommand],
    metrics: MetricsOnce,
    retry: bool,
    hooks: HookSetup,
) -> list[AppConfig] | None:
    """The apps of one deployment under its rollout, or None for Git's steady state."""
    stored_state = step.stored.state if step.stored else None
    baseline = step.stored.baseline_json if step.stored else None
    if step.rollout.strategy not in PROGRESSIVE:
        if stored_state is not None and stored_state.active:
            step.end(
                stored_state,
                f"superseded: the deployment's strategy is now {step.rollout.strategy}",
            )
        return None
    began = step.begin(stored_state, retry)
    if began is None:
        return None
    state = began
    if began is not stored_state:
        baseline = None
    for c in commands:
        state = with_command(state, c.command, c.note)
    if state.phase == "completed":
        return None
    if state.stable_app not in step.live.apps:
        # The stable version is gone (deleted by hand?): nothing to hold on to.
        if state.active:
            step.end(state, f"{state.stable_app} is no longer running")
        return None

    held = step.hold_for_room(state, metrics)
    if held is not None:
        if held.state != stored_state:
            step.record(held, baseline)
        step.result.requeue_after = min(step.result.requeue_after, held.requeue_after)
        return rollout_apps(step.dep, step.spec, step.live, held.state, with_candidate=False)
    held_since = state.held_since
    if held_since is not None and state.phase == "loading":  # it fits: the candidate starts
        state = dataclasses.replace(  # now, its progress deadline from now
            state, held_since=None, phase_started_at=step.now, message=started_message(state)
        )
    elif held_since is not None:  # a preview held before its scaling: asked again below
        state = dataclasses.replace(state, held_since=None)
    state, analysis, new_baseline = step.analyse(state, baseline, metrics)
    ready, why = readiness(step.live.apps.get(state.candidate_app))
    stage = hooks_due(step.rollout, state, ready) if ready != "failed" else None
    ran = hooks.run(stage, step.spec, state) if stage is not None else None
    decision = decide(
        step.rollout,
        state,
        step.now,
        candidate=ready,
        candidate_message=why,
        analysis=analysis,
        limits=step.limits,
        hooks=ran,
        full_size=at_full_size(step.spec, step.live.apps.get(state.candidate_app)),
    )
    decision = step.hold_scale_for_room(decision, metrics, held_since) or decision
    if ran is not None and ran.passed and decision.action == "wait":  # else its reason says so
        step.result.messages.append(f"{step.dep.name}: {ran.label} passed: {ran.summary}")
    if decision.reset_window:
        snap = metrics.snapshot()
        new_baseline = to_json(snap) if snap is not None else None
    if decision.state != stored_state or new_baseline != baseline:
        step.record(decision, new_baseline)
    if decision.state.phase == "loading":
        step.result.starting.add(decision.state.candidate_app)
    if decision.state.phase == "aborted" and decision.action != "abort":
        step.result.held.append(decision.state)
    return rollout_apps(step.dep, step.spec, step.live, decision.state)


def _ended(state: RolloutState, now: dt.datetime, why: str) -> RolloutState:
    return dataclasses.replace(state, phase="completed", ended_at=now, message=why)

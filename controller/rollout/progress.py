"""Progressive delivery in a controller pass: Git's desired state, shaped by rollouts in flight.

`plan_with_rollouts` is `reconcile.plan_revision` plus one step: for every deployment whose
strategy is canary, blue_green or shadow and whose model version changes, the desired state is
not Git's steady state (the new version at 100%) but what the rollout's state says: the stable
version kept as it runs now, the candidate next to it, and the router's weights (and mirroring)
from `rollout.traffic`. The rollout engine (`controller.rollout.engine.decide`) moves that state one
decision per pass, with operator commands folded in and, when a window is complete, an analysis
of the router's metrics (`controller.rollout.analysis`, `controller.rollout.router_metrics`).

The pass persists the new rollout states *before* it applies the plan they rendered, so a
controller killed in between converges to the same weights at its next pass. The metrics
baseline of the current analysis window is persisted with them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field

from controller.cluster.live import LiveApp, LiveState
from controller.cluster.render import (
    AppConfig,
    DesiredDeployment,
    DesiredState,
    RenderSettings,
    render_environment,
    render_router_app,
    version_app_name,
)
from controller.cluster.serve_api import ServeAPI
from controller.cluster.serving_code import INSTALLED, ServingCode
from controller.errors import ServeopsError
from controller.gitops.state import RolloutCommand, RolloutUpdate, StateStore, StoredRollout
from controller.gitops.telemetry import METRICS
from controller.registry.mlflow import Registry
from controller.rollout.analysis import AnalysisResult, analyse
from controller.rollout.engine import (
    PROGRESSIVE,
    Decision,
    HookResult,
    HookStage,
    Limits,
    Readiness,
    RolloutState,
    analysis_due,
    decide,
    hooks_due,
    start,
    traffic,
    with_command,
)
from controller.rollout.hooks import HookContext, HookRunner, serve_http_url
from controller.rollout.router_metrics import MetricsSource, Snapshot, from_json, to_json, window
from controller.serving.protocol import MARKER_KEY, RolloutNote, RouterConfig, router_config
from controller.serving.protocol import Target as RouteTarget
from controller.source.git import read_snapshot
from controller.spec.manifest import Manifest, load_manifests
from controller.spec.models import ModelDeployment
from controller.sync.plan import Plan, Source, comparable, make_plan
from controller.sync.read import Target as Revision

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


class _Metrics:
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


def plan_with_rollouts(
    target: Revision,
    client: ServeAPI,
    registry: Registry,
    store: StateStore,
    *,
    metrics: MetricsSource | None,
    limits: Limits,
    now: dt.datetime,
    prune: bool = False,
    retry: bool = False,
    hooks: HookRunner | None = None,
    serve_url: str | None = None,
    serving_code: ServingCode = INSTALLED,
) -> tuple[Plan, RolloutPass]:
    """`plan_revision`, with rollouts in flight advanced by one decision and rendered. Hooks
    due run with `hooks`, against `serve_url` (default: Serve's proxy next to the dashboard)."""
    commit, manifests = read_manifests(target.repo, target.rev, target.environment)
    settings = RenderSettings(tracking_uri=registry.tracking_uri, serving_code=serving_code)
    desired = render_environment(target.environment, manifests, registry, settings)
    live = client.get()
    specs = {m.name: m.deployment for m in manifests}
    shaped, rollouts = advance(
        desired,
        specs,
        live,
        store.rollouts(target.environment),
        store.pending_rollout_commands(target.environment),
        _Metrics(metrics),
        commit=commit,
        now=now,
        limits=limits,
        retry=retry,
        hooks=HookSetup(hooks, serve_url or serve_http_url(client.address, live.http_options)),
    )
    rollouts.live = live
    source = Source(repo=target.repo, rev=target.rev, commit=commit)
    plan = make_plan(shaped, live, source=source, address=client.address, prune=prune)
    return plan, rollouts


def read_manifests(repo: str, rev: str, environment: str) -> tuple[str, list[Manifest]]:
    """(commit, manifests) of `environment` at `rev`. A commit's files never change, so when
    `rev` is a full sha (the controller passes the branch head's) the parsed manifests are
    reused: a pass on the commit of the last one (nothing to do, the common case) skips reading
    and parsing every file again (~60 ms of a 200-deployment pass, bench/controller_noop.py)."""
    if _FULL_SHA.fullmatch(rev):
        return _manifests_at(str(repo), rev, environment)
    snapshot = read_snapshot(repo, rev)
    return snapshot.commit, load_manifests(snapshot.files, environment)


_FULL_SHA = re.compile(r"[0-9a-f]{40}")


@functools.lru_cache(maxsize=8)
def _manifests_at(repo: str, commit: str, environment: str) -> tuple[str, list[Manifest]]:
    snapshot = read_snapshot(repo, commit)
    return snapshot.commit, load_manifests(snapshot.files, environment)


def advance(
    desired: DesiredState,
    specs: dict[str, ModelDeployment],
    live: LiveState,
    stored: dict[str, StoredRollout],
    commands: list[RolloutCommand],
    metrics: _Metrics,
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
        apps = _one(
            dep,
            spec,
            live,
            stored.get(name),
            mine,
            metrics,
            commit,
            now,
            limits,
            result,
            retry,
            hooks or HookSetup(None, ""),
        )
        shaped.deployments[name] = dataclasses.replace(dep, apps=apps) if apps else dep
    # Every pending command is consumed: acted on by a rollout in flight, or without effect
    # (the rollout ended before the controller saw it; `serveops promote` & co. say so).
    result.consumed = [c.id for c in commands]
    return shaped, result


def _one(
    dep: DesiredDeployment,
    spec: ModelDeployment,
    live: LiveState,
    stored: StoredRollout | None,
    commands: list[RolloutCommand],
    metrics: _Metrics,
    commit: str,
    now: dt.datetime,
    limits: Limits,
    result: RolloutPass,
    retry: bool = False,
    hooks: HookSetup = HookSetup(None, ""),
) -> list[AppConfig] | None:
    """The apps of one deployment under its rollout, or None for Git's steady state."""
    live_env = result.environment
    rollout = spec.spec.rollout
    key = desired_key(dep)
    state = stored.state if stored else None
    baseline = stored.baseline_json if stored else None

    def record(decision: Decision, new_baseline: str | None) -> None:
        result.updates.append(
            RolloutUpdate(decision.state, new_baseline, decision.action, decision.reason)
        )
        if decision.action != "wait":
            result.messages.append(f"{dep.name}: {decision.reason}")
        if decision.action == "abort":
            result.aborted.append(decision.state)
        result.requeue_after = min(result.requeue_after, decision.requeue_after)

    if rollout.strategy not in PROGRESSIVE:
        if state is not None and state.active:
            why = f"superseded: the deployment's strategy is now {rollout.strategy}"
            ended = _ended(state, now, why)
            record(Decision("complete", ended, ended.message, float("inf")), None)
        return None

    if state is None or state.key != key or (retry and state.phase == "aborted"):
        # Git wants something new for this deployment (or a retry): does it start a rollout?
        router = _router(live, live_env, dep.name)
        stable = _stable(router, live)
        if state is not None and state.active and state.stable_app in live.apps:
            stable = RouteTarget(app=state.stable_app, version=state.stable_version, weight=100)
        candidate_app = version_app_name(dep.name, dep.model.version)
        if stable is None or stable.app == candidate_app:
            # Nothing serves yet (first deploy), or the version does not change: Git's state.
            if state is not None and state.active:
                ended = _ended(state, now, "superseded by a new desired state")
                record(Decision("complete", ended, ended.message, float("inf")), None)
            return None
        state = start(
            rollout.strategy,  # type: ignore[arg-type]
            dep.name,
            stable=(stable.app, stable.version),
            candidate=(candidate_app, dep.model.version),
            key=key,
            commit=commit,
            now=now,
        )
        baseline = None
        result.messages.append(
            f"{dep.name}: {rollout.strategy} rollout from {stable.app} to {candidate_app}"
        )
        result.updates.append(RolloutUpdate(state, None, "start", state.message))

    for c in commands:
        state = with_command(state, c.command, c.note)

    if state.phase == "completed":
        return None
    if state.stable_app not in live.apps:
        # The stable version is gone (deleted by hand?): nothing to hold on to.
        if state.active:
            ended = _ended(state, now, f"{state.stable_app} is no longer running")
            record(Decision("complete", ended, ended.message, float("inf")), None)
        return None

    analysis: AnalysisResult | None = None
    new_baseline = baseline
    if state.active and rollout.analysis is not None and analysis_due(rollout, state, now):
        snap = metrics.snapshot()
        if snap is None:
            # Not a pass, not a failure: the step holds, and says why.
            state = dataclasses.replace(
                state, message=f"analysis waits: cannot read router metrics: {metrics.error}"
            )
        elif baseline is not None:
            before = from_json(baseline)
            analysis = analyse(
                rollout.analysis,
                window(before, snap, dep.name, state.candidate_version),
                window(before, snap, dep.name, state.stable_version),
            )
            METRICS.record_analysis(live_env, dep.name, analysis.verdict)
        else:
            # No baseline (metrics were unreachable when the window began): start it now.
            new_baseline = to_json(snap)
            state = dataclasses.replace(state, window_started_at=now)
    ready, why = readiness(live.apps.get(state.candidate_app))
    ran: HookResult | None = None
    stage = hooks_due(rollout, state, ready) if ready != "failed" else None
    if stage is not None:
        ran = hooks.run(stage, spec, state)
    decision = decide(
        rollout,
        state,
        now,
        candidate=ready,
        candidate_message=why,
        analysis=analysis,
        limits=limits,
        hooks=ran,
    )
    if ran is not None and ran.passed and decision.action == "wait":  # else its reason says so
        result.messages.append(f"{dep.name}: {ran.label} passed: {ran.summary}")
    if decision.reset_window:
        snap = metrics.snapshot()
        new_baseline = to_json(snap) if snap is not None else None
    if decision.state != (stored.state if stored else None) or new_baseline != baseline:
        record(decision, new_baseline)
    if decision.state.phase == "loading":
        result.starting.add(decision.state.candidate_app)
    if decision.state.phase == "aborted" and decision.action != "abort":
        result.held.append(decision.state)
    return _render(dep, spec, live, decision.state)


def _ended(state: RolloutState, now: dt.datetime, why: str) -> RolloutState:
    return dataclasses.replace(state, phase="completed", ended_at=now, message=why)


def _render(
    dep: DesiredDeployment, spec: ModelDeployment, live: LiveState, state: RolloutState
) -> list[AppConfig] | None:
    t = traffic(spec.spec.rollout, state)
    if t is None:
        return None
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
    router = render_router_app(
        spec,
        targets,
        shadow=shadow,
        rollout=note,
        runtime_env=desired_router.get("runtime_env"),  # where the serving code comes from
    )
    apps = [stable_app, router]
    if t.keep_candidate:
        apps.insert(1, candidate_app)
    return apps

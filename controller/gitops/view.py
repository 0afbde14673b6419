"""One model of an environment's state, which every view renders: `serveops status`,
`rollouts`, `history`, the controller's log lines and its metrics.

Built by one pure function from what the controller knows (its durable state: the admitted
desired state, an apply under way, the last failure, rollouts, the lease) and what Serve runs
(health, weights). Two views cannot disagree, because neither computes anything of its own:
each prints fields of an `EnvironmentView`.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

from controller.cluster.live import LiveState
from controller.cluster.status import DeploymentStatus, deployment_statuses
from controller.gitops.state import DesiredRevision, EnvironmentState, Lease
from controller.gitops.state.batch import BatchRun, BatchSchedule
from controller.gitops.view_batch import BatchView, batch_view
from controller.rollout.progress import desired_key
from controller.rollout.state import AnalysisRecord, RolloutState
from controller.sync.plan import Source, make_plan

Sync = Literal["Synced", "OutOfSync", "Unknown"]
Health = Literal["Healthy", "Progressing", "Degraded", "Missing", "Unknown"]


class VersionView(BaseModel):
    version: str
    app: str
    weight: float = Field(description="Share of client traffic, in percent.")
    status: str = Field(description="The Serve application's status (RUNNING, DEPLOYING...).")
    role: Literal["serving", "stable", "candidate", "fallback"] = "serving"


class AnalysisView(BaseModel):
    """One analysis window: what each version did, the thresholds, the decision."""

    at: str
    step: int
    weight: float
    verdict: str
    reasons: list[str]
    candidate: dict[str, float | int | None]
    stable: dict[str, float | int | None]
    thresholds: dict[str, float | int | None]

    @classmethod
    def of(cls, record: AnalysisRecord) -> AnalysisView:
        return cls(
            at=record.at,
            step=record.step + 1,
            weight=record.weight,
            verdict=record.verdict,
            reasons=list(record.reasons),
            candidate=vars(record.candidate),
            stable=vars(record.stable),
            thresholds=dict(record.thresholds),
        )


class RolloutView(BaseModel):
    strategy: str
    phase: str
    step: int | None = Field(None, description="The current canary step, from 1.")
    steps: int | None = None
    weight: float = Field(description="The candidate's share of client traffic, in percent.")
    stable: str
    candidate: str
    commit: str
    started_at: dt.datetime
    ended_at: dt.datetime | None = None
    message: str = Field(description="The last thing that happened.")
    waiting: str = Field("", description="What the rollout waits for now.")
    until: dt.datetime | None = Field(None, description="When that wait ends, if it is timed.")
    analyses: list[AnalysisView] = Field(default_factory=list)

    @property
    def position(self) -> str:
        """`canary step 1/2 at 25%`, `blue_green preview`, `canary aborted`."""
        if self.phase == "steps" and self.step is not None:
            return f"{self.strategy} step {self.step}/{self.steps} at {self.weight:g}%"
        return f"{self.strategy} {self.phase}" + (
            f" at {self.weight:g}%" if self.phase in ("switched", "verifying") else ""
        )


class DeploymentView(BaseModel):
    name: str
    route: str | None = None
    sync: Sync
    health: Health
    revision: str | None = Field(None, description="The commit that last changed what is live.")
    versions: list[VersionView] = Field(default_factory=list)
    rollout: RolloutView | None = None
    message: str = Field("", description="Serve's word on its health, when it has one.")
    summary: str = Field(description="The one line every view prints for this deployment.")


class ApplyView(BaseModel):
    commit: str
    since: dt.datetime
    phases: list[str]


class FailureView(BaseModel):
    commit: str
    at: dt.datetime | None
    message: str


class LeaseView(BaseModel):
    holder: str
    expires_at: dt.datetime
    held_by_other: bool = Field(description="True when another controller acts on it now.")


class EnvironmentView(BaseModel):
    environment: str
    at: dt.datetime
    admitted: str | None = Field(None, description="The revision the controller drives.")
    applied: str | None = Field(None, description="The revision Serve held after the last apply.")
    applying: ApplyView | None = None
    failed: FailureView | None = Field(None, description="The head revision that failed.")
    lease: LeaseView | None = None
    deployments: list[DeploymentView] = Field(default_factory=list)
    batches: list[BatchView] = Field(default_factory=list)
    waiting: list[str] = Field(default_factory=list, description="What the environment waits for.")
    summary: str

    def deployment(self, name: str) -> DeploymentView | None:
        return next((d for d in self.deployments if d.name == name), None)


def rollout_view(state: RolloutState, steps: int | None) -> RolloutView:
    return RolloutView(
        strategy=state.strategy,
        phase=state.phase,
        step=state.step + 1 if state.phase == "steps" else None,
        steps=steps,
        weight=state.weight,
        stable=f"v{state.stable_version}",
        candidate=f"v{state.candidate_version}",
        commit=state.commit,
        started_at=state.started_at,
        ended_at=state.ended_at,
        message=state.message,
        waiting=state.waiting,
        until=state.until,
        analyses=[AnalysisView.of(a) for a in state.analyses],
    )


def waiting_text(waiting: str, until: dt.datetime | None, now: dt.datetime) -> str:
    """`waiting for the end of the pause (step 1/2 at 25%), until 12:01:30 (25s)`."""
    if not waiting:
        return ""
    if until is None:
        return f"waiting for {waiting}"
    left = max(0.0, (until - now).total_seconds())
    return f"waiting for {waiting}, until {until:%H:%M:%S} UTC ({left:.0f}s)"


def rollout_line(rollout: RolloutView, now: dt.datetime) -> str:
    """The line a rollout gets in every view."""
    if rollout.phase in ("completed", "aborted"):
        return f"{rollout.position} to {rollout.candidate}: {rollout.message}"
    waiting = waiting_text(rollout.waiting, rollout.until, now)
    return f"{rollout.position} to {rollout.candidate}" + (f"; {waiting}" if waiting else "")


def environment_view(
    environment: str,
    now: dt.datetime,
    *,
    live: LiveState | None,
    state: EnvironmentState | None,
    rollouts: dict[str, RolloutState] | None = None,
    lease: Lease | None = None,
    holder: str | None = None,
    batches: list[BatchSchedule] | None = None,
    batch_runs: dict[str, BatchRun] | None = None,
) -> EnvironmentView:
    """The environment as the controller knows it and Serve runs it. `live` None: Serve was not
    read (health Unknown); `state` None: no controller state (sync Unknown). `holder`: the
    caller's own lease identity, if it is a controller."""
    rollouts = rollouts or {}
    admitted = state.admitted if state else None
    rows = _statuses(live, environment, state)
    specs = admitted.specs if admitted else {}
    names = sorted({r.name for r in rows} | set(rollouts) | set(specs))
    by_name = {r.name: r for r in rows}
    deployments = []
    for name in names:
        row = by_name.get(name)
        spec = specs.get(name)
        steps = len(spec.spec.rollout.steps) if spec is not None else None
        rollout = rollouts.get(name)
        shown = None
        if rollout is not None and _current(name, rollout, admitted):
            shown = rollout_view(rollout, steps)
        deployments.append(_deployment(name, row, shown, live is not None, now))
    lease_view = None
    if lease is not None and lease.expires_at > now:
        lease_view = LeaseView(
            holder=lease.holder,
            expires_at=lease.expires_at,
            held_by_other=holder is not None and lease.holder != holder,
        )
    waiting: list[str] = []
    if lease_view is not None and lease_view.held_by_other:
        waiting.append(
            f"the lease held by controller {lease_view.holder} until "
            f"{lease_view.expires_at:%H:%M:%S} UTC"
        )
    applying = None
    if state is not None and state.applying is not None:
        progress = state.applying.progress
        applying = ApplyView(
            commit=state.applying.commit, since=progress.started_at, phases=list(progress.phases)
        )
        waiting.append(
            f"the apply of {state.applying.commit[:12]} (since {progress.started_at:%H:%M:%S})"
        )
    failed = None
    if state is not None and state.last_failed_commit:
        failed = FailureView(
            commit=state.last_failed_commit,
            at=state.last_failed_at,
            message=(state.last_failed_message or "").strip(),
        )
    view = EnvironmentView(
        environment=environment,
        at=now,
        admitted=admitted.commit if admitted else None,
        applied=state.last_applied_commit if state else None,
        applying=applying,
        failed=failed,
        lease=lease_view,
        deployments=deployments,
        batches=[batch_view(b, (batch_runs or {}).get(b.deployment)) for b in batches or []],
        waiting=waiting,
        summary="",
    )
    view.summary = _summary(view)
    return view


def _current(name: str, rollout: RolloutState, admitted: DesiredRevision | None) -> bool:
    """Does the rollout shape the deployment now? In flight, or aborted and still holding
    it on the stable version (the admitted desired state is the one it aborted)."""
    if rollout.active:
        return True
    if rollout.phase != "aborted" or admitted is None:
        return False
    desired = admitted.desired.deployments.get(name)
    return desired is not None and desired_key(desired) == rollout.key


def _statuses(
    live: LiveState | None, environment: str, state: EnvironmentState | None
) -> list[DeploymentStatus]:
    """Health from Serve; sync against the admitted desired state (what the controller
    drives), not against a branch head it may have refused."""
    if live is None:
        return []
    admitted = state.admitted if state else None
    if admitted is None:
        return deployment_statuses(live, environment)
    source = Source(repo="", rev=admitted.commit, commit=admitted.commit)
    plan = make_plan(admitted.desired, live, source=source, address="")
    return deployment_statuses(live, environment, plan)


def _deployment(
    name: str,
    row: DeploymentStatus | None,
    rollout: RolloutView | None,
    have_live: bool,
    now: dt.datetime,
) -> DeploymentView:
    sync: Sync = row.sync if row is not None else "Unknown"
    health: Health = row.health if row is not None else ("Missing" if have_live else "Unknown")
    versions = []
    for v in row.versions if row is not None else []:
        role: Literal["serving", "stable", "candidate", "fallback"] = "serving"
        if v.fallback:
            role = "fallback"
        elif rollout is not None and rollout.phase not in ("completed", "aborted"):
            role = "candidate" if f"v{v.version}" == rollout.candidate else "stable"
        versions.append(
            VersionView(version=v.version, app=v.app, weight=v.weight, status=v.status, role=role)
        )
    if rollout is not None:
        summary = rollout_line(rollout, now)
    elif row is not None and row.message:
        summary = row.message
    elif row is not None:
        weights = ", ".join(f"v{v.version} {v.weight:g}%" for v in versions if v.role != "fallback")
        summary = f"{health.lower()}: {weights}" if weights else health.lower()
    elif have_live:
        summary = "not running"
    else:  # Serve was not read (no address, or it did not answer): say nothing false
        summary = "admitted (Serve not read)"
    return DeploymentView(
        name=name,
        route=row.route if row is not None else None,
        sync=sync,
        health=health,
        revision=row.revision if row is not None else None,
        versions=versions,
        rollout=rollout,
        message=row.message if row is not None else "",
        summary=summary,
    )


def _summary(view: EnvironmentView) -> str:
    parts = []
    if view.waiting:
        parts.append("waiting for " + "; ".join(view.waiting))
    if view.failed is not None:
        first = view.failed.message.splitlines()[0] if view.failed.message else ""
        parts.append(f"head {view.failed.commit[:12]} not admitted: {first}")
    for d in view.deployments:
        parts.append(f"{d.name}: {d.summary}")
    return "; ".join(parts) or "nothing deployed"

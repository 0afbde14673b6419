"""What goes in and out of the state store: typed records, never loose rows or JSON."""

from __future__ import annotations

import datetime as dt
import functools
import json
from dataclasses import dataclass
from typing import Any, Literal

from controller.cluster.render import DesiredDeployment, DesiredState
from controller.registry.mlflow import ResolvedModel
from controller.rollout.state import Command, RolloutState
from controller.spec.models import ModelDeployment
from controller.sync.apply import ApplyProgress
from controller.sync.plan import Plan

# What a pass did, as the audit log records it. `running` is written when an apply starts and
# stays while it progresses over several passes; a controller killed meanwhile leaves it, and
# the next pass either continues that apply or turns the row into `interrupted`.
AuditResult = Literal[
    "running",
    "interrupted",
    "applied",  # a new revision (or a new desired state) was applied
    "healed",  # drift was found and Git's state restored
    "drift",  # drift was found and reported (drift mode `warn`)
    "refused",  # the policy gate refused the revision
    "failed",  # reading, planning or applying failed
    "aborted",  # a rollout was aborted: traffic back on the stable version
    "recovered",  # the first good pass after failures: the newest row is the truth
]


@dataclass(frozen=True)
class PassStart:
    """What is known when a pass begins to act."""

    environment: str
    repo: str  # as the user gave it (credentials removed)
    rev: str  # branch or revision followed
    commit: str | None  # the sha it resolved to; None when Git could not be read
    actor: str
    trigger: str  # poll, webhook, sync
    plan: Plan | None = None


@dataclass(frozen=True)
class PassRecord:
    id: int
    environment: str
    repo: str
    rev: str
    commit: str | None
    actor: str
    trigger: str
    result: AuditResult
    message: str
    plan: Plan | None
    started_at: dt.datetime
    finished_at: dt.datetime | None
    repeats: int  # how many consecutive passes ended this same way


@dataclass(frozen=True)
class DesiredRevision:
    """A revision's desired state: its deployments rendered with models resolved, and their
    specs. Once the gate admits one, the controller acts on it until another is admitted; it
    is kept whole, so a refused or unreadable head never stops the controller from driving
    (and rolling back) what was admitted."""

    commit: str
    digest: str  # of the rendered desired state: an alias that moves is a new admission
    desired: DesiredState
    specs: dict[str, ModelDeployment]
    read_at: dt.datetime

    def to_json(self) -> str:
        deployments = {
            name: {
                "path": d.path,
                "model": vars(d.model),
                "apps": d.apps,
                "spec": self.specs[name].model_dump(mode="json", by_alias=True),
            }
            for name, d in self.desired.deployments.items()
        }
        return json.dumps(
            {
                "commit": self.commit,
                "digest": self.digest,
                "environment": self.desired.environment,
                "read_at": self.read_at.isoformat(),
                "deployments": deployments,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> DesiredRevision:
        data: dict[str, Any] = json.loads(text)
        desired = DesiredState(data["environment"])
        specs: dict[str, ModelDeployment] = {}
        for name, d in data["deployments"].items():
            specs[name] = ModelDeployment.model_validate(d["spec"])
            desired.deployments[name] = DesiredDeployment(
                name, d["path"], ResolvedModel(**d["model"]), d["apps"], specs[name].spec.routing
            )
        return cls(
            data["commit"],
            data["digest"],
            desired,
            specs,
            dt.datetime.fromisoformat(data["read_at"]),
        )


@dataclass(frozen=True)
class Applying:
    """An apply that spans passes: which desired state, since when, and its audit row."""

    commit: str
    key: str  # digest of the plan's desired applications
    pass_id: int
    healing: bool
    progress: ApplyProgress
    aborted: str = ""  # rollouts this apply aborts: its row is recorded as `aborted`
    # What the apply changes, from its first plan: the pass that ends it plans against a
    # Serve already written, where nothing is left to change.
    deployments: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(
            {
                "commit": self.commit,
                "key": self.key,
                "pass_id": self.pass_id,
                "healing": self.healing,
                "progress": self.progress.to_dict(),
                "aborted": self.aborted,
                "deployments": list(self.deployments),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Applying:
        data = json.loads(text)
        return cls(
            data["commit"],
            data["key"],
            data["pass_id"],
            data["healing"],
            ApplyProgress.from_dict(data["progress"]),
            data.get("aborted", ""),
            tuple(data.get("deployments", ())),
        )


@dataclass(frozen=True)
class EnvironmentState:
    environment: str
    last_applied_commit: str | None = None
    last_applied_at: dt.datetime | None = None
    last_applied_plan: Plan | None = None  # the plan whose desired state Serve should hold
    last_failed_commit: str | None = None
    last_failed_at: dt.datetime | None = None
    last_failed_message: str | None = None
    drift_fingerprint: str | None = None  # live fingerprint of the drift last reported
    admitted: DesiredRevision | None = None
    applying: Applying | None = None


@dataclass(frozen=True)
class StoredRollout:
    state: RolloutState
    baseline_json: str | None  # metrics at the start of the current analysis window


@dataclass(frozen=True)
class RolloutCommand:
    id: int
    deployment: str
    command: Command
    note: str  # who asked, and why


@dataclass(frozen=True)
class RolloutEvent:
    deployment: str
    at: dt.datetime
    commit: str
    action: str
    phase: str
    step: int
    weight: float
    message: str


@dataclass(frozen=True)
class RolloutUpdate:
    """What one pass decided for one deployment's rollout, written in one transaction."""

    state: RolloutState
    baseline_json: str | None
    action: str  # the decision's action; `wait` adds no event
    message: str


@dataclass(frozen=True)
class Lease:
    environment: str
    holder: str  # the controller's identity: the same after a restart
    acquired_at: dt.datetime
    expires_at: dt.datetime
    instance: str = ""  # the process holding it now (a restart is a new instance)
    epoch: int = 0  # raised at every change of instance: an older one is fenced off


@dataclass(frozen=True)
class LeaseResult:
    acquired: bool
    lease: Lease  # ours when acquired, else the other holder's (or our successor's)
    superseded: bool = False  # a newer instance of the same holder took it: stop writing


def iso(when: dt.datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def parse_time(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


def parse_plan(text: str | None) -> Plan | None:
    return _plan(text) if text else None


# Every pass reads the environment's state; what it holds rarely changes between passes, and
# parsing it (a plan, or 200 specs) costs more than the rest of a pass with nothing to do.
# Parsed values are shared: treat them as read-only.
@functools.lru_cache(maxsize=4)
def _plan(text: str) -> Plan:
    return Plan.model_validate_json(text)


@functools.lru_cache(maxsize=4)
def parse_revision(text: str) -> DesiredRevision:
    return DesiredRevision.from_json(text)

"""The controller's durable state and audit store: one SQLite file, in parts by what they keep.

- `passes`: the audit log (`PassLog`).
- `environments`: what the controller knows about an environment between passes: the admitted
  desired state, an apply in progress, the last applied and last failed commits, health
  (`Environments`).
- `rollouts`: rollout states, their events and operators' commands (`Rollouts`).
- `leases`: one writer per environment (`Leases`).
- `monitor`: drift reports per deployment and window, and open drift episodes
  (`MonitorReports`).
- `monitor_triggers`: retraining requests per drift episode, their attempts and retries
  (`MonitorTriggers`).
- `model_proposals`: model versions proposed through Git (`ModelProposals`).
- `batch_runs`, `batch_schedules`: batch inference runs and when schedules started (`BatchRuns`).

Nothing about an environment lives only in memory: a controller killed at any point and started
again (a new process on the same file) reads where it stood. Typed records go in and out
(`records`); SQL and JSON stay in this package.
"""

from __future__ import annotations

from controller.gitops.state.base import Clock, utcnow
from controller.gitops.state.batch import BatchRun, BatchRuns
from controller.gitops.state.environments import Environments
from controller.gitops.state.leases import Leases
from controller.gitops.state.monitor import MonitorReports
from controller.gitops.state.passes import PassLog
from controller.gitops.state.proposals import ModelProposal, ModelProposals
from controller.gitops.state.records import (
    Applying,
    AuditResult,
    DesiredRevision,
    EnvironmentState,
    Lease,
    LeaseResult,
    PassRecord,
    PassStart,
    RolloutCommand,
    RolloutEvent,
    RolloutUpdate,
    StoredRollout,
)
from controller.gitops.state.rollouts import Rollouts
from controller.gitops.state.triggers import MonitorTriggers, Trigger


class StateStore(
    PassLog,
    Environments,
    Rollouts,
    Leases,
    MonitorReports,
    MonitorTriggers,
    ModelProposals,
    BatchRuns,
):
    """The state file at `path`; safe to open from several processes at once."""

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "Applying",
    "AuditResult",
    "BatchRun",
    "Clock",
    "DesiredRevision",
    "EnvironmentState",
    "Lease",
    "LeaseResult",
    "ModelProposal",
    "PassRecord",
    "PassStart",
    "RolloutCommand",
    "RolloutEvent",
    "RolloutUpdate",
    "StateStore",
    "StoredRollout",
    "Trigger",
    "utcnow",
]

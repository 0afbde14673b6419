"""What a pass did and when to look again: the value every view of a pass renders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from controller.rollout.state import RolloutState
from controller.sync.plan import Plan

PassOutcome = Literal[
    "applied",  # an apply completed: Serve holds the admitted desired state
    "progressing",  # an apply is under way (waiting for versions to run), or a rollout is
    "healed",  # drift found, the admitted state restored (drift mode enabled)
    "in_sync",  # nothing to do
    "drift",  # drift found and reported (drift mode warn)
    "ignored",  # drift found, drift mode disabled
    "failed",  # reading, planning or applying failed
    "refused",  # the policy gate refused the revision
    "skipped",  # the revision failed before and is not attempted again
    "aborted",  # a rollout aborted (now, or earlier and still holds its deployment back)
    "waiting",  # another controller holds the environment's lease
]
# Serve holds what was admitted.
IN_SYNC: frozenset[PassOutcome] = frozenset({"applied", "healed", "in_sync", "ignored"})


@dataclass(frozen=True)
class PassResult:
    environment: str
    outcome: PassOutcome
    message: str
    requeue_after: float  # seconds until the next pass; the caller sleeps, never the pass
    commit: str | None = None
    pass_id: int | None = None  # the audit row, when one was written
    plan: Plan | None = None
    bad_input: bool = False
    applying: bool = False  # an apply is under way: the next pass continues it

    @property
    def in_sync(self) -> bool:
        return self.outcome in IN_SYNC

    @property
    def exit_code(self) -> int:
        """0 when Serve holds Git's state, or moves to it (a rollout in flight); 2 for bad
        input; 1 otherwise."""
        if self.in_sync or self.outcome == "progressing":
            return 0
        return 2 if self.bad_input else 1


def aborted_text(state: RolloutState) -> str:
    """`rollout of fraud to v2 aborted: <reason>; traffic back on fraud--v1`."""
    return f"rollout of {state.deployment} to v{state.candidate_version} {state.message}"


def held_text(state: RolloutState) -> str:
    when = f" (at {state.ended_at:%Y-%m-%d %H:%M:%S} UTC)" if state.ended_at else ""
    return (
        f"{state.deployment} is held on v{state.stable_version}: rollout to "
        f"v{state.candidate_version} of {state.commit[:12]} {state.message}{when}. It is not "
        "attempted again until a commit changes the deployment, or `serveops sync --retry`"
    )

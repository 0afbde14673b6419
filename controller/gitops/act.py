"""Step 4 of a pass, act: persist what was decided, then write to Serve at most one phase.

Order matters for a controller killed at any point: the admitted desired state and the
rollout decisions are stored first, then the apply advances by one step (`sync.apply`), whose
progress is stored as it goes. The next pass reads all of it and continues; no pass waits for
replicas to start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Literal

from controller.errors import BadInput, ServeopsError, StalePlan, Unreachable
from controller.gitops.context import PassContext
from controller.gitops.decide import Decision
from controller.gitops.gate import Admission
from controller.gitops.outcome import PassOutcome, aborted_text
from controller.gitops.read import Observation
from controller.gitops.state import Applying
from controller.sync.apply import ApplyProgress, apply_step

log = logging.getLogger("serveops.controller")

# After a stale plan (Serve moved between plan and apply): the next pass comes this soon.
CONFLICT_REQUEUE_S = 0.5


@dataclass(frozen=True)
class Acted:
    outcome: PassOutcome | None  # None: nothing to act on
    message: str = ""
    pass_id: int | None = None
    requeue_after: float | None = None  # None: the controller's interval
    bad_input: bool = False


def act(ctx: PassContext, obs: Observation, admission: Admission, decision: Decision) -> Acted:
    env, store = ctx.environment, ctx.store
    target = admission.target
    if admission.new:
        assert target is not None
        store.admit(env, target)
    decision.rollouts.save(store)  # before the plan they shaped is applied
    plan, state = decision.plan, obs.state
    if target is None or plan is None:
        return Acted(None)
    commit = target.commit
    intent = decision.intent

    if intent == "in_sync":
        if state.applying is not None:
            _close(ctx, state.applying, "the live state already matches the desired state")
        if admission.new or state.last_applied_commit != commit or state.last_applied_plan is None:
            store.mark_applied(env, commit, plan)  # Serve already holds it
        elif state.drift_fingerprint is not None:
            store.set_drift_fingerprint(env, None)  # drift went away
        return Acted("in_sync", f"{env!r} is in sync with {commit[:12]}")
    if intent == "ignore":
        return Acted("ignored", f"{decision.drift} (drift detection is disabled)")
    if intent == "drift":
        pass_id = None
        if state.drift_fingerprint != plan.live_fingerprint:  # report each new drift once
            start = replace(obs.start, commit=commit, plan=plan)
            pass_id, _ = store.record_pass(start, "drift", decision.drift, obs.started)
            store.set_drift_fingerprint(env, plan.live_fingerprint)
            ctx.notify(
                "drift_detected", commit, f"{decision.drift}. Drift mode is warn: not restored."
            )
        return Acted("drift", f"{decision.drift} (drift mode warn: not restored)", pass_id)
    return _apply(ctx, obs, decision, commit)


def _apply(ctx: PassContext, obs: Observation, decision: Decision, commit: str) -> Acted:
    env, store, plan, state = ctx.environment, ctx.store, decision.plan, obs.state
    assert plan is not None
    now = store.now()
    if decision.intent == "continue" and state.applying is not None:
        applying = state.applying
    else:
        if state.applying is not None:
            _close(ctx, state.applying, "superseded by a newer desired state")
        pass_id = store.begin_pass(replace(obs.start, commit=commit, plan=plan))
        aborted = "; ".join(aborted_text(a) for a in decision.rollouts.aborted)
        applying = Applying(
            commit,
            decision.key,
            pass_id,
            decision.intent == "heal",
            ApplyProgress(now),
            aborted,
            tuple(sorted(plan.deployments_changed())),
        )
        store.set_applying(env, applying)
    try:
        step = apply_step(
            plan,
            ctx.client,
            applying.progress,
            now,
            timeout_s=ctx.settings.apply_timeout_s,
            no_wait=frozenset(decision.rollouts.starting),
            log=log.info,
        )
    except StalePlan as err:
        # Live moved since planning (someone else wrote to Serve): a conflict, not the
        # revision's fault. Plan again soon, as controller-runtime requeues on a conflict.
        return Acted("failed", err.message, applying.pass_id, CONFLICT_REQUEUE_S)
    except Unreachable as err:
        # Serve down mid-apply: not the revision's fault; the next pass continues the apply.
        return Acted("failed", err.message, applying.pass_id)
    except ServeopsError as err:
        store.finish_pass(applying.pass_id, "failed", err.message)
        store.set_applying(env, None)
        if type(err) is not BadInput:  # our own configuration is not the revision's fault
            store.mark_failed(env, commit, err.message)
        ctx.notify("sync_failed", commit, err.message)
        return Acted("failed", err.message, applying.pass_id, bad_input=isinstance(err, BadInput))
    if not step.done:
        store.set_applying(env, replace(applying, progress=step.progress))
        waiting = step.waiting or f"{step.wrote} written"
        return Acted(
            "progressing",
            f"applying {commit[:12]} to {env!r}: {waiting}",
            applying.pass_id,
            step.requeue_after,
        )
    seconds = (now - applying.progress.started_at).total_seconds()
    phases = ", ".join(step.progress.phases) or "nothing to write"
    outcome: Literal["healed", "applied"]
    if applying.healing:
        outcome = "healed"
        message = f"{decision.drift or 'drift'}; restored Git's state ({phases})"
    else:
        outcome = "applied"
        # An apply stored before `deployments` existed: what its last plan still changed.
        named = applying.deployments or tuple(sorted(plan.deployments_changed()))
        changed = ", ".join(named) or "no deployment"
        message = f"applied {commit[:12]} to {env!r}: {changed} ({phases}, {seconds:.1f}s)"
    if applying.aborted:
        message = f"{applying.aborted}; {message}"
    store.finish_pass(applying.pass_id, "aborted" if applying.aborted else outcome, message)
    store.mark_applied(env, commit, plan)
    if not applying.aborted:  # an abort is notified as rollout_aborted
        ctx.notify("drift_detected" if applying.healing else "deployed", commit, message)
    return Acted(outcome, message, applying.pass_id)


def _close(ctx: PassContext, applying: Applying, why: str) -> None:
    ctx.store.finish_pass(applying.pass_id, "interrupted", why)
    ctx.store.set_applying(ctx.environment, None)

"""Step 5 of a pass, record: the audit row, failure marks, notifications, and the result.

One pass, one truthful result: a head that was refused or failed says so (exit 1) even while
the pass drove an earlier admitted state; a rollout in flight is `progressing`, not in sync;
the first good pass after failures adds a `recovered` row, so the newest row is the truth.
"""

from __future__ import annotations

from dataclasses import replace

from controller.cluster.status import deployment_statuses
from controller.errors import BadInput
from controller.gitops.act import Acted
from controller.gitops.context import PassContext
from controller.gitops.decide import Decision
from controller.gitops.gate import Admission
from controller.gitops.outcome import PassOutcome, PassResult, aborted_text, held_text
from controller.gitops.read import Observation
from controller.gitops.state import AuditResult
from controller.gitops.view import rollout_line, rollout_view
from controller.rollout.state import RolloutState

_HEAD_OUTCOME: dict[str, PassOutcome] = {
    "refused": "refused",
    "failed": "failed",
    "unreadable": "failed",
    "skipped": "skipped",
}


def record(
    ctx: PassContext, obs: Observation, admission: Admission, decision: Decision, acted: Acted
) -> PassResult:
    env, store, rollouts = ctx.environment, ctx.store, decision.rollouts
    commit = obs.head
    for aborted in rollouts.aborted:
        ctx.notify("rollout_aborted", aborted.commit, aborted_text(aborted))
    _watch_health(ctx, obs, decision)
    requeue = min(
        acted.requeue_after if acted.requeue_after is not None else ctx.settings.interval_s,
        rollouts.requeue_after,
    )
    meanwhile = ""
    if acted.outcome not in (None, "in_sync", "ignored"):
        meanwhile = f"; meanwhile, on {admission.target.commit[:12] if admission.target else '?'}: {acted.message}"
    if rollouts.messages:
        meanwhile += f"; rollouts: {'; '.join(rollouts.messages)}"

    if admission.head in _HEAD_OUTCOME:
        outcome = _HEAD_OUTCOME[admission.head]
        pass_id = None
        if admission.head == "skipped":
            message = _skipped_text(obs)
        else:
            message = admission.message
            start = replace(obs.start, plan=None)
            audit: AuditResult = "refused" if outcome == "refused" else "failed"
            pass_id, new = store.record_pass(start, audit, message, obs.started)
            if admission.revision_fault and commit is not None:
                store.mark_failed(env, commit, message)
            if new:  # a failure that repeats pass after pass is notified once
                ctx.notify("sync_failed", commit, message)
        return PassResult(
            env,
            outcome,
            message + meanwhile,
            requeue,
            commit=commit,
            pass_id=pass_id,
            plan=decision.plan,
            bad_input=isinstance(admission.error, BadInput),
            applying=acted.outcome == "progressing",
        )

    outcome = acted.outcome or "in_sync"
    message = acted.message
    pass_id = acted.pass_id
    if rollouts.messages:
        message = f"{message}; rollouts: {'; '.join(rollouts.messages)}"
    if outcome == "failed" and not acted.bad_input:
        # A conflict or Serve down mid-apply: retried; the apply's own row stays running.
        pass_id, new = store.record_pass(obs.start, "failed", acted.message, obs.started)
        if new:
            ctx.notify("sync_failed", commit, acted.message)
    settled = outcome in ("in_sync", "applied", "progressing")
    if settled and rollouts.aborted:
        outcome = "aborted"
        message = f"{'; '.join(aborted_text(a) for a in rollouts.aborted)}; {message}"
        if pass_id is None:  # the abort needed no write: record it all the same
            pass_id, _ = store.record_pass(obs.start, "aborted", message, obs.started)
    elif settled and rollouts.held:
        outcome = "aborted"
        message = f"{'; '.join(held_text(h) for h in rollouts.held)}; {message}"
    elif settled:
        active = [r.state for r in store.rollouts(env).values() if r.state.active]
        if active:
            outcome = "progressing"
            if not rollouts.messages:  # nothing moved: say where each rollout stands
                message = "; ".join(_where(ctx, admission, s) for s in active)
    recovering = outcome in ("in_sync", "progressing") and pass_id is None
    if recovering and store.latest_result(env) in ("failed", "interrupted"):
        pass_id, _ = store.record_pass(obs.start, "recovered", f"recovered: {message}", obs.started)
    return PassResult(
        env,
        outcome,
        message,
        requeue,
        commit=commit,
        pass_id=pass_id,
        plan=decision.plan,
        bad_input=acted.bad_input,
        applying=acted.outcome == "progressing",
    )


def _where(ctx: PassContext, admission: Admission, state: RolloutState) -> str:
    """A rollout's line, as `serveops status` and `rollouts` print it."""
    specs = admission.target.specs if admission.target else {}
    spec = specs.get(state.deployment)
    steps = len(spec.spec.rollout.steps) if spec is not None else None
    return f"{state.deployment}: {rollout_line(rollout_view(state, steps), ctx.store.now())}"


def _skipped_text(obs: Observation) -> str:
    state = obs.state
    when = f"{state.last_failed_at:%Y-%m-%d %H:%M:%S} UTC" if state.last_failed_at else ""
    reason = (state.last_failed_message or "").strip()
    head = (obs.head or "")[:12]
    return (
        f"revision {head} failed at {when}; it is not attempted again until a new "
        f"commit, or `serveops sync --retry`. It failed with: {reason}"
    )


def _watch_health(ctx: PassContext, obs: Observation, decision: Decision) -> None:
    """Notify `degraded` once per deployment entering the state: an application that cannot
    serve (seen in the live state the pass read) or a rollout aborted by this pass."""
    if obs.live is None:
        return
    now = {
        row.name: row.message
        for row in deployment_statuses(obs.live, ctx.environment)
        if row.health == "Degraded"
    }
    for aborted in decision.rollouts.aborted:
        now[aborted.deployment] = aborted_text(aborted)
    before = ctx.store.degraded(ctx.environment)
    for name in sorted(now.keys() - before.keys()):
        ctx.notify("degraded", obs.head, f"{name} is Degraded: {now[name]}")
    if now != before:
        ctx.store.set_degraded(ctx.environment, now)

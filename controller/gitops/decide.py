"""Step 3 of a pass, decide: what to do with the admitted desired state.

Rollouts in flight advance by one decision (their hooks run here, after the gate), the
desired state they shape is diffed against live Serve into a Plan, and the pass's intent
follows from the plan and the durable state: apply a new desired state, continue an apply
under way, restore drift (or report it), or nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

from controller.errors import Refused
from controller.gitops.context import PassContext
from controller.gitops.gate import Admission
from controller.gitops.read import Observation
from controller.rollout.hooks import serve_http_url
from controller.rollout.progress import HookSetup, MetricsOnce, RolloutPass, advance
from controller.rollout.state import Limits
from controller.sync.plan import Plan, Source, comparable, make_plan

Intent = Literal["nothing", "in_sync", "apply", "continue", "heal", "drift", "ignore"]


@dataclass(frozen=True)
class Decision:
    intent: Intent
    plan: Plan | None = None
    rollouts: RolloutPass = field(default_factory=lambda: RolloutPass(""))
    drift: str = ""  # what differs, when the intent is about drift
    key: str = ""  # the plan's desired applications, as a digest (an apply in progress keeps it)


def decide(ctx: PassContext, obs: Observation, admission: Admission, *, retry: bool) -> Decision:
    target = admission.target
    if target is None or obs.live is None:
        return Decision("nothing")
    if obs.state.last_failed_commit == target.commit and not retry:
        # What was admitted failed to apply: hold still until a new commit or a retry.
        return Decision("nothing")
    live = obs.live
    limits = Limits(
        progress_deadline_s=ctx.settings.apply_timeout_s,
        inconclusive_limit=ctx.settings.inconclusive_limit,
    )
    serve_url = ctx.settings.serve_url or serve_http_url(ctx.client.address, live.http_options)
    shaped, rollouts = advance(
        target.desired,
        target.specs,
        live,
        ctx.store.rollouts(ctx.environment),
        ctx.store.pending_rollout_commands(ctx.environment),
        MetricsOnce(ctx.metrics),
        commit=target.commit,
        now=ctx.store.now(),
        limits=limits,
        retry=retry,
        hooks=HookSetup(ctx.hooks, serve_url),
    )
    rollouts.live = live
    source = Source(repo=str(ctx.source.path), rev=target.commit, commit=target.commit)
    plan = make_plan(
        shaped, live, source=source, address=ctx.client.address, prune=ctx.settings.prune
    )
    _check_not_emptying(ctx, plan)
    key = plan_key(plan)
    state = obs.state
    if state.applying is not None and state.applying.key == key:
        return Decision("continue", plan, rollouts, key=key)
    if not plan.has_changes:
        return Decision("in_sync", plan, rollouts, key=key)
    last = state.last_applied_plan
    unchanged = (
        not admission.new
        and state.last_applied_commit == target.commit
        and last is not None
        and plan_key(last) == key
    )
    if not unchanged:
        return Decision("apply", plan, rollouts, key=key)
    # The admitted state did not move and neither did the rollouts: someone changed Serve.
    what = f"live Serve differs from {target.commit[:12]}, applied last: {drift_summary(plan)}"
    mode = ctx.settings.drift
    intent: Intent = {"enabled": "heal", "warn": "drift", "disabled": "ignore"}[mode]  # type: ignore[assignment]
    return Decision(intent, plan, rollouts, drift=what, key=key)


def plan_key(plan: Plan) -> str:
    """Which applications a plan wants (bookkeeping and orphans aside), as a digest."""
    orphans = {a.app for a in plan.actions if a.op == "orphan"}
    apps = sorted(
        (comparable(a) for a in plan.desired if a["name"] not in orphans),
        key=lambda a: str(a.get("name")),
    )
    blob = json.dumps(apps, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check_not_emptying(ctx: PassContext, plan: Plan) -> None:
    deletes = [a for a in plan.actions if a.op == "delete"]
    if plan.prune and not plan.models and deletes and not ctx.settings.allow_empty:
        raise Refused(
            f"the desired state of {plan.environment!r} at {plan.source.commit[:12]} is "
            f"empty: pruning would delete all {len(deletes)} managed application(s). "
            "Refusing; allow it explicitly with --allow-empty"
        )


def drift_summary(plan: Plan, limit: int = 5) -> str:
    parts = []
    for action in plan.changes[:limit]:
        if action.op == "create":
            parts.append(f"{action.app} is missing")
        elif action.op == "delete":
            parts.append(f"{action.app} is not in Git")
        else:
            fields = ", ".join(c.path for c in action.changes[:3])
            more = "..." if len(action.changes) > 3 else ""
            parts.append(f"{action.app} changed ({fields}{more})")
    if len(plan.changes) > limit:
        parts.append(f"and {len(plan.changes) - limit} more")
    return "; ".join(parts)

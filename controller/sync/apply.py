"""Execute a Plan against Ray Serve, in an order that never drops a request.

Two phases, each a full PUT that carries every other application over untouched:

1. switch: new and changed model-version applications are added next to the live ones, and
   routers get their new targets with the versions they serve now as `fallback`. A router
   sends traffic to a target the moment its application is RUNNING and to the fallback until
   then, so traffic moves as soon as it can, without a second write. Then the new versions
   must run.
2. clean: once every router has seen them RUNNING (a grace of two router status polls),
   fallbacks and versions nothing routes to any more are removed.

`apply_step` does what the live state allows now and returns, as a controller-runtime
reconciler would: write a phase, or report what it waits for and when to look again. Every
step is derived from (desired, live) plus an `ApplyProgress` (when the apply started, when its
versions were first all RUNNING), so a step after a restart converges from wherever the last
one stopped. `apply_plan` runs steps until done, for `serveops apply` and the simulator.
A failure leaves traffic on the fallback versions and says so.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from controller.clock import SYSTEM_CLOCK, Clock
from controller.cluster.live import LiveState
from controller.cluster.render import AppConfig
from controller.cluster.serve_api import ServeAPI, merged_config
from controller.errors import ServeopsError, StalePlan
from controller.serving.protocol import STATUS_POLL_S, RouterConfig, router_config
from controller.sync.plan import Plan
from controller.sync.routes import role, switch_routes

POLL_INTERVAL_S = 0.1
# Before removing old versions: every router replica re-reads Serve's status this often.
SWITCH_GRACE_S = 2 * STATUS_POLL_S + 0.5


class ApplyFailed(ServeopsError):
    """Apply stopped part-way; the message says what is live and how to converge."""


@dataclass
class ApplyResult:
    phases: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _router_config(app: AppConfig) -> RouterConfig:
    config = router_config(app)
    if config is None:  # a managed router without one was not written by serveops
        raise ApplyFailed(f"router application {app.get('name')!r} has no router user_config")
    return config


def with_fallback(desired: AppConfig, live: AppConfig | None) -> AppConfig:
    """The desired router, falling back to what the live one serves now (if that differs)."""
    if live is None:
        return desired
    new = _router_config(desired)
    now = _router_config(live)
    # Targets now live stay as fallback, and so does a fallback still in place (a rerun after
    # a failed switch must not lose the versions that actually serve).
    fallback = [
        t for t in [*now.targets, *now.fallback] if t.app not in {n.app for n in new.targets}
    ]
    unique = list({t.app: t for t in fallback}.values())
    if not unique:
        return desired
    app = copy.deepcopy(desired)
    app["deployments"][0]["user_config"]["fallback"] = [t.model_dump() for t in unique]
    return app


def _has_fallback(apps: list[AppConfig]) -> bool:
    return any(role(a) == "router" and _router_config(a).fallback for a in apps)


def _phase_configs(plan: Plan, live: LiveState) -> tuple[list[AppConfig], list[AppConfig]]:
    """The managed application lists after each phase, computed from what is live now."""
    managed_live = {n: a.config for n, a in live.managed(plan.environment).items()}
    desired = {a["name"]: a for a in plan.desired}
    switch = dict(managed_live)
    for name, app in desired.items():
        switch[name] = with_fallback(app, managed_live.get(name)) if role(app) == "router" else app
    switch_routes(switch, live)  # a route moves to a version application only when it runs
    return list(switch.values()), list(desired.values())


def _same(apps: list[AppConfig], live: LiveState, env: str) -> bool:
    # Exact, bookkeeping included: a changed deployment's router gets its new revision written.
    now = {n: a.config for n, a in live.managed(env).items()}
    return now == {a["name"]: a for a in apps}


@dataclass(frozen=True)
class ApplyProgress:
    """What an apply in progress must remember between steps (persisted by the controller)."""

    started_at: dt.datetime
    ready_at: dt.datetime | None = None  # every awaited application first seen RUNNING
    phases: tuple[str, ...] = ()  # phases written so far

    def to_dict(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at.isoformat(),
            "ready_at": self.ready_at.isoformat() if self.ready_at else None,
            "phases": list(self.phases),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ApplyProgress:
        ready = data.get("ready_at")
        return cls(
            dt.datetime.fromisoformat(data["started_at"]),
            dt.datetime.fromisoformat(ready) if ready else None,
            tuple(data.get("phases", ())),
        )


@dataclass(frozen=True)
class ApplyStep:
    """One step's outcome: done, or what it waits for and when to look again."""

    progress: ApplyProgress
    done: bool
    wrote: str | None = None  # the phase written by this step
    waiting: str = ""  # what the apply waits for, for status and logs
    requeue_after: float = 0.0


def apply_step(
    plan: Plan,
    client: ServeAPI,
    progress: ApplyProgress,
    now: dt.datetime,
    *,
    timeout_s: float = 300.0,
    check_fresh: bool = True,
    no_wait: frozenset[str] = frozenset(),
    log: Callable[[str], None] = lambda _msg: None,
) -> ApplyStep:
    """Advance the apply of `plan` by what the live state allows now; never waits.

    Refuses (StalePlan) when `check_fresh` and the live state moved since the plan was made.
    `no_wait`: version applications not to wait for (a rollout's candidate, which gets no
    traffic until it runs; the rollout engine watches it against its progress deadline)."""
    live = client.get()
    if check_fresh and live.fingerprint() != plan.live_fingerprint:
        raise StalePlan(
            "the live Serve state has changed since this plan was made "
            f"(fingerprint {plan.live_fingerprint} -> {live.fingerprint()}); make a new plan"
        )
    if not plan.has_changes and not progress.phases:
        log("nothing to apply: live state matches the plan")
        return ApplyStep(progress, done=True)
    env = plan.environment
    switch, clean = _phase_configs(plan, live)
    wrote = None
    if not _same(switch, live, env):
        log(
            f"switch: writing {len(switch)} managed application(s); routers fall back to the "
            "versions serving now until the new ones run"
        )
        client.put(merged_config(live, env, switch), live)
        progress = replace(progress, phases=(*progress.phases, "switch"), ready_at=None)
        wrote = "switch"
        live = client.get()  # what Serve made of it: a fast start may already run

    awaited = [a["name"] for a in plan.desired if a["name"] not in no_wait]
    pending = _pending(live, awaited, "switch")
    if pending:
        waited = (now - progress.started_at).total_seconds()
        if waited > timeout_s:
            statuses = ", ".join(
                f"{n} is {live.apps[n].status if n in live.apps else 'missing'}" for n in pending
            )
            raise ApplyFailed(
                _stopped_message(
                    "switch", ", ".join(pending), "not RUNNING", f"timed out: {statuses}"
                )
            )
        return ApplyStep(
            progress,
            done=False,
            wrote=wrote,
            waiting=f"waiting for {', '.join(pending)} to run",
            requeue_after=POLL_INTERVAL_S,
        )
    progress = progress if progress.ready_at else replace(progress, ready_at=now)

    if _same(clean, live, env):
        return ApplyStep(progress, done=True, wrote=wrote)
    assert progress.ready_at is not None
    grace = SWITCH_GRACE_S - (now - progress.ready_at).total_seconds()
    if _has_fallback([a.config for a in live.managed(env).values()]) and grace > 0:
        # Every router replica must have seen the new versions RUNNING before the versions
        # it falls back to go away.
        return ApplyStep(
            progress,
            done=False,
            wrote=wrote,
            waiting="routers re-reading which versions run",
            requeue_after=grace,
        )
    if wrote is not None:
        # One write per step: the clean phase is the next step's.
        return ApplyStep(progress, done=False, wrote=wrote, requeue_after=POLL_INTERVAL_S)
    log(f"clean: writing {len(clean)} managed application(s)")
    client.put(merged_config(live, env, clean), live)
    return ApplyStep(
        replace(progress, phases=(*progress.phases, "clean")), done=True, wrote="clean"
    )


def apply_plan(
    plan: Plan,
    client: ServeAPI,
    *,
    timeout_s: float = 300.0,
    log: Callable[[str], None] = lambda _msg: None,
    check_fresh: bool = True,
    no_wait: frozenset[str] = frozenset(),
    clock: Clock = SYSTEM_CLOCK,
) -> ApplyResult:
    """Apply `plan` to the end, step by step; refuse it when the live state has moved since it
    was made (checked before the first write only: later steps see our own writes)."""
    started = clock.monotonic()
    progress = ApplyProgress(started_at=clock.now())
    fresh = check_fresh
    while True:
        step = apply_step(
            plan,
            client,
            progress,
            clock.now(),
            timeout_s=timeout_s,
            check_fresh=fresh,
            no_wait=no_wait,
            log=log,
        )
        progress, fresh = step.progress, False
        if step.done:
            return ApplyResult(list(progress.phases), clock.monotonic() - started)
        clock.sleep(step.requeue_after)


def _pending(live: LiveState, names: list[str], phase: str) -> list[str]:
    """Applications in `names` not RUNNING yet; raises at once for a failed or unschedulable one."""
    pending = []
    for name in sorted(names):
        app = live.apps.get(name)
        if app is not None and app.problem:
            raise ApplyFailed(_stopped_message(phase, name, app.status, app.problem))
        if app is None or app.status != "RUNNING":
            pending.append(name)
    return pending


def _stopped_message(phase: str, app: str, status: str, reason: str) -> str:
    where = (
        "Routers keep sending traffic to the versions that served it before (their fallback) "
        "until the new versions run."
    )
    return (
        f"apply stopped in phase '{phase}': {app} is {status}: {reason}\n"
        f"{where} Fix the cause and run apply again; it converges from the current state."
    )

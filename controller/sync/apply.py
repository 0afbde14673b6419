"""Execute a Plan against Ray Serve, in an order that never drops a request.

Two phases, each a full PUT that carries every other application over untouched:

1. switch: new and changed model-version applications are added next to the live ones, and
   routers get their new targets with the versions they serve now as `fallback`. A router
   sends traffic to a target the moment its application is RUNNING and to the fallback until
   then, so traffic moves as soon as it can, without a second write. Wait until the new
   versions are RUNNING.
2. clean: once every router has seen them RUNNING, fallbacks and versions nothing routes to
   any more are removed.

A failure in phase 1 leaves traffic on the fallback versions and says so; every phase is
derived from (desired, live), so running apply again converges from wherever the last stopped.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from controller.cluster.live import LiveState
from controller.cluster.render import AppConfig
from controller.cluster.serve_api import ServeAPI, merged_config
from controller.errors import ServeopsError, StalePlan
from controller.serving.protocol import MARKER_KEY, STATUS_POLL_S, RouterConfig, router_config
from controller.sync.plan import Plan

POLL_INTERVAL_S = 0.1
# Before removing old versions: every router replica re-reads Serve's status this often.
SWITCH_GRACE_S = 2 * STATUS_POLL_S + 0.5


class ApplyFailed(ServeopsError):
    """Apply stopped part-way; the message says what is live and how to converge."""


@dataclass
class ApplyResult:
    phases: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _role(app: AppConfig) -> str:
    return str((app.get("args") or {}).get(MARKER_KEY, {}).get("role", ""))


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
    return any(_role(a) == "router" and _router_config(a).fallback for a in apps)


def _phase_configs(plan: Plan, live: LiveState) -> tuple[list[AppConfig], list[AppConfig]]:
    """The managed application lists after each phase, computed from what is live now."""
    managed_live = {n: a.config for n, a in live.managed(plan.environment).items()}
    desired = {a["name"]: a for a in plan.desired}
    switch = dict(managed_live)
    for name, app in desired.items():
        switch[name] = with_fallback(app, managed_live.get(name)) if _role(app) == "router" else app
    return list(switch.values()), list(desired.values())


def _same(apps: list[AppConfig], live: LiveState, env: str) -> bool:
    # Exact, bookkeeping included: a changed deployment's router gets its new revision written.
    now = {n: a.config for n, a in live.managed(env).items()}
    return now == {a["name"]: a for a in apps}


def apply_plan(
    plan: Plan,
    client: ServeAPI,
    *,
    timeout_s: float = 300.0,
    log: Callable[[str], None] = lambda _msg: None,
    check_fresh: bool = True,
    no_wait: frozenset[str] = frozenset(),
) -> ApplyResult:
    """Apply `plan`; refuse it when the live state has moved since it was made.

    `no_wait`: version applications not to wait for (a rollout's candidate, which gets no
    traffic until it runs; the rollout engine watches it against its progress deadline)."""
    started = time.monotonic()
    result = ApplyResult()
    live = client.get()
    if check_fresh and live.fingerprint() != plan.live_fingerprint:
        raise StalePlan(
            "the live Serve state has changed since this plan was made "
            f"(fingerprint {plan.live_fingerprint} -> {live.fingerprint()}); make a new plan"
        )
    if not plan.has_changes:
        log("nothing to apply: live state matches the plan")
        return result
    env = plan.environment
    deadline = started + timeout_s
    switch, clean = _phase_configs(plan, live)
    versions = [
        a["name"] for a in plan.desired if _role(a) != "router" and a["name"] not in no_wait
    ]
    routers = [a["name"] for a in plan.desired if _role(a) == "router"]

    if not _same(switch, live, env):
        log(
            f"switch: writing {len(switch)} managed application(s); routers fall back to the "
            "versions serving now until the new ones run"
        )
        client.put(merged_config(live, env, switch), live)
        result.phases.append("switch")
    wait_running(client, [*versions, *routers], deadline, "switch", log)

    if not _same(clean, client.get(), env):
        if _has_fallback(switch):
            time.sleep(SWITCH_GRACE_S)  # every router replica has seen the new versions RUNNING
        log(f"clean: writing {len(clean)} managed application(s)")
        live = client.get()
        client.put(merged_config(live, env, clean), live)
        result.phases.append("clean")
    result.seconds = time.monotonic() - started
    return result


def wait_running(
    client: ServeAPI,
    names: list[str],
    deadline: float,
    phase: str,
    log: Callable[[str], None],
) -> None:
    """Poll until every app is RUNNING; fail fast on a failed or unschedulable one."""
    pending = set(names)
    while True:
        live = client.get()
        for name in sorted(pending):
            app = live.apps.get(name)
            if app is None:
                continue
            if app.status == "RUNNING" and not app.problem:
                pending.discard(name)
            elif app.problem:
                raise ApplyFailed(_stopped_message(phase, name, app.status, app.problem))
        if not pending:
            return
        if time.monotonic() > deadline:
            statuses = ", ".join(
                f"{n} is {live.apps[n].status if n in live.apps else 'missing'}"
                for n in sorted(pending)
            )
            raise ApplyFailed(
                _stopped_message(
                    phase, ", ".join(sorted(pending)), "not RUNNING", f"timed out: {statuses}"
                )
            )
        time.sleep(POLL_INTERVAL_S)


def _stopped_message(phase: str, app: str, status: str, reason: str) -> str:
    where = (
        "Routers keep sending traffic to the versions that served it before (their fallback) "
        "until the new versions run."
    )
    return (
        f"apply stopped in phase '{phase}': {app} is {status}: {reason}\n"
        f"{where} Fix the cause and run apply again; it converges from the current state."
    )

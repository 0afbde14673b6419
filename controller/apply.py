"""Execute a Plan against Ray Serve, in an order that never drops a request.

Three phases, each a full PUT that carries every other application over untouched:

1. start: new and changed model-version applications are added next to the live ones; routers
   keep sending traffic where they did. Wait until the new versions are RUNNING.
2. switch: routers get their new targets (a `reconfigure()`, no restart).
3. clean: versions no longer referenced are removed.

A failure in phase 1 leaves traffic where it was and says so; every phase is derived from
(desired, live), so running apply again converges from wherever the last run stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from controller.errors import Refused, ServeopsError
from controller.live import LiveState
from controller.plan import Plan
from controller.render import AppConfig
from controller.serveapi import ServeAPI, merged_config
from controller.serving.protocol import MARKER_KEY

POLL_INTERVAL_S = 0.25


class ApplyFailed(ServeopsError):
    """Apply stopped part-way; the message says what is live and how to converge."""


@dataclass
class ApplyResult:
    phases: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _role(app: AppConfig) -> str:
    return str((app.get("args") or {}).get(MARKER_KEY, {}).get("role", ""))


def _phase_configs(
    plan: Plan, live: LiveState
) -> tuple[list[AppConfig], list[AppConfig], list[AppConfig]]:
    """The managed application lists after each phase, computed from what is live now."""
    managed_live = {n: a.config for n, a in live.managed(plan.environment).items()}
    desired = {a["name"]: a for a in plan.desired}
    versions = {n: a for n, a in desired.items() if _role(a) != "router"}
    routers = {n: a for n, a in desired.items() if _role(a) == "router"}
    # 1. start: live apps, with desired versions added or updated; routers as they are live.
    start = {**managed_live, **versions}
    # 2. switch: routers updated or created as well.
    switch = {**start, **routers}
    # 3. clean: only what is desired.
    return list(start.values()), list(switch.values()), list(desired.values())


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
) -> ApplyResult:
    """Apply `plan`; refuse it when the live state has moved since it was made."""
    started = time.monotonic()
    result = ApplyResult()
    live = client.get()
    if check_fresh and live.fingerprint() != plan.live_fingerprint:
        raise Refused(
            "the live Serve state has changed since this plan was made "
            f"(fingerprint {plan.live_fingerprint} -> {live.fingerprint()}); make a new plan"
        )
    if not plan.has_changes:
        log("nothing to apply: live state matches the plan")
        return result
    env = plan.environment
    deadline = started + timeout_s
    start, switch, clean = _phase_configs(plan, live)
    versions = [a["name"] for a in plan.desired if _role(a) != "router"]
    routers = [a["name"] for a in plan.desired if _role(a) == "router"]

    for phase, apps, wait_for in (
        ("start", start, versions),
        ("switch", switch, routers),
        ("clean", clean, []),
    ):
        live = client.get()
        if not _same(apps, live, env):
            log(f"{phase}: writing {len(apps)} managed application(s)")
            client.put(merged_config(live, env, apps), live)
            result.phases.append(phase)
        if wait_for:
            wait_running(client, wait_for, deadline, phase, log)
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
    if phase == "start":
        where = (
            "Routers were not changed: traffic still goes to the versions that served it before."
        )
    else:
        where = "New versions are running; some routers may not have switched yet."
    return (
        f"apply stopped in phase '{phase}': {app} is {status}: {reason}\n"
        f"{where} Fix the cause and run apply again; it converges from the current state."
    )

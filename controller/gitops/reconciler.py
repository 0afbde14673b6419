"""The GitOps controller: one level-triggered, idempotent reconcile pass, and a loop around it.

A pass reads everything it needs (the branch head, its own durable state, live Serve), decides,
acts at most once, records what it did, and says when to look again (`requeue_after`); it never
sleeps. Killed at any point and started again, the next pass reads the same inputs and
converges from there: an apply that completed is not repeated (live already matches, so the plan
is empty), an apply that failed is not attempted again until a new commit or an explicit retry.

    lease -> fetch -> (failed before? skip) -> plan -> no changes: in sync
                                                    -> Git moved, or the desired state did: gate, apply
                                                    -> Git did not move, live did: drift
                                                       (enabled: re-apply; warn: report; disabled)
"""

from __future__ import annotations

import datetime as dt
import getpass
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from controller.cluster.render import AppConfig
from controller.cluster.serve_api import ServeAPI
from controller.cluster.serving_code import INSTALLED, ServingCode
from controller.cluster.status import deployment_statuses
from controller.errors import (
    BadInput,
    Refused,
    ServeopsError,
    StalePlan,
    Unreachable,
    ValidationFailed,
)
from controller.gitops.notify import Event, EventKind, NoNotifier, Notifier
from controller.gitops.state import EnvironmentState, PassStart, StateStore
from controller.gitops.telemetry import METRICS, PassFigures
from controller.policy.gate import gate
from controller.policy.loader import PolicyInvalid
from controller.policy.report import refusal
from controller.registry.mlflow import Registry
from controller.rollout.engine import Limits, RolloutState
from controller.rollout.hooks import HookRunner, Hooks
from controller.rollout.progress import RolloutPass, plan_with_rollouts
from controller.rollout.router_metrics import MetricsSource, RayMetricsSource
from controller.source.git import open_repo, resolve_commit
from controller.source.repository import RepoSource
from controller.sync.apply import apply_plan
from controller.sync.plan import Plan, comparable
from controller.sync.read import Target

log = logging.getLogger("serveops.controller")

DriftMode = Literal["enabled", "warn", "disabled"]
DRIFT_MODES: tuple[DriftMode, ...] = ("enabled", "warn", "disabled")

Outcome = Literal[
    "applied",  # a new revision (or a new desired state) was applied
    "healed",  # drift found, Git's state restored (drift mode enabled)
    "in_sync",  # nothing to do
    "drift",  # drift found and reported (drift mode warn)
    "ignored",  # drift found, drift mode disabled
    "failed",  # planning or applying failed
    "refused",  # the policy gate refused the revision
    "skipped",  # the revision failed before and is not attempted again
    "aborted",  # a rollout aborted (now, or earlier and still holds its deployment back)
    "waiting",  # another controller holds the environment's lease
]
IN_SYNC: frozenset[Outcome] = frozenset({"applied", "healed", "in_sync", "ignored"})
# After a stale plan (Serve moved between plan and apply): the next pass comes this soon.
CONFLICT_REQUEUE_S = 0.5


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class ControllerSettings:
    environment: str
    interval_s: float = 10.0
    drift: DriftMode = "warn"
    prune: bool = False
    allow_empty: bool = False  # with prune: may an empty desired state delete everything?
    apply_timeout_s: float = 300.0
    lease_ttl_s: float | None = None  # default: three intervals, at least 30 s
    actor: str = ""
    # Rollouts: the progress deadline is apply_timeout_s (a candidate must run by then).
    inconclusive_limit: int = 3  # inconclusive analyses in a row before a rollout pauses
    serve_url: str | None = None  # Serve's HTTP proxy for smoke hooks (default: dashboard host)
    serving_code: ServingCode = INSTALLED  # where the nodes get serveops' serving code

    @property
    def lease_ttl(self) -> float:
        return self.lease_ttl_s if self.lease_ttl_s is not None else max(30.0, 3 * self.interval_s)


@dataclass(frozen=True)
class PassResult:
    environment: str
    outcome: Outcome
    message: str
    requeue_after: float  # seconds until the next pass; the caller sleeps, never the pass
    commit: str | None = None
    pass_id: int | None = None  # the audit row, when one was written
    plan: Plan | None = None
    bad_input: bool = False

    @property
    def in_sync(self) -> bool:
        return self.outcome in IN_SYNC

    @property
    def exit_code(self) -> int:
        """0 when Serve holds Git's state after the pass; 2 for bad input; 1 otherwise."""
        if self.in_sync:
            return 0
        return 2 if self.bad_input else 1


class Controller:
    """Reconciles one environment of one repository with one Serve cluster."""

    def __init__(
        self,
        source: RepoSource,
        client: ServeAPI,
        store: StateStore,
        registry: Callable[[], Registry],
        settings: ControllerSettings,
        *,
        notifier: Notifier | None = None,
        holder: str | None = None,
        hooks: HookRunner | None = None,
        metrics: MetricsSource | None = None,
    ) -> None:
        self.source = source
        self.client = client
        self.store = store
        # A fresh registry per pass: an alias that moved is seen at the next pass.
        self._registry = registry
        self.settings = settings
        self.actor = settings.actor or default_actor()
        self.notifier = notifier or NoNotifier()
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        # Router metrics for rollout analysis; scraped only when an analysis window is due.
        self.metrics = metrics if metrics is not None else RayMetricsSource(client.address)
        # Rollout hooks; commands run in the repository's work tree (a mirror has none).
        self.hooks = hooks or Hooks(cwd=None if source.mirror else source.path)

    @property
    def environment(self) -> str:
        return self.settings.environment

    def release(self) -> None:
        """Give the environment's lease up (on a clean shutdown)."""
        self.store.release_lease(self.environment, self.holder)

    # --- the pass -------------------------------------------------------------------------------

    def reconcile_once(self, *, retry: bool = False, trigger: str = "poll") -> PassResult:
        """One level-triggered pass. `retry` attempts a revision that failed before again.
        Its duration, outcome, sync statuses and rollouts go to the controller's metrics."""
        began = time.monotonic()
        try:
            result = self._reconcile(retry=retry, trigger=trigger)
        except Exception:
            self._record(None, time.monotonic() - began)
            raise
        self._record(result, time.monotonic() - began)
        return result

    def _record(self, result: PassResult | None, seconds: float) -> None:
        """Metrics of a pass (None: it crashed). Never fails the pass."""
        env = self.environment
        try:
            outcome, plan = (result.outcome, result.plan) if result else ("crashed", None)
            rollouts = {name: r.state for name, r in self.store.rollouts(env).items()}
            METRICS.record_pass(PassFigures(env, outcome, seconds, time.time(), plan), rollouts)
        except Exception:
            log.exception("recording the metrics of a pass on %r failed", env)

    def _reconcile(self, *, retry: bool, trigger: str) -> PassResult:
        env = self.environment
        started = self.store.now()
        lease = self.store.acquire_lease(env, self.holder, self.settings.lease_ttl)
        if not lease.acquired:
            other = lease.lease
            return self._result(
                "waiting",
                f"environment {env!r} is held by controller {other.holder} until "
                f"{other.expires_at:%Y-%m-%d %H:%M:%S} UTC; waiting for its lease to end",
            )
        if self.store.interrupt_running(env):
            log.warning("%s: the previous controller stopped during an apply; converging", env)
        start = PassStart(env, self.source.display, self.source.followed, None, self.actor, trigger)
        try:
            head = self.source.head()
        except ServeopsError as err:
            return self._failed(start, started, err, revision_failed=False)
        start = replace(start, commit=head)

        state = self.store.environment(env)
        if state.last_failed_commit == head:
            if not retry:
                return self._skipped(state, head)
            self.store.clear_failed(env)

        registry = self._registry()
        try:
            plan, rollouts = plan_with_rollouts(
                Target(str(self.source.path), head, env),
                self.client,
                registry,
                self.store,
                metrics=self.metrics,
                limits=Limits(
                    progress_deadline_s=self.settings.apply_timeout_s,
                    inconclusive_limit=self.settings.inconclusive_limit,
                ),
                now=self.store.now(),
                prune=self.settings.prune,
                retry=retry,
                hooks=self.hooks,
                serve_url=self.settings.serve_url,
                serving_code=self.settings.serving_code,
            )
            self._check_not_emptying(plan)
        except ServeopsError as err:
            return self._failed(start, started, err, revision_failed=_revision_fault(err))
        start = replace(start, plan=plan)
        # Rollout decisions are persisted before the plan they shaped is applied: killed in
        # between, the next pass renders the same weights from the same state.
        rollouts.save(self.store)
        result = self._converge(start, started, plan, state, registry, rollouts)
        return self._with_rollouts(start, started, result, rollouts)

    def _converge(
        self,
        start: PassStart,
        started: dt.datetime,
        plan: Plan,
        state: EnvironmentState,
        registry: Registry,
        rollouts: RolloutPass,
    ) -> PassResult:
        env, head = self.environment, plan.source.commit

        if not plan.has_changes:
            if state.last_applied_commit != head or state.last_applied_plan is None:
                self.store.mark_applied(env, head, plan)  # Serve already holds it
            elif state.drift_fingerprint is not None:
                self.store.set_drift_fingerprint(env, None)  # drift went away
            return self._result(
                "in_sync", f"{env!r} is in sync with {head[:12]}", commit=head, plan=plan
            )

        last = state.last_applied_plan
        if state.last_applied_commit == head and last is not None and same_desired(last, plan):
            return self._drift(start, started, plan, state)
        return self._apply(
            start,
            started,
            plan,
            state,
            registry,
            healing=False,
            no_wait=frozenset(rollouts.starting),
            aborted=rollouts.aborted,
        )

    def _with_rollouts(
        self, start: PassStart, started: dt.datetime, result: PassResult, rollouts: RolloutPass
    ) -> PassResult:
        """The pass's result, with what its rollouts did and when they need the next pass.

        A pass in which a rollout aborted reports `aborted` (exit 1), and so does every later
        pass while an aborted rollout holds its deployment off Git's state, unless the pass
        failed in another way."""
        for aborted in rollouts.aborted:
            self._notify("rollout_aborted", aborted.commit, aborted_text(aborted))
        self._watch_health(result.commit, rollouts)
        outcome, message, pass_id = result.outcome, result.message, result.pass_id
        if rollouts.messages:
            message = f"{message}; rollouts: {'; '.join(rollouts.messages)}"
        if result.in_sync and rollouts.aborted:
            # The abort needed no write (its candidate was already gone): record it all the same.
            outcome = "aborted"
            message = f"{'; '.join(aborted_text(a) for a in rollouts.aborted)}; {message}"
            pass_id, _ = self.store.record_pass(start, "aborted", message, started)
        elif result.in_sync and rollouts.held:
            outcome = "aborted"
            message = f"{'; '.join(held_text(h) for h in rollouts.held)}; {message}"
        return replace(
            result,
            outcome=outcome,
            message=message,
            pass_id=pass_id,
            requeue_after=min(result.requeue_after, rollouts.requeue_after),
        )

    def _watch_health(self, commit: str | None, rollouts: RolloutPass) -> None:
        """Notify `degraded` once per deployment entering the state: an application that cannot
        serve (seen in the live state the pass read) or a rollout aborted by this pass."""
        if rollouts.live is None:
            return
        now = {
            row.name: row.message
            for row in deployment_statuses(rollouts.live, self.environment)
            if row.health == "Degraded"
        }
        for aborted in rollouts.aborted:
            now[aborted.deployment] = aborted_text(aborted)
        before = self.store.degraded(self.environment)
        for name in sorted(now.keys() - before.keys()):
            self._notify("degraded", commit, f"{name} is Degraded: {now[name]}")
        if now != before:
            self.store.set_degraded(self.environment, now)

    def _drift(
        self, start: PassStart, started: dt.datetime, plan: Plan, state: EnvironmentState
    ) -> PassResult:
        """Git did not move and neither did the desired state: someone changed Serve."""
        head = plan.source.commit
        what = f"live Serve differs from {head[:12]}, applied last: {drift_summary(plan)}"
        mode = self.settings.drift
        if mode == "disabled":
            return self._result(
                "ignored", f"{what} (drift detection is disabled)", commit=head, plan=plan
            )
        if mode == "enabled":
            # No gate: the revision passed it when it was applied, and healing restores exactly
            # the desired state that was approved then (same_desired checked that).
            return self._apply(start, started, plan, state, None, healing=True, drift=what)
        pass_id = None
        if state.drift_fingerprint != plan.live_fingerprint:  # report each new drift once
            pass_id, _ = self.store.record_pass(start, "drift", what, started)
            self.store.set_drift_fingerprint(self.environment, plan.live_fingerprint)
            self._notify("drift_detected", head, f"{what}. Drift mode is warn: not restored.")
        return self._result(
            "drift",
            f"{what} (drift mode warn: not restored)",
            commit=head,
            plan=plan,
            pass_id=pass_id,
        )

    def _apply(
        self,
        start: PassStart,
        started: dt.datetime,
        plan: Plan,
        state: EnvironmentState,
        registry: Registry | None,
        *,
        healing: bool,
        drift: str = "",
        no_wait: frozenset[str] = frozenset(),
        aborted: list[RolloutState] | None = None,
    ) -> PassResult:
        env, head = self.environment, plan.source.commit
        if not healing:
            assert registry is not None
            try:
                verdict = gate(
                    self.source.path,
                    head,
                    env,
                    registry=registry,
                    base=self._known_commit(state.last_applied_commit),
                )
            except ServeopsError as err:
                return self._failed(start, started, err, revision_failed=_revision_fault(err))
            if not verdict.allowed:
                message = refusal(verdict)
                pass_id, _ = self.store.record_pass(start, "refused", message, started)
                self.store.mark_failed(env, head, message)
                self._notify("sync_failed", head, message)
                return self._result("refused", message, commit=head, plan=plan, pass_id=pass_id)

        pass_id = self.store.begin_pass(start)
        # The lease must outlast the apply, which waits for new versions to run.
        self.store.acquire_lease(
            env, self.holder, self.settings.lease_ttl + self.settings.apply_timeout_s
        )
        try:
            result = apply_plan(
                plan,
                self.client,
                timeout_s=self.settings.apply_timeout_s,
                log=log.info,
                no_wait=no_wait,
            )
        except StalePlan as err:
            # Live moved since planning (someone else wrote to Serve): a conflict, not the
            # revision's fault. Nothing was written; plan again at once, as controller-runtime
            # requeues on a conflict.
            self.store.finish_pass(pass_id, "failed", err.message)
            conflict = self._result("failed", err.message, commit=head, plan=plan, pass_id=pass_id)
            return replace(conflict, requeue_after=CONFLICT_REQUEUE_S)
        except ServeopsError as err:
            self.store.finish_pass(pass_id, "failed", err.message)
            # Serve down, or our own configuration: not the revision's fault, so retried.
            if not isinstance(err, Unreachable) and type(err) is not BadInput:
                self.store.mark_failed(env, head, err.message)
            self._notify("sync_failed", head, err.message)
            return self._result(
                "failed",
                err.message,
                commit=head,
                plan=plan,
                pass_id=pass_id,
                bad_input=isinstance(err, BadInput),
            )
        finally:
            self.store.acquire_lease(env, self.holder, self.settings.lease_ttl)

        outcome: Literal["healed", "applied", "aborted"] = "healed" if healing else "applied"
        changed = ", ".join(sorted(plan.deployments_changed()))
        if healing:
            message = f"{drift}; restored Git's state ({', '.join(result.phases)})"
        elif aborted:
            outcome = "aborted"
            message = (
                f"{'; '.join(aborted_text(a) for a in aborted)}; applied to {env!r}: {changed} "
                f"({', '.join(result.phases)}, {result.seconds:.1f}s)"
            )
        else:
            message = (
                f"applied {head[:12]} to {env!r}: {changed} ({', '.join(result.phases)}, "
                f"{result.seconds:.1f}s)"
            )
        self.store.finish_pass(pass_id, outcome, message)
        self.store.mark_applied(env, head, plan)
        if outcome != "aborted":  # an abort is notified as rollout_aborted (_with_rollouts)
            self._notify("drift_detected" if healing else "deployed", head, message)
        return self._result(outcome, message, commit=head, plan=plan, pass_id=pass_id)

    # --- helpers --------------------------------------------------------------------------------

    def _check_not_emptying(self, plan: Plan) -> None:
        deletes = [a for a in plan.actions if a.op == "delete"]
        if plan.prune and not plan.models and deletes and not self.settings.allow_empty:
            raise Refused(
                f"the desired state of {plan.environment!r} at {plan.source.commit[:12]} is "
                f"empty: pruning would delete all {len(deletes)} managed application(s). "
                "Refusing; allow it explicitly with --allow-empty"
            )

    def _known_commit(self, commit: str | None) -> str | None:
        """The policy gate's base, when the repository still has it (history is rewritten)."""
        if commit is None:
            return None
        try:
            return resolve_commit(open_repo(self.source.path), commit).hexsha
        except BadInput:
            return None

    def _skipped(self, state: EnvironmentState, head: str) -> PassResult:
        when = f"{state.last_failed_at:%Y-%m-%d %H:%M:%S} UTC" if state.last_failed_at else ""
        reason = (state.last_failed_message or "").strip()
        return self._result(
            "skipped",
            f"revision {head[:12]} failed at {when}; it is not attempted again until a new "
            f"commit, or `serveops sync --retry`. It failed with: {reason}",
            commit=head,
        )

    def _failed(
        self, start: PassStart, started: dt.datetime, err: ServeopsError, *, revision_failed: bool
    ) -> PassResult:
        pass_id, new = self.store.record_pass(start, "failed", err.message, started)
        if revision_failed and start.commit is not None:
            self.store.mark_failed(self.environment, start.commit, err.message)
        if new:  # a failure that repeats pass after pass is notified once
            self._notify("sync_failed", start.commit, err.message)
        return self._result(
            "failed",
            err.message,
            commit=start.commit,
            plan=start.plan,
            pass_id=pass_id,
            bad_input=isinstance(err, BadInput),
        )

    def _notify(self, kind: EventKind, commit: str | None, message: str) -> None:
        event = Event(
            kind, self.environment, commit, message, self.store.now(), self.source.display
        )
        try:
            self.notifier.notify(event)
        except Exception:  # a notification never fails a pass
            log.exception("notification %s failed", kind)

    def _result(
        self,
        outcome: Outcome,
        message: str,
        *,
        commit: str | None = None,
        plan: Plan | None = None,
        pass_id: int | None = None,
        bad_input: bool = False,
    ) -> PassResult:
        return PassResult(
            environment=self.environment,
            outcome=outcome,
            message=message,
            requeue_after=self.settings.interval_s,
            commit=commit,
            pass_id=pass_id,
            plan=plan,
            bad_input=bad_input,
        )


def _revision_fault(err: ServeopsError) -> bool:
    """Does this failure (before apply) come from the revision itself, so that retrying the
    same revision cannot help? Invalid files, a model the registry does not have, invalid
    policies, a conflict with someone else's application. Serve or the registry being down, or
    a misconfiguration of the controller (plain BadInput), are retried at the next pass."""
    return isinstance(err, ValidationFailed | PolicyInvalid | Refused)


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


def _desired_apps(plan: Plan) -> dict[str, AppConfig]:
    orphans = {a.app for a in plan.actions if a.op == "orphan"}
    return {a["name"]: comparable(a) for a in plan.desired if a["name"] not in orphans}


def same_desired(a: Plan, b: Plan) -> bool:
    """Do two plans want the same applications? (Bookkeeping and orphans aside.)"""
    return _desired_apps(a) == _desired_apps(b)


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


# --- the loop -----------------------------------------------------------------------------------


class Wakeup:
    """What ends the loop's wait early: a webhook (reconcile now) or a stop request."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._reason: str | None = None
        self.stopped = False

    def wake(self, reason: str = "webhook") -> None:
        with self._cond:
            self._reason = reason
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()

    def wait(self, timeout: float) -> str:
        """Wait up to `timeout` s; return what triggers the next pass (`poll` on a timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: self._reason is not None or self.stopped, timeout)
            reason, self._reason = self._reason or "poll", None
            return reason


def jittered(seconds: float, jitter: float, rng: random.Random) -> float:
    """`seconds` spread by +-`jitter` (a fraction), so controllers do not poll in lockstep."""
    return max(0.0, seconds * (1 + rng.uniform(-jitter, jitter)))


def run_forever(
    controller: Controller,
    wakeup: Wakeup,
    *,
    jitter: float = 0.1,
    rng: random.Random | None = None,
    on_result: Callable[[PassResult], None] = lambda _r: None,
) -> None:
    """Pass, wait `requeue_after` (jittered, cut short by a webhook), repeat until stopped.
    The lease is given up on the way out."""
    rng = rng or random.Random()
    trigger = "poll"
    try:
        while not wakeup.stopped:
            try:
                result = controller.reconcile_once(trigger=trigger)
            except Exception:  # a bug or a broken store: log it, keep the loop alive
                log.exception("reconcile pass on %r crashed", controller.environment)
                delay = controller.settings.interval_s
            else:
                on_result(result)
                delay = result.requeue_after
            if wakeup.stopped:
                break
            trigger = wakeup.wait(jittered(delay, jitter, rng))
    finally:
        controller.release()

"""The GitOps controller: one level-triggered, idempotent reconcile pass per environment.

A pass reads everything it needs, gates, decides, acts at most once, records what it did, and
says when to look again (`requeue_after`); it never sleeps or waits for replicas:

    lease -> read -> gate -> decide -> act -> monitor -> record -> batch
                                               (controller/gitops/<step>.py, monitor/step.py,
                                                batch/step.py)

- read: the branch head's desired state (validated, models resolved), the durable state,
  live Serve.
- gate: a new head is admitted only when the policies allow it; otherwise the pass keeps
  driving what was admitted before (rollouts keep being analysed and aborted).
- decide: rollouts advance one decision; the plan; the intent (apply, continue an apply,
  restore or report drift, nothing).
- act: store the admission and rollout decisions, then write at most one apply phase.
- monitor: judge the due drift windows of the admitted deployments (controller/monitor/step.py).
- record: the audit row, failure marks, notifications, the pass's result.
- batch: batch inference runs of the admitted commit: submit those due, poll those under way.

Killed at any point and started again, the next pass reads the same inputs and converges from
there: an apply under way is continued, an apply that completed is not repeated (live already
matches), a revision that failed is not attempted again until a new commit or an explicit retry.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable

from controller.batch.jobs import JobsAPI
from controller.batch.step import BatchStep, run_batch_step
from controller.cluster.serve_api import ServeAPI
from controller.errors import ServeopsError
from controller.gitops.act import Acted, act
from controller.gitops.context import PassContext
from controller.gitops.decide import Decision, decide
from controller.gitops.gate import Admission, gate, revision_fault
from controller.gitops.git_lease import RefLeases, lease_ref
from controller.gitops.notify import NoNotifier, Notifier
from controller.gitops.outcome import PassResult
from controller.gitops.read import read
from controller.gitops.record import record
from controller.gitops.settings import ControllerSettings, default_actor
from controller.gitops.state import DesiredRevision, PassStart, StateStore
from controller.gitops.telemetry import METRICS, PassFigures
from controller.monitor.propose_step import due as proposal_scan_due
from controller.monitor.propose_step import run_propose_step
from controller.monitor.step import run_monitor_step
from controller.registry.mlflow import Registry
from controller.rollout.hooks import PIN_KEY_FILE, HookRunner, Hooks, load_pin_signer
from controller.rollout.router_metrics import MetricsSource, RayMetricsSource
from controller.source.repository import RepoSource

log = logging.getLogger("serveops.controller")

MAX_BACKOFF_S = 300.0  # the longest wait after passes that crashed in a row


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
        jobs: JobsAPI | None = None,
    ) -> None:
        self.ctx = PassContext(
            source=source,
            client=client,
            store=store,
            registry=registry,
            settings=settings,
            notifier=notifier or NoNotifier(),
            # Rollout hooks; commands run in the repository's work tree (a mirror has none).
            hooks=hooks
            or Hooks(
                cwd=None if source.mirror else source.path,
                allowed=settings.hook_commands,
                # The key routers hold for pinned smoke requests outlives this process.
                signer=load_pin_signer(store.path.parent / PIN_KEY_FILE),
            ),
            # Router metrics for rollout analysis; scraped only when an analysis window is due.
            metrics=metrics if metrics is not None else RayMetricsSource(client.address),
            actor=settings.actor or default_actor(),
            jobs=jobs,
        )
        self._crashes = 0  # passes crashed in a row: the backoff grows with them
        self._proposal_scan: float | None = None  # when the registry was scanned last (epoch s)
        # Who acts, as others see it: the same after a restart (so a restarted controller takes
        # its lease back at once); the instance tells this process from the one it replaced.
        self.holder = holder or f"{socket.gethostname()}:{store.path.resolve()}"
        self.instance = f"{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._held = False  # this instance has held the lease: a newer one supersedes it

    @property
    def environment(self) -> str:
        return self.ctx.environment

    @property
    def settings(self) -> ControllerSettings:
        return self.ctx.settings

    @property
    def store(self) -> StateStore:
        return self.ctx.store

    @property
    def source(self) -> RepoSource:
        return self.ctx.source

    def release(self) -> None:
        """Give the environment's lease up (on a clean shutdown)."""
        self.store.release_lease(self.environment, self.holder, self.instance)
        if self.settings.lease_in_git:
            try:
                RefLeases(self.source).release(self.environment, self.holder, self.instance)
            except ServeopsError as err:  # it expires by itself
                log.warning("%s: could not release the lease in Git: %s", self.environment, err)

    def reconcile_once(self, *, retry: bool = False, trigger: str = "poll") -> PassResult:
        """One level-triggered pass. `retry` attempts a revision that failed before again.
        Its duration, outcome, sync statuses and rollouts go to the controller's metrics."""
        began = time.monotonic()
        try:
            result = self._pass(retry=retry, trigger=trigger)
        except Exception as err:  # a bug, a broken store: recorded, retried with a backoff
            self._metrics(None, time.monotonic() - began)
            return self._crashed(err, trigger)
        self._crashes = 0
        self._metrics(result, time.monotonic() - began)
        return result

    def _crashed(self, err: Exception, trigger: str) -> PassResult:
        log.exception("reconcile pass on %r crashed", self.environment)
        self._crashes += 1
        delay = min(MAX_BACKOFF_S, self.settings.interval_s * 2 ** (self._crashes - 1))
        message = f"the pass crashed: {type(err).__name__}: {err}"
        pass_id = None
        try:  # best effort: the store itself may be what is broken
            start = PassStart(
                self.environment,
                self.source.display,
                self.source.followed,
                None,
                self.ctx.actor,
                trigger,
            )
            pass_id, new = self.store.record_pass(start, "failed", message, self.store.now())
            if new:
                self.ctx.notify("sync_failed", None, message)
        except Exception:
            log.exception("recording the crash of a pass on %r failed", self.environment)
        return PassResult(
            self.environment,
            "failed",
            f"{message}; next pass in {delay:.0f}s",
            delay,
            pass_id=pass_id,
        )

    def _git_lease(self) -> PassResult | None:
        """Take or renew the lease kept in the repository; a PassResult to wait with when
        another controller (another state file) holds it, or it cannot be confirmed."""
        env = self.environment
        try:
            taken = RefLeases(self.source).acquire(
                env, self.holder, self.instance, self.settings.lease_ttl, self.store.now()
            )
        except ServeopsError as err:  # unconfirmed: acting could mean two writers
            return PassResult(
                env,
                "waiting",
                f"cannot renew the lease on {env!r} in Git, so nothing is written: {err.message}",
                self.settings.interval_s,
            )
        if taken.acquired:
            return None
        other = taken.lease
        return PassResult(
            env,
            "waiting",
            f"environment {env!r} is held in Git ({lease_ref(env)}) by controller "
            f"{other.holder} until {other.expires_at:%Y-%m-%d %H:%M:%S} UTC; waiting for its "
            "lease to end (`serveops lease --break --in-git` if it will not come back)",
            self.settings.interval_s,
        )

    def _pass(self, *, retry: bool, trigger: str) -> PassResult:
        ctx, env = self.ctx, self.environment
        lease = self.store.acquire_lease(
            env, self.holder, self.settings.lease_ttl, self.instance, held=self._held
        )
        if lease.superseded:
            return PassResult(
                env,
                "waiting",
                f"this controller ({self.holder}, instance {self.instance}) is superseded by "
                f"instance {lease.lease.instance} of the same identity (lease epoch "
                f"{lease.lease.epoch}: a restart, or `serveops sync` on this state file); it "
                "writes nothing while that one holds the lease",
                self.settings.interval_s,
            )
        if not lease.acquired:
            other = lease.lease
            return PassResult(
                env,
                "waiting",
                f"environment {env!r} is held by controller {other.holder} until "
                f"{other.expires_at:%Y-%m-%d %H:%M:%S} UTC; waiting for its lease to end "
                f"(`serveops lease --break` if it will not come back)",
                self.settings.interval_s,
            )
        if self.settings.lease_in_git:
            waiting = self._git_lease()
            if waiting is not None:
                return waiting
        self._held = True
        state = self.store.environment(env)
        applying = state.applying.pass_id if state.applying else None
        if self.store.interrupt_running(env, keep=applying):
            log.warning("%s: the previous controller stopped during a pass; converging", env)
        obs = read(ctx, state, trigger=trigger, retry=retry)
        if retry and obs.head is not None and obs.state.last_failed_commit == obs.head:
            self.store.clear_failed(env)
        admission = gate(ctx, obs)
        try:
            decision = decide(ctx, obs, admission, retry=retry)
        except ServeopsError as err:
            # The admitted state cannot be planned (e.g. an emptying prune): nothing acts.
            failed = Admission(admission.target, "failed", err.message, err, revision_fault(err))
            result = record(ctx, obs, failed, Decision("nothing"), Acted(None))
            return self._batch(result, admission.target)
        if not self.store.holds_lease(env, self.holder, self.instance):
            # Fencing: the lease changed hands during this pass; whoever has it now acts.
            return PassResult(
                env,
                "waiting",
                f"the lease on {env!r} changed hands during this pass; nothing written",
                self.settings.interval_s,
            )
        acted = act(ctx, obs, admission, decision)
        # Monitoring reads only what was admitted; it never fails or blocks the pass.
        try:
            run_monitor_step(ctx, admission.target, self.store.now())
        except Exception:  # e.g. the store failing under it: the pass goes on and records
            log.exception("%s: the monitoring step failed", env)
        self._propose(admission.target)
        return self._batch(record(ctx, obs, admission, decision, acted), admission.target)

    def _propose(self, admitted: DesiredRevision | None) -> None:
        """Model update automation (`--propose-every`): writes Git, never the cluster; never
        blocks or fails the pass."""
        now = self.store.now().timestamp()
        if not proposal_scan_due(self._proposal_scan, self.settings.propose_every_s, now):
            return
        self._proposal_scan = now
        try:
            step = run_propose_step(self.ctx, admitted)
        except Exception:
            log.exception("%s: the model proposal step failed", self.environment)
            return
        if step.proposed:
            log.info("%s: %s", self.environment, step.summary())

    def _batch(self, result: PassResult, admitted: DesiredRevision | None) -> PassResult:
        """Batch runs of what was admitted: submit those due, poll those under way. Never
        blocks or fails the pass; the next scheduled run shortens its requeue."""
        try:
            step = run_batch_step(self.ctx, admitted, self.store.now())
        except Exception as err:
            log.exception("%s: the batch step failed", self.environment)
            step = BatchStep(errors=[f"{type(err).__name__}: {err}"])
        summary = step.summary()
        if summary:
            message = f"{result.message}; {summary}" if result.message else summary
            result = dataclasses.replace(result, message=message)
        if step.requeue_after is not None and step.requeue_after < result.requeue_after:
            result = dataclasses.replace(result, requeue_after=max(1.0, step.requeue_after))
        return result

    def _metrics(self, result: PassResult | None, seconds: float) -> None:
        """Metrics of a pass (None: it crashed). Never fails the pass."""
        env = self.environment
        try:
            outcome, plan = (result.outcome, result.plan) if result else ("crashed", None)
            rollouts = {name: r.state for name, r in self.store.rollouts(env).items()}
            METRICS.record_pass(PassFigures(env, outcome, seconds, time.time(), plan), rollouts)
        except Exception:
            log.exception("recording the metrics of a pass on %r failed", env)

"""The controller pass's batch step: submit the runs that are due, poll the ones under way.

Level-triggered like the rest of the pass: everything it needs is read again each time (the
admitted commit's batch files, the runs in the store, Ray's jobs), it never waits for a job,
and it says when to look again. Runs are idempotent per (deployment, run key): a run is claimed
in the store before it is submitted, and its Ray submission id is derived from the run and its
attempt, so a controller killed between the claim and the submission submits it once at its
next pass (Ray refuses a second job with the same id). Bounded: at most MAX_SUBMITS runs are
submitted and MAX_POLLS polled per pass; the rest wait for the next pass.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.batch.inputs import check_before_run
from controller.batch.jobs import JobInfo, JobsAPI, JobSpec, RayJobs
from controller.batch.plan import BatchPlan, plan_batches, run_key
from controller.batch.request import RunRequest, parse_result
from controller.cluster.serving_code import INSTALLED, ServingCode
from controller.errors import ServeopsError
from controller.gitops.context import PassContext
from controller.gitops.state import DesiredRevision, StateStore
from controller.gitops.state.batch import BatchRun, RunTrigger
from controller.registry.mlflow import Registry
from controller.source.git import read_snapshot
from controller.spec.batchfile import BatchManifest, load_batches

log = logging.getLogger("serveops.batch")

MAX_SUBMITS = 10
MAX_POLLS = 50
MAX_RESOLVES = 50  # registry look-ups per pass for `on_model_change` deployments
POLL_S = 5.0
ENTRYPOINT = "python -m controller.batch.job"


@dataclass
class BatchStep:
    """What one step did, for the pass's message and its requeue."""

    plan: BatchPlan | None = None
    submitted: list[str] = field(default_factory=list)  # deployment/run key
    finished: list[str] = field(default_factory=list)  # deployment/run key: status
    errors: list[str] = field(default_factory=list)
    requeue_after: float | None = None

    def summary(self) -> str:
        parts = []
        if self.submitted:
            parts.append(f"batch submitted {', '.join(self.submitted)}")
        if self.finished:
            parts.append(f"batch finished {', '.join(self.finished)}")
        if self.errors:
            parts.append(f"batch errors: {'; '.join(self.errors)}")
        return "; ".join(parts)


@dataclass(frozen=True)
class BatchEdges:
    """What the step talks to; the controller's in production, fakes in tests."""

    store: StateStore
    jobs: JobsAPI
    registry: Callable[[], Registry]
    environment: str
    serving_code: ServingCode = INSTALLED
    entrypoint: str = ENTRYPOINT
    poll_s: float = POLL_S
    notify: Callable[[BatchRun], None] | None = None  # a run failed or was rejected


@functools.lru_cache(maxsize=8)
def batches_at(repo: str, commit: str, environment: str) -> tuple[BatchManifest, ...]:
    """The batch deployments of an environment at a commit (a commit's files never change)."""
    snapshot = read_snapshot(repo, commit, environment=environment)
    return tuple(load_batches(snapshot.files, environment))


def run_batch_step(
    ctx: PassContext, admitted: DesiredRevision | None, now: dt.datetime
) -> BatchStep:
    """The pass's batch step on what the gate admitted: the batch files of the admitted commit
    (the gate judged them with the rest of the commit), never of a head it refused."""
    if admitted is None:
        return BatchStep()
    batches = list(batches_at(str(ctx.source.path), admitted.commit, ctx.environment))
    if not batches and not ctx.store.active_batch_runs(ctx.environment):
        if ctx.store.batch_since(ctx.environment):  # the last batch file was deleted
            ctx.store.note_batch_plan(ctx.environment, [])
        return BatchStep()
    own: RayJobs | None = None
    jobs: JobsAPI
    if ctx.jobs is None:
        jobs = own = RayJobs(ctx.client.address)
    else:
        jobs = ctx.jobs
    edges = BatchEdges(
        store=ctx.store,
        jobs=jobs,
        registry=ctx.registry,
        environment=ctx.environment,
        serving_code=ctx.settings.serving_code,
        poll_s=ctx.settings.interval_s,
        notify=lambda run: ctx.notify(
            "batch_failed",
            run.commit,
            f"batch {run.deployment} run {run.run_key} {run.status}: {run.message}",
        ),
    )
    try:
        return batch_step(edges, batches, admitted.commit, now)
    finally:
        if own is not None:
            own.close()


def batch_step(
    edges: BatchEdges, batches: list[BatchManifest], commit: str, now: dt.datetime
) -> BatchStep:
    """Poll the runs under way, then submit the runs due at `now` of the admitted `batches`
    (read from the admitted `commit`). Never raises for one run's failure: it is recorded on
    the run, and the step goes on with the others."""
    store, env = edges.store, edges.environment
    step = BatchStep()
    by_name = {b.name: b for b in batches}
    for run in store.active_batch_runs(env)[:MAX_POLLS]:
        try:
            done = poll(edges, run, by_name.get(run.deployment), now)
        except ServeopsError as err:
            step.errors.append(f"{run.deployment}/{run.run_key}: {err.message}")
            continue
        if not done.active:
            step.finished.append(f"{run.deployment}/{run.run_key}: {done.status}")
    since = store.batch_seen(env, sorted(by_name))
    plan = plan_batches(
        env,
        [b.batch for b in batches],
        now=now,
        since=since,
        latest=store.latest_batch_runs(env),
        active=store.active_batch_runs(env),
        promoted=store.promoted_models(env),
        resolved=_resolve_followed(edges, batches, step),
        last=store.last_batch_runs(env),
    )
    step.plan = plan
    store.note_batch_plan(env, [(i.name, i.model, i.next_at, i.reason) for i in plan.items])
    for item in plan.due[:MAX_SUBMITS]:
        assert item.due is not None
        try:
            started = start_run(edges, by_name[item.name], commit, item.due, item.trigger, now)
        except ServeopsError as err:
            step.errors.append(f"{item.name}: {err.message}")
            continue
        if started is not None:
            step.submitted.append(f"{started.deployment}/{started.run_key}")
    if step.errors:
        for e in step.errors:
            log.warning("%s: %s", env, e)
    step.requeue_after = plan.requeue_after(edges.poll_s)
    return step


def _resolve_followed(
    edges: BatchEdges, batches: list[BatchManifest], step: BatchStep
) -> dict[str, str]:
    """The version each `on_model_change` deployment's model resolves to now (at most
    MAX_RESOLVES per pass; one that cannot be resolved is an error of this pass, not a run)."""
    followed = [b for b in batches if b.batch.spec.on_model_change][:MAX_RESOLVES]
    if not followed:
        return {}
    registry = edges.registry()
    resolved = {}
    for b in followed:
        try:
            resolved[b.name] = registry.resolve(b.batch.spec.model).pinned_uri
        except ServeopsError as err:
            step.errors.append(f"{b.name}: {err.message}")
    return resolved


def start_run(
    edges: BatchEdges,
    batch: BatchManifest,
    commit: str,
    scheduled_at: dt.datetime,
    trigger: RunTrigger,
    now: dt.datetime,
) -> BatchRun | None:
    """Claim the run (deployment, scheduled time) and submit its first attempt; None when it
    was claimed before (by this controller before a restart, or another one)."""
    store, spec = edges.store, batch.batch.spec
    registry = edges.registry()
    model = registry.resolve(spec.model)
    # The registry's signature reader (MLflow's; a fixed registry has none).
    signature = getattr(registry, "input_schema", None)
    check_before_run(spec, model.pinned_uri, signature, str(batch.doc.location("spec", "input")))
    previous = store.promoted_models(edges.environment).get(batch.name)
    key = {
        "schedule": run_key(scheduled_at),
        "model-change": f"model-{run_key(now)}",
        "manual": f"manual-{run_key(now)}",
    }[trigger]
    request = RunRequest(
        environment=edges.environment,
        deployment=batch.name,
        run_key=key,
        commit=commit,
        model_uri=model.pinned_uri,
        previous_model_uri=previous,
        tracking_uri=registry.tracking_uri,
        input=spec.input,
        output=spec.output,
        resources=spec.resources,
        promotion=spec.promotion,
    )
    run = BatchRun(
        environment=edges.environment,
        deployment=batch.name,
        run_key=key,
        trigger=trigger,
        scheduled_at=scheduled_at,
        commit=commit,
        model_uri=model.pinned_uri,
        previous_model_uri=previous,
        attempt=0,
        status="pending",
        job_id=None,
        message="",
        rows=None,
        output=None,
        agreement=None,
        created_at=now,
        submitted_at=None,
        finished_at=None,
        request_json=request.model_dump_json(),
    )
    if not store.claim_batch_run(run):
        return None
    log.info(
        "%s: batch %s run %s: submitting (%s)", edges.environment, batch.name, key, model.pinned_uri
    )
    return submit(edges, run, now)


def job_spec(edges: BatchEdges, run: BatchRun) -> JobSpec:
    request = RunRequest.model_validate_json(run.request_json).model_copy(
        update={"attempt": run.attempt}
    )
    env: dict[str, Any] = dict(edges.serving_code.runtime_env())
    env_vars = {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    if request.tracking_uri:
        env_vars["MLFLOW_TRACKING_URI"] = request.tracking_uri
    env["env_vars"] = env_vars
    return JobSpec(
        submission_id=run.submission_id,
        entrypoint=f"{edges.entrypoint} {shlex.quote(request.encode())}",
        runtime_env=env,
        metadata={
            "serveops.batch": f"{run.environment}/{run.deployment}",
            "serveops.run": run.run_key,
            "serveops.commit": run.commit,
        },
    )


def submit(edges: BatchEdges, run: BatchRun, now: dt.datetime) -> BatchRun:
    """Submit the run's current attempt (again: Ray refuses a duplicate id, which is fine)."""
    try:
        edges.jobs.submit(job_spec(edges, run))
    except ServeopsError as err:
        # Left pending: the next pass submits it again (same submission id).
        return edges.store.update_batch_run(run, message=f"submission failed: {err.message}")
    return edges.store.update_batch_run(
        run, status="running", job_id=run.submission_id, submitted_at=now
    )


def poll(
    edges: BatchEdges, run: BatchRun, batch: BatchManifest | None, now: dt.datetime
) -> BatchRun:
    """One look at a run under way: submit a pending one, finish a done one, stop one past its
    timeout, retry a failed attempt while the spec allows."""
    if run.status == "pending":
        return submit(edges, run, now)
    info = edges.jobs.info(run.submission_id)
    spec = batch.batch.spec if batch is not None else None
    if info is None:
        return _attempt_failed(
            edges, run, spec.retries if spec else 0, now, "Ray has no such job (cluster restarted?)"
        )
    if not info.done:
        timeout = spec.timeout_s if spec else None
        started = run.submitted_at or run.created_at
        if timeout is not None and (now - started).total_seconds() > timeout:
            edges.jobs.stop(run.submission_id)
            return _attempt_failed(
                edges,
                run,
                spec.retries if spec else 0,
                now,
                f"timed out after {spec.timeout if spec else ''}",
            )
        return run
    return _finish(edges, run, info, spec.retries if spec else 0, now)


def _finish(
    edges: BatchEdges, run: BatchRun, info: JobInfo, retries: int, now: dt.datetime
) -> BatchRun:
    result = parse_result(edges.jobs.logs(run.submission_id))
    if info.status == "SUCCEEDED" and result is not None and result.status == "succeeded":
        log.info(
            "%s: batch %s run %s succeeded: %s rows",
            run.environment,
            run.deployment,
            run.run_key,
            result.rows,
        )
        return edges.store.update_batch_run(
            run, status="succeeded", rows=result.rows, output=result.output,
            agreement=result.agreement, finished_at=now, message=result.message,
        )  # fmt: skip
    if result is not None and result.status == "rejected":
        log.warning(
            "%s: batch %s run %s rejected: %s",
            run.environment,
            run.deployment,
            run.run_key,
            result.message,
        )
        rejected = edges.store.update_batch_run(
            run,
            status="rejected",
            agreement=result.agreement,
            finished_at=now,
            message=result.message,
        )
        _notify(edges, rejected)
        return rejected
    why = (
        result.message
        if result is not None and result.message
        else f"job {info.status.lower()}: {info.message}"
    )
    return _attempt_failed(edges, run, retries, now, why)


def _attempt_failed(
    edges: BatchEdges, run: BatchRun, retries: int, now: dt.datetime, why: str
) -> BatchRun:
    if run.attempt < retries:
        log.warning(
            "%s: batch %s run %s attempt %d failed (%s); retrying",
            run.environment,
            run.deployment,
            run.run_key,
            run.attempt + 1,
            why,
        )
        again = edges.store.update_batch_run(
            run,
            attempt=run.attempt + 1,
            status="pending",
            job_id=None,
            message=f"attempt {run.attempt + 1} failed: {why}",
        )
        return submit(edges, again, now)
    log.warning("%s: batch %s run %s failed: %s", run.environment, run.deployment, run.run_key, why)
    failed = edges.store.update_batch_run(run, status="failed", finished_at=now, message=why)
    _notify(edges, failed)
    return failed


def _notify(edges: BatchEdges, run: BatchRun) -> None:
    if edges.notify is not None:
        edges.notify(run)

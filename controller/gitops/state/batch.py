"""Batch runs in the store: one row per (environment, deployment, run key), the run key being
the scheduled time (or `manual-<time>`). The row is claimed (inserted) before its job is
submitted, and the job's submission id is derived from the row, so a controller restarted at
any point never submits a run twice: the claim fails, or Ray refuses the same submission id."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from controller.gitops.state.base import StoreBase
from controller.gitops.state.records import iso, parse_time
from controller.redact import redact

BatchStatus = Literal["pending", "running", "succeeded", "failed", "rejected"]
RunTrigger = Literal["schedule", "manual", "model-change"]
ACTIVE: tuple[BatchStatus, ...] = ("pending", "running")
MAX_MESSAGE = 2000
_COLUMNS = (
    "environment, deployment, run_key, trigger, scheduled_at, commit_sha, model_uri, "
    "previous_model_uri, attempt, status, job_id, message, rows, output, agreement, "
    "created_at, submitted_at, finished_at, request_json"
)


@dataclass(frozen=True)
class BatchRun:
    environment: str
    deployment: str
    # 20261202T020000Z for a scheduled run, manual-20261202T153000Z by hand,
    # model-20261202T153000Z for a model change
    run_key: str
    trigger: RunTrigger
    scheduled_at: dt.datetime
    commit: str
    model_uri: str  # models:/<name>/<version>
    previous_model_uri: str | None
    attempt: int
    status: BatchStatus
    job_id: str | None
    message: str
    rows: int | None
    output: str | None
    agreement: float | None
    created_at: dt.datetime
    submitted_at: dt.datetime | None
    finished_at: dt.datetime | None
    request_json: str  # the RunRequest, resubmitted as is on a retry

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def submission_id(self) -> str:
        """The Ray Job's: one per attempt, the same for every controller that tries it."""
        return f"serveops-batch-{self.environment}-{self.deployment}-{self.run_key}-a{self.attempt}"


@dataclass(frozen=True)
class BatchSchedule:
    """A batch deployment of the admitted commit as the last batch step planned it."""

    deployment: str
    since: dt.datetime  # first seen: its schedule counts from then
    model: str | None  # as the spec says
    next_at: dt.datetime | None  # the next scheduled time (None: by hand only)
    plan: str  # what the step decided, e.g. "due at 2026-12-02 02:00 UTC"


def _row(row: tuple[Any, ...]) -> BatchRun:
    (env, dep, key, trig, sched, commit, model, prev, attempt, status, job, msg, rows, out,
     agree, created, submitted, finished, req) = row  # fmt: skip
    return BatchRun(
        env, dep, key, trig, dt.datetime.fromisoformat(sched), commit, model, prev, attempt,
        status, job, msg, rows, out, agree, dt.datetime.fromisoformat(created),
        parse_time(submitted), parse_time(finished), req,
    )  # fmt: skip


class BatchRuns(StoreBase):
    def batch_seen(self, environment: str, names: list[str]) -> dict[str, dt.datetime]:
        """When the controller first saw each batch deployment (recorded now when new): a
        schedule's runs count from then, so a new deployment never runs for the past."""
        now = iso(self.now())
        with self._transaction() as db:
            for name in names:
                db.execute(
                    "INSERT OR IGNORE INTO batch_schedules (environment, deployment, since) "
                    "VALUES (?, ?, ?)",
                    (environment, name, now),
                )
            rows = db.execute(
                "SELECT deployment, since FROM batch_schedules WHERE environment = ?",
                (environment,),
            ).fetchall()
        return {r[0]: dt.datetime.fromisoformat(r[1]) for r in rows if r[0] in set(names)}

    def batch_since(self, environment: str) -> dict[str, dt.datetime]:
        """When the controller first saw each batch deployment (read only)."""
        rows = self._read(
            "SELECT deployment, since FROM batch_schedules WHERE environment = ?", (environment,)
        )
        return {r[0]: dt.datetime.fromisoformat(r[1]) for r in rows}

    def note_batch_plan(
        self, environment: str, planned: list[tuple[str, str, dt.datetime | None, str]]
    ) -> None:
        """Record what the batch step planned for each deployment (name, model, next time,
        decision), and forget deployments no longer in the admitted commit: their runs stay,
        and one added again later counts as new."""
        names = [p[0] for p in planned]
        with self._transaction() as db:
            for name, model, next_at, plan in planned:
                db.execute(
                    "UPDATE batch_schedules SET model = ?, next_at = ?, plan = ? "
                    "WHERE environment = ? AND deployment = ?",
                    (model, iso(next_at), plan[:MAX_MESSAGE], environment, name),
                )
            marks = ", ".join("?" * len(names))
            db.execute(
                f"DELETE FROM batch_schedules WHERE environment = ? AND deployment NOT IN ({marks})",
                (environment, *names),
            )

    def batch_schedules(self, environment: str) -> list[BatchSchedule]:
        rows = self._read(
            "SELECT deployment, since, model, next_at, plan FROM batch_schedules "
            "WHERE environment = ? ORDER BY deployment",
            (environment,),
        )
        return [
            BatchSchedule(
                name, dt.datetime.fromisoformat(since), model, parse_time(nxt), plan or ""
            )
            for name, since, model, nxt, plan in rows
        ]

    def last_batch_runs(self, environment: str) -> dict[str, BatchRun]:
        """Each deployment's newest run, whatever started it."""
        rows = self._read(
            f"SELECT {_COLUMNS} FROM batch_runs AS r WHERE environment = ? AND created_at = "
            "(SELECT MAX(created_at) FROM batch_runs WHERE environment = r.environment AND "
            "deployment = r.deployment)",
            (environment,),
        )
        return {r.deployment: r for r in map(_row, rows)}

    def claim_batch_run(self, run: BatchRun) -> bool:
        """Insert the run unless its (environment, deployment, run key) exists: True when this
        caller claimed it and may submit it."""
        values = (
            run.environment, run.deployment, run.run_key, run.trigger, iso(run.scheduled_at),
            run.commit, run.model_uri, run.previous_model_uri, run.attempt, run.status,
            run.job_id, redact(run.message)[:MAX_MESSAGE], run.rows, run.output, run.agreement,
            iso(run.created_at), iso(run.submitted_at), iso(run.finished_at), run.request_json,
        )  # fmt: skip
        with self._transaction() as db:
            cursor = db.execute(
                f"INSERT OR IGNORE INTO batch_runs ({_COLUMNS}) VALUES ({', '.join('?' * 19)})",
                values,
            )
            return cursor.rowcount == 1

    def update_batch_run(self, run: BatchRun, **changes: Any) -> BatchRun:
        """Store changed fields of a run (status, attempt, job id, message, rows...)."""
        if "message" in changes:
            changes["message"] = redact(str(changes["message"]))[:MAX_MESSAGE]
        new = dataclasses.replace(run, **changes)
        with self._transaction() as db:
            db.execute(
                "UPDATE batch_runs SET attempt = ?, status = ?, job_id = ?, message = ?, rows = ?, "
                "output = ?, agreement = ?, submitted_at = ?, finished_at = ? "
                "WHERE environment = ? AND deployment = ? AND run_key = ?",
                (
                    new.attempt, new.status, new.job_id, new.message, new.rows, new.output,
                    new.agreement, iso(new.submitted_at), iso(new.finished_at),
                    new.environment, new.deployment, new.run_key,
                ),
            )  # fmt: skip
        return new

    def batch_runs(
        self, environment: str, deployment: str | None = None, limit: int = 50
    ) -> list[BatchRun]:
        """Runs, newest scheduled first."""
        query = f"SELECT {_COLUMNS} FROM batch_runs WHERE environment = ?"
        params: tuple[object, ...] = (environment,)
        if deployment is not None:
            query += " AND deployment = ?"
            params += (deployment,)
        rows = self._read(query + " ORDER BY scheduled_at DESC LIMIT ?", (*params, limit))
        return [_row(r) for r in rows]

    def batch_history(self, environment: str | None, limit: int = 20) -> list[BatchRun]:
        """Runs of one environment or all, newest created first (for `serveops history`)."""
        query = f"SELECT {_COLUMNS} FROM batch_runs"
        params: tuple[object, ...] = ()
        if environment is not None:
            query += " WHERE environment = ?"
            params = (environment,)
        rows = self._read(query + " ORDER BY created_at DESC LIMIT ?", (*params, limit))
        return [_row(r) for r in rows]

    def active_batch_runs(self, environment: str) -> list[BatchRun]:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM batch_runs WHERE environment = ? AND status IN (?, ?) "
            "ORDER BY scheduled_at",
            (environment, *ACTIVE),
        )
        return [_row(r) for r in rows]

    def latest_batch_runs(self, environment: str) -> dict[str, BatchRun]:
        """Each deployment's latest scheduled run (the schedule continues from it)."""
        rows = self._read(
            f"SELECT {_COLUMNS} FROM batch_runs AS r WHERE environment = ? AND trigger = "
            "'schedule' AND scheduled_at = (SELECT MAX(scheduled_at) FROM batch_runs WHERE "
            "environment = r.environment AND deployment = r.deployment AND trigger = 'schedule')",
            (environment,),
        )
        return {r.deployment: r for r in map(_row, rows)}

    def promoted_models(self, environment: str) -> dict[str, str]:
        """Each deployment's model version of its latest committed run: the one a new version
        is compared against."""
        rows = self._read(
            "SELECT deployment, model_uri FROM batch_runs AS r WHERE environment = ? AND "
            "status = 'succeeded' AND finished_at = (SELECT MAX(finished_at) FROM batch_runs "
            "WHERE environment = r.environment AND deployment = r.deployment AND "
            "status = 'succeeded')",
            (environment,),
        )
        return {r[0]: r[1] for r in rows}

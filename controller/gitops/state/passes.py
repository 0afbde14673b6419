"""The audit log: one row per pass that changed something or failed.

A failure that repeats unchanged pass after pass (Serve down, say) counts repeats on its row
instead of adding rows. An apply that spans passes keeps one `running` row until it ends.
What a row says (repository URL, message, plan) is redacted first: a registry's or Git's error
quoted in a message never stores a credential (controller/redact.py).
"""

from __future__ import annotations

import datetime as dt

from controller.gitops.state.base import StoreBase
from controller.gitops.state.records import (
    AuditResult,
    PassRecord,
    PassStart,
    iso,
    parse_plan,
    parse_time,
)
from controller.redact import redact
from controller.sync.plan import Plan

_COLUMNS = (
    "id, environment, repo, rev, commit_sha, actor, trigger, result, message, plan_json, "
    "started_at, finished_at, repeats"
)


def _plan_json(plan: Plan | None) -> str | None:
    return redact(plan.model_dump_json()) if plan is not None else None


class PassLog(StoreBase):
    def begin_pass(self, start: PassStart) -> int:
        """A `running` row, written before the pass changes anything."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO passes (environment, repo, rev, commit_sha, actor, trigger, result, "
                "plan_json, started_at) VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?)",
                (
                    start.environment,
                    redact(start.repo),
                    start.rev,
                    start.commit,
                    start.actor,
                    start.trigger,
                    _plan_json(start.plan),
                    iso(self.now()),
                ),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def finish_pass(
        self, pass_id: int, result: AuditResult, message: str = "", plan: Plan | None = None
    ) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE passes SET result = ?, message = ?, finished_at = ?, "
                "plan_json = COALESCE(?, plan_json) WHERE id = ?",
                (
                    result,
                    redact(message),
                    iso(self.now()),
                    _plan_json(plan),
                    pass_id,
                ),
            )

    def record_pass(
        self, start: PassStart, result: AuditResult, message: str, started_at: dt.datetime
    ) -> tuple[int, bool]:
        """A finished pass in one write. Returns (row id, new): a pass that ends exactly like
        the environment's latest row (same commit, result and message) only counts a repeat."""
        finished = iso(self.now())
        message = redact(message)
        with self._transaction() as db:
            last = db.execute(
                "SELECT id, commit_sha, result, message FROM passes WHERE environment = ? "
                "ORDER BY id DESC LIMIT 1",
                (start.environment,),
            ).fetchone()
            if last is not None and tuple(last[1:]) == (start.commit, result, message):
                db.execute(
                    "UPDATE passes SET repeats = repeats + 1, finished_at = ? WHERE id = ?",
                    (finished, last[0]),
                )
                return int(last[0]), False
            cursor = db.execute(
                "INSERT INTO passes (environment, repo, rev, commit_sha, actor, trigger, result, "
                "message, plan_json, started_at, finished_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    start.environment,
                    redact(start.repo),
                    start.rev,
                    start.commit,
                    start.actor,
                    start.trigger,
                    result,
                    message,
                    _plan_json(start.plan),
                    iso(started_at),
                    finished,
                ),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid, True

    def latest_result(self, environment: str) -> AuditResult | None:
        rows = self._read(
            "SELECT result FROM passes WHERE environment = ? ORDER BY id DESC LIMIT 1",
            (environment,),
        )
        return rows[0][0] if rows else None

    def interrupt_running(self, environment: str, keep: int | None = None) -> int:
        """Rows a killed controller left `running` become `interrupted`, except `keep` (an apply
        the next pass continues); returns how many. Call it only while holding the lease."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE passes SET result = 'interrupted', finished_at = ?, "
                "message = 'the controller stopped during this pass; the next pass converged "
                "from the live state' WHERE environment = ? AND result = 'running' AND id != ?",
                (iso(self.now()), environment, keep if keep is not None else -1),
            )
            return cursor.rowcount

    def history(self, environment: str | None = None, limit: int = 20) -> list[PassRecord]:
        """The latest passes, newest first."""
        query = f"SELECT {_COLUMNS} FROM passes"
        params: tuple[object, ...] = ()
        if environment is not None:
            query += " WHERE environment = ?"
            params = (environment,)
        query += " ORDER BY id DESC LIMIT ?"
        return [
            PassRecord(
                id=row[0],
                environment=row[1],
                repo=row[2],
                rev=row[3],
                commit=row[4],
                actor=row[5],
                trigger=row[6],
                result=row[7],
                message=row[8],
                plan=parse_plan(row[9]),
                started_at=dt.datetime.fromisoformat(row[10]),
                finished_at=parse_time(row[11]),
                repeats=row[12],
            )
            for row in self._read(query, (*params, limit))
        ]

"""Retraining requests per drift episode (`monitor_triggers`): one row per (environment,
deployment, target, episode), so a request is sent once per episode however many passes,
windows or controllers see it; a failed one waits `next_attempt` and is tried again.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from controller.gitops.state.base import StoreBase
from controller.gitops.state.records import iso

TriggerStatus = Literal["pending", "sent", "failed"]
KEEP_TRIGGERS = 200  # per deployment


@dataclass(frozen=True)
class Trigger:
    environment: str
    deployment: str
    target: str
    episode: dt.datetime  # when the drift episode opened (its first drifted window's end)
    payload_json: str
    status: TriggerStatus
    attempts: int
    next_attempt: dt.datetime | None
    last_error: str
    updated_at: dt.datetime


_COLUMNS = (
    "environment, deployment, target, episode, payload_json, status, attempts, next_attempt, "
    "last_error, updated_at"
)


def _trigger(row: tuple[object, ...]) -> Trigger:
    env, dep, target, episode, payload, status, attempts, next_at, error, updated = row
    return Trigger(
        str(env),
        str(dep),
        str(target),
        dt.datetime.fromisoformat(str(episode)),
        str(payload),
        status,  # type: ignore[arg-type]
        int(attempts),  # type: ignore[call-overload]
        dt.datetime.fromtimestamp(float(next_at), dt.UTC) if next_at is not None else None,  # type: ignore[arg-type]
        str(error or ""),
        dt.datetime.fromisoformat(str(updated)),
    )


class MonitorTriggers(StoreBase):
    def add_trigger(
        self, environment: str, deployment: str, target: str, episode: dt.datetime, payload: str
    ) -> bool:
        """A pending request for the episode, due now; False when it already exists."""
        now = self.now()
        with self._transaction() as db:
            cur = db.execute(
                f"INSERT OR IGNORE INTO monitor_triggers ({_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, '', ?)",
                (environment, deployment, target, iso(episode), payload, now.timestamp(), iso(now)),
            )
            db.execute(
                "DELETE FROM monitor_triggers WHERE environment = ? AND deployment = ? AND "
                "rowid <= (SELECT rowid FROM monitor_triggers WHERE environment = ? AND "
                "deployment = ? ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
                (environment, deployment, environment, deployment, KEEP_TRIGGERS),
            )
            return cur.rowcount > 0

    def due_triggers(self, environment: str, limit: int = 10) -> list[Trigger]:
        """Pending requests whose next attempt is due, oldest first."""
        rows = self._read(
            f"SELECT {_COLUMNS} FROM monitor_triggers WHERE environment = ? AND "
            "status = 'pending' AND next_attempt <= ? ORDER BY next_attempt LIMIT ?",
            (environment, self.now().timestamp(), limit),
        )
        return [_trigger(r) for r in rows]

    def record_trigger_attempt(
        self,
        trigger: Trigger,
        *,
        status: TriggerStatus,
        error: str = "",
        next_attempt: dt.datetime | None = None,
    ) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE monitor_triggers SET status = ?, attempts = attempts + 1, "
                "next_attempt = ?, last_error = ?, updated_at = ? WHERE environment = ? AND "
                "deployment = ? AND target = ? AND episode = ?",
                (
                    status,
                    next_attempt.timestamp() if next_attempt else None,
                    error,
                    iso(self.now()),
                    trigger.environment,
                    trigger.deployment,
                    trigger.target,
                    iso(trigger.episode),
                ),
            )

    def triggers(
        self, environment: str, deployment: str | None = None, limit: int = 20
    ) -> list[Trigger]:
        """Requests, newest first (of one deployment, or all)."""
        where, params = "environment = ?", [environment]
        if deployment is not None:
            where += " AND deployment = ?"
            params.append(deployment)
        rows = self._read(
            f"SELECT {_COLUMNS} FROM monitor_triggers WHERE {where} ORDER BY rowid DESC LIMIT ?",
            (*params, limit),
        )
        return [_trigger(r) for r in rows]

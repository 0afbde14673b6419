"""Progressive delivery's durable part: each deployment's rollout state, the steps it took
(events) and operators' commands (promote, abort, pause, resume) waiting for the next pass."""

from __future__ import annotations

import datetime as dt

from controller.gitops.state.base import StoreBase
from controller.gitops.state.records import (
    RolloutCommand,
    RolloutEvent,
    RolloutUpdate,
    StoredRollout,
    iso,
)
from controller.redact import redact
from controller.rollout.state import Command, RolloutState


class Rollouts(StoreBase):
    def rollouts(self, environment: str) -> dict[str, StoredRollout]:
        """The latest rollout of each deployment (active or finished)."""
        rows = self._read(
            "SELECT deployment, state_json, baseline_json FROM rollouts WHERE environment = ?",
            (environment,),
        )
        return {row[0]: StoredRollout(RolloutState.from_json(row[1]), row[2]) for row in rows}

    def save_rollouts(
        self, environment: str, updates: list[RolloutUpdate], consumed: list[int] | None = None
    ) -> None:
        """Persist rollout states, their step events and consumed commands, all or nothing."""
        if not updates and not consumed:
            return
        now = iso(self.now())
        with self._transaction() as db:
            for u in updates:
                db.execute(
                    "INSERT INTO rollouts (environment, deployment, state_json, baseline_json, "
                    "updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (environment, deployment) "
                    "DO UPDATE SET state_json = excluded.state_json, "
                    "baseline_json = excluded.baseline_json, updated_at = excluded.updated_at",
                    (environment, u.state.deployment, u.state.to_json(), u.baseline_json, now),
                )
                if u.action != "wait":
                    db.execute(
                        "INSERT INTO rollout_events (environment, deployment, at, commit_sha, "
                        "action, phase, step, weight, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            environment,
                            u.state.deployment,
                            now,
                            u.state.commit,
                            u.action,
                            u.state.phase,
                            u.state.step,
                            u.state.weight,
                            redact(u.message),
                        ),
                    )
            for command_id in consumed or []:
                db.execute(
                    "UPDATE rollout_commands SET consumed_at = ? WHERE id = ?", (now, command_id)
                )

    def add_rollout_command(
        self, environment: str, deployment: str, command: Command, note: str
    ) -> int:
        """An operator's promote/abort/pause/resume; the controller acts on it at its next pass."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO rollout_commands (environment, deployment, command, note, at) "
                "VALUES (?, ?, ?, ?, ?)",
                (environment, deployment, command, redact(note), iso(self.now())),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def pending_rollout_commands(self, environment: str) -> list[RolloutCommand]:
        rows = self._read(
            "SELECT id, deployment, command, note FROM rollout_commands "
            "WHERE environment = ? AND consumed_at IS NULL ORDER BY id",
            (environment,),
        )
        return [RolloutCommand(row[0], row[1], row[2], row[3]) for row in rows]

    def rollout_events(
        self, environment: str, deployment: str | None = None, limit: int = 50
    ) -> list[RolloutEvent]:
        """Steps taken, newest first."""
        query = (
            "SELECT deployment, at, commit_sha, action, phase, step, weight, message "
            "FROM rollout_events WHERE environment = ?"
        )
        params: tuple[object, ...] = (environment,)
        if deployment is not None:
            query += " AND deployment = ?"
            params = (*params, deployment)
        query += " ORDER BY id DESC LIMIT ?"
        return [
            RolloutEvent(r[0], dt.datetime.fromisoformat(r[1]), r[2], r[3], r[4], r[5], r[6], r[7])
            for r in self._read(query, (*params, limit))
        ]

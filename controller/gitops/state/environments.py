"""Per environment, what the controller knows between passes: the desired state the gate
admitted last, an apply in progress, the commit last applied (with its plan, so drift can be
told from a change of desired state) and the commit that last failed (attempted once)."""

from __future__ import annotations

import sqlite3

from controller.gitops.state.base import StoreBase
from controller.gitops.state.records import (
    Applying,
    DesiredRevision,
    EnvironmentState,
    iso,
    parse_plan,
    parse_revision,
    parse_time,
)
from controller.redact import redact
from controller.sync.plan import Plan


class Environments(StoreBase):
    def environment(self, environment: str) -> EnvironmentState:
        rows = self._read(
            "SELECT last_applied_commit, last_applied_at, last_applied_plan, "
            "last_failed_commit, last_failed_at, last_failed_message, drift_fingerprint, "
            "admitted_json, applying_json FROM environments WHERE environment = ?",
            (environment,),
        )
        if not rows:
            return EnvironmentState(environment)
        row = rows[0]
        return EnvironmentState(
            environment=environment,
            last_applied_commit=row[0],
            last_applied_at=parse_time(row[1]),
            last_applied_plan=parse_plan(row[2]),
            last_failed_commit=row[3],
            last_failed_at=parse_time(row[4]),
            last_failed_message=row[5],
            drift_fingerprint=row[6],
            admitted=parse_revision(row[7]) if row[7] else None,
            applying=Applying.from_json(row[8]) if row[8] else None,
        )

    def _upsert(self, db: sqlite3.Connection, environment: str, **values: str | None) -> None:
        db.execute("INSERT OR IGNORE INTO environments (environment) VALUES (?)", (environment,))
        assignments = ", ".join(f"{column} = ?" for column in values)
        db.execute(
            f"UPDATE environments SET {assignments} WHERE environment = ?",
            (*values.values(), environment),
        )

    def admit(self, environment: str, admitted: DesiredRevision) -> None:
        """`admitted` passed the gate: from now on the controller acts on it."""
        with self._transaction() as db:
            self._upsert(db, environment, admitted_json=admitted.to_json())

    def set_applying(self, environment: str, applying: Applying | None) -> None:
        with self._transaction() as db:
            self._upsert(db, environment, applying_json=applying.to_json() if applying else None)

    def mark_applied(self, environment: str, commit: str, plan: Plan) -> None:
        """Serve now holds `plan.desired`, from `commit`; a failure of it is forgotten."""
        with self._transaction() as db:
            self._upsert(
                db,
                environment,
                last_applied_commit=commit,
                last_applied_at=iso(self.now()),
                last_applied_plan=plan.model_dump_json(),
                last_failed_commit=None,
                last_failed_at=None,
                last_failed_message=None,
                drift_fingerprint=None,
                applying_json=None,
            )

    def mark_failed(self, environment: str, commit: str, message: str) -> None:
        """`commit` is not attempted again until a new commit or an explicit retry."""
        with self._transaction() as db:
            self._upsert(
                db,
                environment,
                last_failed_commit=commit,
                last_failed_at=iso(self.now()),
                last_failed_message=redact(message),
            )

    def clear_failed(self, environment: str) -> None:
        with self._transaction() as db:
            self._upsert(
                db,
                environment,
                last_failed_commit=None,
                last_failed_at=None,
                last_failed_message=None,
            )

    def set_drift_fingerprint(self, environment: str, fingerprint: str | None) -> None:
        with self._transaction() as db:
            self._upsert(db, environment, drift_fingerprint=fingerprint)

    # --- health: a `degraded` notification is sent once, when a deployment enters it -----------

    def degraded(self, environment: str) -> dict[str, str]:
        """Deployments last seen Degraded, with the reason then."""
        rows = self._read(
            "SELECT deployment, message FROM degraded WHERE environment = ?", (environment,)
        )
        return {row[0]: row[1] for row in rows}

    def set_degraded(self, environment: str, degraded: dict[str, str]) -> None:
        """Replace the set of Degraded deployments; one that stays keeps its `since`."""
        now = iso(self.now())
        with self._transaction() as db:
            names = list(degraded)
            db.execute(
                "DELETE FROM degraded WHERE environment = ? AND deployment NOT IN "
                f"({', '.join('?' for _ in names)})",
                (environment, *names),
            )
            for name, message in degraded.items():
                db.execute(
                    "INSERT INTO degraded (environment, deployment, message, since) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (environment, deployment) "
                    "DO UPDATE SET message = excluded.message",
                    (environment, name, redact(message), now),
                )

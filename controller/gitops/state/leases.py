"""Who acts on an environment, until when: a second controller sees the holder and waits.

A lease names a holder (the controller's identity, stable across restarts) and the instance
(process) holding it, with an epoch raised whenever the instance changes. A restarted
controller takes its own identity's lease back at once instead of waiting for it to expire;
the process it replaced, if still alive, finds a newer epoch at its next pass and stops
writing (fencing). An operator breaks a stale lease with `serveops lease --break`.
"""

from __future__ import annotations

import datetime as dt
import sqlite3

from controller.gitops.state.base import StoreBase
from controller.gitops.state.records import Lease, LeaseResult, iso, parse_time

_COLUMNS = "holder, acquired_at, expires_at, instance, epoch"


class Leases(StoreBase):
    def acquire_lease(
        self,
        environment: str,
        holder: str,
        ttl_s: float,
        instance: str = "",
        held: bool = False,
    ) -> LeaseResult:
        """Take or renew the environment's lease for `ttl_s` seconds. Another holder's lease
        that has not expired is returned instead. Our own holder's lease is taken over at once
        by an instance that never `held` it (a restart); an instance that held it and finds a
        newer one holding it now is told it was superseded."""
        now = self.now()
        with self._transaction() as db:
            row = _row(db, environment)
            if row is not None:
                current = _lease(environment, row)
                live = row[2] > now.timestamp()
                if row[0] != holder and live:
                    return LeaseResult(False, current)
                if row[0] == holder and row[3] != instance and held and live:
                    return LeaseResult(False, current, superseded=True)
            same = row is not None and row[0] == holder and row[3] == instance
            acquired_at = parse_time(row[1]) or now if same and row is not None else now
            epoch = row[4] if same and row is not None else (row[4] + 1 if row else 1)
            expires = now + dt.timedelta(seconds=ttl_s)
            db.execute(
                "INSERT INTO leases (environment, holder, acquired_at, expires_at, instance, "
                "epoch) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (environment) DO UPDATE SET "
                "holder = excluded.holder, acquired_at = excluded.acquired_at, "
                "expires_at = excluded.expires_at, instance = excluded.instance, "
                "epoch = excluded.epoch",
                (environment, holder, iso(acquired_at), expires.timestamp(), instance, epoch),
            )
        return LeaseResult(True, Lease(environment, holder, acquired_at, expires, instance, epoch))

    def holds_lease(self, environment: str, holder: str, instance: str = "") -> bool:
        """Is the lease still ours, and unexpired? Checked again just before writing to Serve."""
        lease = self.lease(environment)
        return (
            lease is not None
            and (lease.holder, lease.instance) == (holder, instance)
            and lease.expires_at > self.now()
        )

    def release_lease(self, environment: str, holder: str, instance: str = "") -> None:
        with self._transaction() as db:
            db.execute(
                "DELETE FROM leases WHERE environment = ? AND holder = ? AND instance = ?",
                (environment, holder, instance),
            )

    def break_lease(self, environment: str) -> Lease | None:
        """Remove the environment's lease whoever holds it (an operator's command, for a
        holder that will not come back). Returns the lease broken."""
        with self._transaction() as db:
            row = _row(db, environment)
            db.execute("DELETE FROM leases WHERE environment = ?", (environment,))
        return _lease(environment, row) if row is not None else None

    def lease(self, environment: str) -> Lease | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM leases WHERE environment = ?", (environment,))
        return _lease(environment, rows[0]) if rows else None


def _row(db: sqlite3.Connection, environment: str) -> tuple[str, str, float, str, int] | None:
    row = db.execute(
        f"SELECT {_COLUMNS} FROM leases WHERE environment = ?", (environment,)
    ).fetchone()
    return tuple(row) if row is not None else None


def _lease(environment: str, row: tuple[str, str, float, str, int]) -> Lease:
    return Lease(
        environment,
        row[0],
        dt.datetime.fromisoformat(row[1]),
        dt.datetime.fromtimestamp(row[2], dt.UTC),
        row[3],
        row[4],
    )

"""Who acts on an environment, until when: a second controller sees the holder and waits."""

from __future__ import annotations

import datetime as dt

from controller.gitops.state.base import StoreBase
from controller.gitops.state.records import Lease, LeaseResult, iso, parse_time


class Leases(StoreBase):
    def acquire_lease(self, environment: str, holder: str, ttl_s: float) -> LeaseResult:
        """Take or renew the environment's lease for `ttl_s` seconds, unless another holder's
        lease has not expired yet: then return theirs."""
        now = self.now()
        with self._transaction() as db:
            row = db.execute(
                "SELECT holder, acquired_at, expires_at FROM leases WHERE environment = ?",
                (environment,),
            ).fetchone()
            if row is not None and row[0] != holder and row[2] > now.timestamp():
                return LeaseResult(False, _lease(environment, row))
            acquired_at = now if row is None or row[0] != holder else parse_time(row[1]) or now
            expires = now + dt.timedelta(seconds=ttl_s)
            db.execute(
                "INSERT INTO leases (environment, holder, acquired_at, expires_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (environment) DO UPDATE SET "
                "holder = excluded.holder, acquired_at = excluded.acquired_at, "
                "expires_at = excluded.expires_at",
                (environment, holder, iso(acquired_at), expires.timestamp()),
            )
        return LeaseResult(True, Lease(environment, holder, acquired_at, expires))

    def release_lease(self, environment: str, holder: str) -> None:
        with self._transaction() as db:
            db.execute(
                "DELETE FROM leases WHERE environment = ? AND holder = ?", (environment, holder)
            )

    def lease(self, environment: str) -> Lease | None:
        rows = self._read(
            "SELECT holder, acquired_at, expires_at FROM leases WHERE environment = ?",
            (environment,),
        )
        return _lease(environment, rows[0]) if rows else None


def _lease(environment: str, row: tuple[str, str, float]) -> Lease:
    return Lease(
        environment,
        row[0],
        dt.datetime.fromisoformat(row[1]),
        dt.datetime.fromtimestamp(row[2], dt.UTC),
    )

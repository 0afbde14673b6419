"""The controller's durable state and audit store: one SQLite file (WAL mode).

Three tables, all keyed by environment:

- `passes`: the audit log, one row per reconcile pass that changed something or failed
  (revision, plan JSON, actor, result, message, timestamps). A failure that repeats unchanged
  pass after pass (Serve down, say) updates its row's `repeats` instead of adding rows.
- `environments`: what the controller knows between passes: the commit last applied (with the
  plan that applied it, so drift can be told from a change of desired state), and the commit
  that last failed, so a failed revision is attempted once, not every pass.
- `leases`: who acts on an environment, until when. A second controller sees the holder and waits.
- `rollouts`, `rollout_events`, `rollout_commands`: progressive delivery (controller/rollout/progress.py).
- `degraded`: deployments last seen Degraded, so a `degraded` notification is sent once.

Nothing about an environment lives only in memory: a controller killed at any point and started
again (a new process on the same file) reads where it stood. Typed dataclasses go in and out;
JSON is confined to this module.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from controller.errors import BadInput
from controller.rollout.engine import Command, RolloutState
from controller.sync.plan import Plan

Clock = Callable[[], dt.datetime]

# What a pass did. `running` is written before an apply starts; a controller killed during the
# apply leaves it, and the next pass on the environment turns it into `interrupted`.
PassOutcome = Literal[
    "running",
    "interrupted",
    "applied",  # a new revision (or a new desired state) was applied
    "healed",  # drift was found and Git's state restored
    "drift",  # drift was found and reported (drift mode `warn`)
    "refused",  # the policy gate refused the revision
    "failed",  # planning or applying failed
    "aborted",  # a rollout was aborted: traffic back on the stable version
]

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS passes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    environment TEXT NOT NULL,
    repo TEXT NOT NULL,
    rev TEXT NOT NULL,
    commit_sha TEXT,
    actor TEXT NOT NULL,
    trigger TEXT NOT NULL,
    result TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    plan_json TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    repeats INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS passes_by_environment ON passes (environment, id);
CREATE TABLE IF NOT EXISTS environments (
    environment TEXT PRIMARY KEY,
    last_applied_commit TEXT,
    last_applied_at TEXT,
    last_applied_plan TEXT,
    last_failed_commit TEXT,
    last_failed_at TEXT,
    last_failed_message TEXT,
    drift_fingerprint TEXT
);
CREATE TABLE IF NOT EXISTS leases (
    environment TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    acquired_at TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rollouts (
    environment TEXT NOT NULL,
    deployment TEXT NOT NULL,
    state_json TEXT NOT NULL,
    baseline_json TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (environment, deployment)
);
CREATE TABLE IF NOT EXISTS rollout_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    environment TEXT NOT NULL,
    deployment TEXT NOT NULL,
    at TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    action TEXT NOT NULL,
    phase TEXT NOT NULL,
    step INTEGER NOT NULL,
    weight REAL NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS degraded (
    environment TEXT NOT NULL,
    deployment TEXT NOT NULL,
    message TEXT NOT NULL,
    since TEXT NOT NULL,
    PRIMARY KEY (environment, deployment)
);
CREATE TABLE IF NOT EXISTS rollout_commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    environment TEXT NOT NULL,
    deployment TEXT NOT NULL,
    command TEXT NOT NULL,
    note TEXT NOT NULL,
    at TEXT NOT NULL,
    consumed_at TEXT
);
"""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(when: dt.datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def _time(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


def _plan(text: str | None) -> Plan | None:
    return Plan.model_validate_json(text) if text else None


@dataclass(frozen=True)
class PassStart:
    """What is known when a pass begins to act."""

    environment: str
    repo: str  # as the user gave it (credentials removed)
    rev: str  # branch or revision followed
    commit: str | None  # the sha it resolved to; None when Git could not be read
    actor: str
    trigger: str  # poll, webhook, sync
    plan: Plan | None = None


@dataclass(frozen=True)
class PassRecord:
    id: int
    environment: str
    repo: str
    rev: str
    commit: str | None
    actor: str
    trigger: str
    result: PassOutcome
    message: str
    plan: Plan | None
    started_at: dt.datetime
    finished_at: dt.datetime | None
    repeats: int  # how many consecutive passes ended this same way


@dataclass(frozen=True)
class EnvironmentState:
    environment: str
    last_applied_commit: str | None = None
    last_applied_at: dt.datetime | None = None
    last_applied_plan: Plan | None = None  # the plan whose desired state Serve should hold
    last_failed_commit: str | None = None
    last_failed_at: dt.datetime | None = None
    last_failed_message: str | None = None
    drift_fingerprint: str | None = None  # live fingerprint of the drift last reported


@dataclass(frozen=True)
class StoredRollout:
    state: RolloutState
    baseline_json: str | None  # metrics at the start of the current analysis window


@dataclass(frozen=True)
class RolloutCommand:
    id: int
    deployment: str
    command: Command
    note: str  # who asked, and why


@dataclass(frozen=True)
class RolloutEvent:
    deployment: str
    at: dt.datetime
    commit: str
    action: str
    phase: str
    step: int
    weight: float
    message: str


@dataclass(frozen=True)
class RolloutUpdate:
    """What one pass decided for one deployment's rollout, written in one transaction."""

    state: RolloutState
    baseline_json: str | None
    action: str  # the decision's action; `wait` adds no event
    message: str


@dataclass(frozen=True)
class Lease:
    environment: str
    holder: str
    acquired_at: dt.datetime
    expires_at: dt.datetime


@dataclass(frozen=True)
class LeaseResult:
    acquired: bool
    lease: Lease  # ours when acquired, else the other holder's


class StateStore:
    """The SQLite file at `path`; safe to open from several processes at once."""

    def __init__(self, path: str | Path, *, clock: Clock = utcnow) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: every transaction below is explicit (BEGIN IMMEDIATE), so a
            # read-modify-write, like taking a lease, is atomic across processes.
            self._db = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # an audit row survives a power cut
            with self._transaction() as db:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise BadInput(
                        f"{self.path}: state schema {version} is newer than this serveops "
                        f"understands ({SCHEMA_VERSION}); upgrade serveops"
                    )
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as err:
            raise BadInput(f"{self.path}: cannot open the state store: {err}") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def now(self) -> dt.datetime:
        return self._clock()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- per-environment state -----------------------------------------------------------------

    def environment(self, environment: str) -> EnvironmentState:
        with self._lock:
            row = self._db.execute(
                "SELECT last_applied_commit, last_applied_at, last_applied_plan, "
                "last_failed_commit, last_failed_at, last_failed_message, drift_fingerprint "
                "FROM environments WHERE environment = ?",
                (environment,),
            ).fetchone()
        if row is None:
            return EnvironmentState(environment)
        return EnvironmentState(
            environment=environment,
            last_applied_commit=row[0],
            last_applied_at=_time(row[1]),
            last_applied_plan=_plan(row[2]),
            last_failed_commit=row[3],
            last_failed_at=_time(row[4]),
            last_failed_message=row[5],
            drift_fingerprint=row[6],
        )

    def _upsert(self, db: sqlite3.Connection, environment: str, **values: str | None) -> None:
        db.execute("INSERT OR IGNORE INTO environments (environment) VALUES (?)", (environment,))
        assignments = ", ".join(f"{column} = ?" for column in values)
        db.execute(
            f"UPDATE environments SET {assignments} WHERE environment = ?",
            (*values.values(), environment),
        )

    def mark_applied(self, environment: str, commit: str, plan: Plan) -> None:
        """Serve now holds `plan.desired`, from `commit`; a failure of it is forgotten."""
        with self._transaction() as db:
            self._upsert(
                db,
                environment,
                last_applied_commit=commit,
                last_applied_at=_iso(self.now()),
                last_applied_plan=plan.model_dump_json(),
                last_failed_commit=None,
                last_failed_at=None,
                last_failed_message=None,
                drift_fingerprint=None,
            )

    def mark_failed(self, environment: str, commit: str, message: str) -> None:
        """`commit` is not attempted again until a new commit or an explicit retry."""
        with self._transaction() as db:
            self._upsert(
                db,
                environment,
                last_failed_commit=commit,
                last_failed_at=_iso(self.now()),
                last_failed_message=message,
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

    # --- the audit log --------------------------------------------------------------------------

    def begin_pass(self, start: PassStart) -> int:
        """A `running` row, written before the pass changes anything."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO passes (environment, repo, rev, commit_sha, actor, trigger, result, "
                "plan_json, started_at) VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?)",
                (
                    start.environment,
                    start.repo,
                    start.rev,
                    start.commit,
                    start.actor,
                    start.trigger,
                    start.plan.model_dump_json() if start.plan else None,
                    _iso(self.now()),
                ),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def finish_pass(
        self, pass_id: int, result: PassOutcome, message: str = "", plan: Plan | None = None
    ) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE passes SET result = ?, message = ?, finished_at = ?, "
                "plan_json = COALESCE(?, plan_json) WHERE id = ?",
                (
                    result,
                    message,
                    _iso(self.now()),
                    plan.model_dump_json() if plan else None,
                    pass_id,
                ),
            )

    def record_pass(
        self, start: PassStart, result: PassOutcome, message: str, started_at: dt.datetime
    ) -> tuple[int, bool]:
        """A finished pass in one write. Returns (row id, new): a pass that ends exactly like
        the environment's latest row (same commit, result and message) only counts a repeat."""
        finished = _iso(self.now())
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
                    start.repo,
                    start.rev,
                    start.commit,
                    start.actor,
                    start.trigger,
                    result,
                    message,
                    start.plan.model_dump_json() if start.plan else None,
                    _iso(started_at),
                    finished,
                ),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid, True

    def interrupt_running(self, environment: str) -> int:
        """Rows a killed controller left `running` become `interrupted`; returns how many.
        Call it only while holding the environment's lease (no one else can be running)."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE passes SET result = 'interrupted', finished_at = ?, "
                "message = 'the controller stopped during this pass; the next pass converged "
                "from the live state' WHERE environment = ? AND result = 'running'",
                (_iso(self.now()), environment),
            )
            return cursor.rowcount

    def history(self, environment: str | None = None, limit: int = 20) -> list[PassRecord]:
        """The latest passes, newest first."""
        query = (
            "SELECT id, environment, repo, rev, commit_sha, actor, trigger, result, message, "
            "plan_json, started_at, finished_at, repeats FROM passes"
        )
        params: tuple[str | int, ...] = ()
        if environment is not None:
            query += " WHERE environment = ?"
            params = (environment,)
        query += " ORDER BY id DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (*params, limit)).fetchall()
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
                plan=_plan(row[9]),
                started_at=dt.datetime.fromisoformat(row[10]),
                finished_at=_time(row[11]),
                repeats=row[12],
            )
            for row in rows
        ]

    # --- rollouts (progressive delivery) -----------------------------------------------------------

    def rollouts(self, environment: str) -> dict[str, StoredRollout]:
        """The latest rollout of each deployment (active or finished)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT deployment, state_json, baseline_json FROM rollouts WHERE environment = ?",
                (environment,),
            ).fetchall()
        return {row[0]: StoredRollout(RolloutState.from_json(row[1]), row[2]) for row in rows}

    def save_rollouts(
        self, environment: str, updates: list[RolloutUpdate], consumed: list[int] | None = None
    ) -> None:
        """Persist rollout states, their step events and consumed commands, all or nothing."""
        if not updates and not consumed:
            return
        now = _iso(self.now())
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
                            u.message,
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
                (environment, deployment, command, note, _iso(self.now())),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def pending_rollout_commands(self, environment: str) -> list[RolloutCommand]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, deployment, command, note FROM rollout_commands "
                "WHERE environment = ? AND consumed_at IS NULL ORDER BY id",
                (environment,),
            ).fetchall()
        return [RolloutCommand(row[0], row[1], row[2], row[3]) for row in rows]

    def rollout_events(
        self, environment: str, deployment: str | None = None, limit: int = 50
    ) -> list[RolloutEvent]:
        """Steps taken, newest first."""
        query = (
            "SELECT deployment, at, commit_sha, action, phase, step, weight, message "
            "FROM rollout_events WHERE environment = ?"
        )
        params: tuple[str | int, ...] = (environment,)
        if deployment is not None:
            query += " AND deployment = ?"
            params = (*params, deployment)
        query += " ORDER BY id DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (*params, limit)).fetchall()
        return [
            RolloutEvent(r[0], dt.datetime.fromisoformat(r[1]), r[2], r[3], r[4], r[5], r[6], r[7])
            for r in rows
        ]

    # --- health (a `degraded` notification is sent once, when a deployment enters it) ---------

    def degraded(self, environment: str) -> dict[str, str]:
        """Deployments last seen Degraded, with the reason then."""
        with self._lock:
            rows = self._db.execute(
                "SELECT deployment, message FROM degraded WHERE environment = ?", (environment,)
            ).fetchall()
        return {row[0]: row[1] for row in rows}

    def set_degraded(self, environment: str, degraded: dict[str, str]) -> None:
        """Replace the set of Degraded deployments; one that stays keeps its `since`."""
        now = _iso(self.now())
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
                    (environment, name, message, now),
                )

    # --- the lease ------------------------------------------------------------------------------

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
                return LeaseResult(
                    False,
                    Lease(
                        environment,
                        row[0],
                        dt.datetime.fromisoformat(row[1]),
                        dt.datetime.fromtimestamp(row[2], dt.UTC),
                    ),
                )
            acquired_at = now if row is None or row[0] != holder else _time(row[1]) or now
            expires = now + dt.timedelta(seconds=ttl_s)
            db.execute(
                "INSERT INTO leases (environment, holder, acquired_at, expires_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (environment) DO UPDATE SET "
                "holder = excluded.holder, acquired_at = excluded.acquired_at, "
                "expires_at = excluded.expires_at",
                (environment, holder, _iso(acquired_at), expires.timestamp()),
            )
        return LeaseResult(True, Lease(environment, holder, acquired_at, expires))

    def release_lease(self, environment: str, holder: str) -> None:
        with self._transaction() as db:
            db.execute(
                "DELETE FROM leases WHERE environment = ? AND holder = ?", (environment, holder)
            )

    def lease(self, environment: str) -> Lease | None:
        with self._lock:
            row = self._db.execute(
                "SELECT holder, acquired_at, expires_at FROM leases WHERE environment = ?",
                (environment,),
            ).fetchone()
        if row is None:
            return None
        return Lease(
            environment,
            row[0],
            dt.datetime.fromisoformat(row[1]),
            dt.datetime.fromtimestamp(row[2], dt.UTC),
        )

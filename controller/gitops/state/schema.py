"""The state file's tables, and the one place that opens and migrates it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from controller.errors import BadInput

SCHEMA_VERSION = 3
_TABLES = """
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
    drift_fingerprint TEXT,
    admitted_json TEXT,
    applying_json TEXT
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
CREATE TABLE IF NOT EXISTS monitor_reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    environment TEXT NOT NULL,
    deployment TEXT NOT NULL,
    window_end TEXT NOT NULL,
    status TEXT NOT NULL,
    report_json TEXT NOT NULL,
    UNIQUE (environment, deployment, window_end)
);
CREATE TABLE IF NOT EXISTS monitor_episodes (
    environment TEXT NOT NULL,
    deployment TEXT NOT NULL,
    since TEXT NOT NULL,
    PRIMARY KEY (environment, deployment)
);
CREATE TABLE IF NOT EXISTS monitor_triggers (
    environment TEXT NOT NULL,
    deployment TEXT NOT NULL,
    target TEXT NOT NULL,
    episode TEXT NOT NULL,
    payload_json TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL,
    last_error TEXT NOT NULL DEFAULT '',
    updated_at TEXT NOT NULL,
    PRIMARY KEY (environment, deployment, target, episode)
);
CREATE TABLE IF NOT EXISTS model_proposals (
    environment TEXT NOT NULL,
    deployment TEXT NOT NULL,
    proposed TEXT NOT NULL,
    branch TEXT NOT NULL,
    commit_sha TEXT NOT NULL DEFAULT '',
    pull_request TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    at TEXT NOT NULL,
    PRIMARY KEY (environment, deployment, proposed)
);
CREATE TABLE IF NOT EXISTS batch_schedules (
    environment TEXT NOT NULL,
    deployment TEXT NOT NULL,
    since TEXT NOT NULL,
    PRIMARY KEY (environment, deployment)
);
CREATE TABLE IF NOT EXISTS batch_runs (
    environment TEXT NOT NULL,
    deployment TEXT NOT NULL,
    run_key TEXT NOT NULL,
    trigger TEXT NOT NULL,
    scheduled_at TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    model_uri TEXT NOT NULL,
    previous_model_uri TEXT,
    attempt INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    job_id TEXT,
    message TEXT NOT NULL DEFAULT '',
    rows INTEGER,
    output TEXT,
    agreement REAL,
    created_at TEXT NOT NULL,
    submitted_at TEXT,
    finished_at TEXT,
    request_json TEXT NOT NULL,
    PRIMARY KEY (environment, deployment, run_key)
);
CREATE INDEX IF NOT EXISTS batch_runs_by_status ON batch_runs (environment, status);
"""
# Columns added after version 1, for files an older serveops created.
_ADDED_COLUMNS = {
    "environments": ("admitted_json TEXT", "applying_json TEXT"),
    # Fencing: which process of the holder has the lease, and how many times it changed hands.
    "leases": ("instance TEXT NOT NULL DEFAULT ''", "epoch INTEGER NOT NULL DEFAULT 0"),
    # What the last batch step planned, for `serveops status` (which reads no Git).
    "batch_schedules": ("model TEXT", "next_at TEXT", "plan TEXT"),
}


def open_database(path: Path) -> sqlite3.Connection:
    """Open (creating or migrating) the state file. Raises BadInput when it cannot."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: every transaction is explicit (BEGIN IMMEDIATE), so a
        # read-modify-write, like taking a lease, is atomic across processes.
        db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # an audit row survives a power cut
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise BadInput(
                    f"{path}: state schema {version} is newer than this serveops understands "
                    f"({SCHEMA_VERSION}); upgrade serveops"
                )
            for statement in _TABLES.split(";"):
                if statement.strip():
                    db.execute(statement)
            for table, columns in _ADDED_COLUMNS.items():
                have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                for column in columns:
                    if column.split()[0] not in have:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return db
    except sqlite3.DatabaseError as err:
        raise BadInput(f"{path}: cannot open the state store: {err}") from None

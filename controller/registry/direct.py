"""Reading an MLflow registry without importing MLflow.

`import mlflow` plus the first query of a SQLite store (SQLAlchemy engine, schema check) costs
about 2 s, which is most of what `serveops apply` spends before its first write to Serve. A plan
only needs a handful of rows, so two direct readers answer the common cases:

- `RestReader`: a tracking server (`http(s)://`), through MLflow's documented REST API.
- `SqliteReader`: a local `sqlite:///` store, read-only, and only when its schema revision is
  the one of the MLflow version pinned in pyproject.toml (a test checks that this reader and
  MlflowClient return the same records for a store MLflow itself wrote).

Anything else (another schema revision, workspaces, the `latest` pseudo-alias, Databricks,
client certificates) raises `Unsupported`, and the caller falls back to MlflowClient.
"""

from __future__ import annotations

import math
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from controller.redact import redact

# The Alembic head of the SQL store schema of the pinned MLflow (mlflow==3.17.2).
SQLITE_SCHEMA_REVISION = "dc11669786a5"
_DELETED_STAGE = "Deleted_Internal"  # MLflow's marker for a soft-deleted version
_WORKSPACE = "default"


class Unsupported(Exception):
    """This reader cannot answer for this registry; use MlflowClient instead."""


class NotFound(Exception):
    """The registry answered: no such model, version or alias."""


class RegistryDown(Exception):
    """The registry could not be reached or answered with an error."""


@dataclass(frozen=True)
class VersionRow:
    """One model version as the registry stores it (MLflow's ModelVersion, the fields we use)."""

    name: str
    version: str
    status: str
    creation_timestamp: int | None  # milliseconds since the epoch
    description: str
    source: str
    run_id: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunRow:
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]


class DirectReader(Protocol):
    def version(self, name: str, version: str) -> VersionRow: ...

    def alias(self, name: str, alias: str) -> VersionRow: ...

    def run(self, run_id: str) -> RunRow: ...


def direct_reader(tracking_uri: str) -> DirectReader | None:
    """The direct reader for `tracking_uri`, or None when only MlflowClient can read it."""
    if os.environ.get("MLFLOW_ENABLE_WORKSPACES", "").lower() in ("1", "true"):
        return None
    if tracking_uri.startswith("sqlite:///"):
        return SqliteReader(Path(tracking_uri.removeprefix("sqlite:///")))
    if tracking_uri.startswith(("http://", "https://")):
        if any(
            os.environ.get(var)
            for var in (
                "MLFLOW_TRACKING_CLIENT_CERT_PATH",
                "MLFLOW_TRACKING_AUTH",
                "MLFLOW_TRACKING_AWS_SIGV4",
            )
        ):
            return None
        return RestReader(tracking_uri)
    return None


def _check_alias(alias: str) -> None:
    if alias.lower() == "latest":  # MLflow computes it; not stored
        raise Unsupported("the 'latest' alias")


class SqliteReader:
    """Read-only queries of a local MLflow SQL store, for the one schema revision we know."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
                (revision,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
            except sqlite3.Error as err:
                raise Unsupported(f"{self.path}: {err}") from None
            if revision != SQLITE_SCHEMA_REVISION:
                db.close()
                raise Unsupported(f"schema revision {revision}")
            self._db = db
        return self._db

    def _rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as err:  # locked past the timeout, or not the schema we expect
            raise Unsupported(f"{self.path}: {err}") from None

    def version(self, name: str, version: str) -> VersionRow:
        rows = self._rows(
            "SELECT version, status, creation_time, description, source, run_id"
            " FROM model_versions WHERE workspace = ? AND name = ? AND version = ?"
            " AND current_stage != ?",
            _WORKSPACE,
            name,
            int(version),
            _DELETED_STAGE,
        )
        if not rows:
            raise NotFound(name, version)
        number, status, created, description, source, run_id = rows[0]
        tags = self._rows(
            "SELECT key, value FROM model_version_tags"
            " WHERE workspace = ? AND name = ? AND version = ?",
            _WORKSPACE,
            name,
            number,
        )
        aliases = self._rows(
            "SELECT alias FROM registered_model_aliases"
            " WHERE workspace = ? AND name = ? AND version = ? ORDER BY alias",
            _WORKSPACE,
            name,
            number,
        )
        return VersionRow(
            name=name,
            version=str(number),
            status=status or "",
            creation_timestamp=created,
            description=description or "",
            source=source or "",
            run_id=run_id or "",
            tags={str(k): str(v) for k, v in tags},
            aliases=[a for (a,) in aliases],
        )

    def alias(self, name: str, alias: str) -> VersionRow:
        _check_alias(alias)
        rows = self._rows(
            "SELECT version FROM registered_model_aliases"
            " WHERE workspace = ? AND name = ? AND alias = ?",
            _WORKSPACE,
            name,
            alias,
        )
        if not rows:
            raise NotFound(name, alias)
        return self.version(name, str(rows[0][0]))

    def run(self, run_id: str) -> RunRow:
        metrics = self._rows(
            "SELECT key, value, is_nan FROM latest_metrics WHERE run_uuid = ?", run_id
        )
        params = self._rows("SELECT key, value FROM params WHERE run_uuid = ?", run_id)
        tags = self._rows("SELECT key, value FROM tags WHERE run_uuid = ?", run_id)
        return RunRow(
            metrics={k: math.nan if nan else float(v) for k, v, nan in metrics},
            params={str(k): str(v) for k, v in params},
            tags={str(k): str(v) for k, v in tags},
        )


class RestReader:
    """MLflow's REST API (/api/2.0/mlflow/...) on a tracking server, with its auth variables."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._http: httpx.Client | None = None

    @property
    def _client(self) -> httpx.Client:
        if self._http is None:
            auth: tuple[str, str] | None = None
            headers = {}
            if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
                headers["Authorization"] = f"Bearer {token}"
            elif user := os.environ.get("MLFLOW_TRACKING_USERNAME"):
                auth = (user, os.environ.get("MLFLOW_TRACKING_PASSWORD", ""))
            verify: bool | str = True
            if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("1", "true"):
                verify = False
            elif cert := os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
                verify = cert
            timeout = float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "10"))
            self._http = httpx.Client(
                base_url=self.base_url, headers=headers, auth=auth, verify=verify, timeout=timeout
            )
        return self._http

    def _get(self, path: str, **params: str) -> dict[str, Any]:
        try:
            response = self._client.get(f"/api/2.0/mlflow/{path}", params=params)
        except httpx.HTTPError as err:
            raise RegistryDown(redact(str(err)) or type(err).__name__) from None
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {}
        if response.status_code == 200:
            return body
        code = body.get("error_code", "")
        if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise NotFound(params)
        said = redact(str(body.get("message", response.text))[:500])
        raise RegistryDown(f"HTTP {response.status_code}: {said}")

    @staticmethod
    def _row(mv: dict[str, Any]) -> VersionRow:
        created = mv.get("creation_timestamp")
        return VersionRow(
            name=str(mv["name"]),
            version=str(mv["version"]),
            status=str(mv.get("status", "")),
            creation_timestamp=int(created) if created is not None else None,
            description=str(mv.get("description", "")),
            source=str(mv.get("source", "")),
            run_id=str(mv.get("run_id", "")),
            tags={str(t["key"]): str(t.get("value", "")) for t in mv.get("tags", [])},
            aliases=sorted(str(a) for a in mv.get("aliases", [])),
        )

    def version(self, name: str, version: str) -> VersionRow:
        return self._row(
            self._get("model-versions/get", name=name, version=version)["model_version"]
        )

    def alias(self, name: str, alias: str) -> VersionRow:
        _check_alias(alias)
        body = self._get("registered-models/alias", name=name, alias=alias)
        return self._row(body["model_version"])

    def run(self, run_id: str) -> RunRow:
        data = self._get("runs/get", run_id=run_id)["run"].get("data", {})

        def pairs(key: str) -> dict[str, str]:
            return {str(p["key"]): str(p.get("value", "")) for p in data.get(key, [])}

        return RunRow(
            metrics={k: float(v) for k, v in pairs("metrics").items()},
            params=pairs("params"),
            tags=pairs("tags"),
        )

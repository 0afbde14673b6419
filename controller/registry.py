"""Model references to exact registry versions.

An alias (`models:/fraud@champion`) moves; a plan must not. Every reference is resolved to a
version at plan time and the plan records both, so applying it later serves what was reviewed.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from controller.errors import BadInput, ServeopsError, Unreachable
from controller.spec import parse_model_uri


@dataclass(frozen=True)
class ResolvedModel:
    uri: str  # as written in the spec
    name: str
    version: str
    alias: str | None = None

    @property
    def pinned_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class ModelVersionRecord:
    """What the registry knows about one model version: what policies read as `model`."""

    name: str
    version: str
    status: str = "READY"
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    description: str = ""
    source: str = ""
    run_id: str = ""
    creation_time: dt.datetime | None = None  # timezone-aware UTC
    run_metrics: dict[str, float] = field(default_factory=dict)
    run_params: dict[str, str] = field(default_factory=dict)
    run_tags: dict[str, str] = field(default_factory=dict)


def absolute_tracking_uri(uri: str) -> str:
    """`sqlite:///mlflow.db` -> `sqlite:////abs/mlflow.db`: replicas run in other directories."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    if "://" not in uri and not uri.startswith("databricks"):
        return Path(uri).resolve().as_uri()
    return uri


def registry_from_uri(uri: str | None) -> MlflowRegistry:
    """The registry a command was pointed at (--registry-uri / MLFLOW_TRACKING_URI)."""
    if not uri:
        raise BadInput("no MLflow registry: pass --registry-uri or set MLFLOW_TRACKING_URI")
    return MlflowRegistry(absolute_tracking_uri(uri))


class ModelNotFound(ServeopsError):
    """The registry has no such model, version or alias."""


class Registry(Protocol):
    """Resolves `models:/...` URIs; the MLflow registry in production, a fixed table in tests."""

    def resolve(self, uri: str) -> ResolvedModel: ...

    def describe(self, uri: str) -> ModelVersionRecord: ...

    @property
    def tracking_uri(self) -> str | None: ...


class MlflowRegistry:
    """The MLflow model registry at `tracking_uri` (a server URL or a local `sqlite:///` store)."""

    def __init__(self, tracking_uri: str, registry_uri: str | None = None) -> None:
        self._tracking_uri = tracking_uri
        self._registry_uri = registry_uri
        self._client_instance: Any = None
        self._cache: dict[str, ResolvedModel] = {}

    @property
    def _client(self) -> Any:
        # Made on first use: a command that fails earlier (bad revision, bad file) must not
        # touch the registry, nor create a local SQLite store as a side effect.
        if self._client_instance is None:
            # A registry that is down must fail fast, not retry for minutes.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
            from mlflow.tracking import MlflowClient

            if self._tracking_uri.startswith("sqlite:///"):
                db = Path(self._tracking_uri.removeprefix("sqlite:///"))
                if not db.exists():
                    raise BadInput(f"no MLflow store at {db} (from {self._tracking_uri})")
            self._client_instance = MlflowClient(
                tracking_uri=self._tracking_uri, registry_uri=self._registry_uri
            )
        return self._client_instance

    @property
    def tracking_uri(self) -> str | None:
        return self._tracking_uri

    def resolve(self, uri: str) -> ResolvedModel:
        if uri not in self._cache:
            self._cache[uri] = self._resolve(uri)
        return self._cache[uri]

    def _resolve(self, uri: str) -> ResolvedModel:
        from mlflow.exceptions import MlflowException

        name, version, alias = parse_model_uri(uri)
        try:
            if alias is not None:
                mv = self._client.get_model_version_by_alias(name, alias)
            else:
                mv = self._client.get_model_version(name, str(version))
        except MlflowException as err:
            code = getattr(err, "error_code", "")
            if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                what = f"alias {alias!r}" if alias else f"version {version}"
                raise ModelNotFound(
                    f"model {name!r} has no {what} in the registry at {self._tracking_uri}"
                ) from None
            raise Unreachable(f"MLflow registry at {self._tracking_uri}: {err.message}") from None
        except OSError as err:
            raise Unreachable(f"MLflow registry at {self._tracking_uri}: {err}") from None
        if mv.status not in (None, "", "READY"):
            raise ModelNotFound(f"{uri}: model version {mv.version} is {mv.status}, not READY")
        return ResolvedModel(uri=uri, name=name, version=str(mv.version), alias=alias)

    def describe(self, uri: str) -> ModelVersionRecord:
        """The registry record of the version `uri` resolves to, with its run's metrics/params."""
        from mlflow.exceptions import MlflowException

        resolved = self.resolve(uri)
        try:
            mv = self._client.get_model_version(resolved.name, resolved.version)
            metrics: dict[str, float] = {}
            params: dict[str, str] = {}
            run_tags: dict[str, str] = {}
            if mv.run_id:
                run = self._client.get_run(mv.run_id)
                metrics = {str(k): float(v) for k, v in run.data.metrics.items()}
                params = {str(k): str(v) for k, v in run.data.params.items()}
                run_tags = {str(k): str(v) for k, v in run.data.tags.items()}
        except MlflowException as err:
            raise Unreachable(f"MLflow registry at {self._tracking_uri}: {err.message}") from None
        except OSError as err:
            raise Unreachable(f"MLflow registry at {self._tracking_uri}: {err}") from None
        created = (
            dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.UTC)
            if mv.creation_timestamp
            else None
        )
        return ModelVersionRecord(
            name=resolved.name,
            version=resolved.version,
            status=str(mv.status or "READY"),
            aliases=[str(a) for a in (mv.aliases or [])],
            tags={str(k): str(v) for k, v in (mv.tags or {}).items()},
            description=str(mv.description or ""),
            source=str(mv.source or ""),
            run_id=str(mv.run_id or ""),
            creation_time=created,
            run_metrics=metrics,
            run_params=params,
            run_tags=run_tags,
        )


class FixedRegistry:
    """A registry held in memory, for unit tests and benchmarks (never for users).

    `models` maps a model name to its versions and aliases: {"fraud": {"1": "1", "@champion": "1"}}.
    """

    def __init__(
        self,
        models: Mapping[str, Mapping[str, str]],
        tracking_uri: str | None = None,
        records: Mapping[tuple[str, str], ModelVersionRecord] | None = None,
    ) -> None:
        self._models = {name: dict(refs) for name, refs in models.items()}
        self._tracking_uri = tracking_uri
        self._records = dict(records or {})  # (name, version) -> record, for `describe`

    @property
    def tracking_uri(self) -> str | None:
        return self._tracking_uri

    def resolve(self, uri: str) -> ResolvedModel:
        name, version, alias = parse_model_uri(uri)
        key = f"@{alias}" if alias else str(version)
        if name not in self._models:
            raise ModelNotFound(f"model {name!r} is not in the registry")
        if key not in self._models[name]:
            what = f"alias {alias!r}" if alias else f"version {version}"
            raise ModelNotFound(f"model {name!r} has no {what} in the registry")
        return ResolvedModel(uri, name, self._models[name][key], alias)

    def describe(self, uri: str) -> ModelVersionRecord:
        """The record given for the resolved version, or a bare READY one with its aliases."""
        resolved = self.resolve(uri)
        key = (resolved.name, resolved.version)
        if key in self._records:
            return self._records[key]
        aliases = [
            ref[1:]
            for ref, version in self._models[resolved.name].items()
            if ref.startswith("@") and version == resolved.version
        ]
        return ModelVersionRecord(resolved.name, resolved.version, aliases=aliases)

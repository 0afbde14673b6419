"""Model references to exact registry versions.

An alias (`models:/fraud@champion`) moves; a plan must not. Every reference is resolved to a
version at plan time and the plan records both, so applying it later serves what was reviewed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from controller.errors import BadInput, ServeopsError, Unreachable
from controller.redact import redact
from controller.registry.direct import (
    NotFound,
    RegistryDown,
    RunRow,
    Unsupported,
    VersionRow,
    direct_reader,
)
from controller.spec.models import parse_model_uri


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
    """The MLflow model registry at `tracking_uri` (a server URL or a local `sqlite:///` store).

    Reads go through a direct reader (`registry_direct`) where one applies, so a command does
    not pay for importing MLflow; otherwise, or when that reader declines, through MlflowClient.
    """

    def __init__(self, tracking_uri: str, registry_uri: str | None = None) -> None:
        self._tracking_uri = tracking_uri
        self._where = redact(tracking_uri)  # for messages: never the URI's credentials
        self._registry_uri = registry_uri
        self._client_instance: Any = None
        self._direct = direct_reader(tracking_uri) if registry_uri in (None, tracking_uri) else None
        self._cache: dict[str, ResolvedModel] = {}

    def _check_store(self) -> None:
        # A command that fails earlier (bad revision, bad file) must not touch the registry,
        # and a missing local store is an error, never a new empty store made as a side effect.
        if self._tracking_uri.startswith("sqlite:///"):
            db = Path(self._tracking_uri.removeprefix("sqlite:///"))
            if not db.exists():
                raise BadInput(f"no MLflow store at {db} (from {self._where})")

    @property
    def _client(self) -> Any:
        if self._client_instance is None:
            # A registry that is down must fail fast, not retry for minutes.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
            from mlflow.tracking import MlflowClient

            self._check_store()
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

    def input_schema(self, uri: str) -> dict[str, str] | None:
        """The named inputs of a version's logged signature and their MLflow types (`double`,
        `long`, `string`...; None: no named inputs logged). Reads the version's MLmodel file
        only, not the model."""
        from mlflow.artifacts import download_artifacts
        from mlflow.models import Model

        model = self.resolve(uri)
        with (
            self._client_errors(f"{uri}: cannot read the model's signature"),
            tempfile.TemporaryDirectory() as tmp,
        ):
            source = self._client.get_model_version_download_uri(model.name, model.version)
            path = download_artifacts(
                artifact_uri=f"{str(source).rstrip('/')}/MLmodel",
                dst_path=tmp,
                tracking_uri=self._tracking_uri,
                registry_uri=self._registry_uri,
            )
            signature = Model.load(path).signature
        if signature is None or signature.inputs is None or not signature.inputs.has_input_names():
            return None
        return {
            str(col.name): str(getattr(col.type, "name", "other"))
            for col in signature.inputs.inputs
        }

    def _resolve(self, uri: str) -> ResolvedModel:
        name, version, alias = parse_model_uri(uri)
        row = self._version(name, version, alias)
        if row.status not in ("", "READY"):
            raise ModelNotFound(f"{uri}: model version {row.version} is {row.status}, not READY")
        return ResolvedModel(uri=uri, name=name, version=row.version, alias=alias)

    def _version(self, name: str, version: str | None, alias: str | None) -> VersionRow:
        what = f"alias {alias!r}" if alias else f"version {version}"
        missing = f"model {name!r} has no {what} in the registry at {self._where}"
        if self._direct is not None:
            self._check_store()
            try:
                if alias is not None:
                    return self._direct.alias(name, alias)
                return self._direct.version(name, str(version))
            except Unsupported:
                self._direct = None
            except NotFound:
                raise ModelNotFound(missing) from None
            except RegistryDown as err:
                raise Unreachable(f"MLflow registry at {self._where}: {redact(str(err))}") from None
        with self._client_errors(missing):
            if alias is not None:
                mv = self._client.get_model_version_by_alias(name, alias)
            else:
                mv = self._client.get_model_version(name, str(version))
        return VersionRow(
            name=name,
            version=str(mv.version),
            status=str(mv.status or ""),
            creation_timestamp=mv.creation_timestamp,
            description=str(mv.description or ""),
            source=str(mv.source or ""),
            run_id=str(mv.run_id or ""),
            tags={str(k): str(v) for k, v in (mv.tags or {}).items()},
            aliases=sorted(str(a) for a in (mv.aliases or [])),
        )

    def _run(self, run_id: str) -> RunRow:
        if self._direct is not None:
            try:
                return self._direct.run(run_id)
            except Unsupported:
                self._direct = None
            except (NotFound, RegistryDown) as err:
                raise Unreachable(f"MLflow registry at {self._where}: {redact(str(err))}") from None
        with self._client_errors(f"no run {run_id} in {self._where}"):
            data = self._client.get_run(run_id).data
        return RunRow(
            metrics={str(k): float(v) for k, v in data.metrics.items()},
            params={str(k): str(v) for k, v in data.params.items()},
            tags={str(k): str(v) for k, v in data.tags.items()},
        )

    @contextlib.contextmanager
    def _client_errors(self, missing: str) -> Iterator[None]:
        """MlflowClient's exceptions as serveops errors: not found vs unreachable."""
        from mlflow.exceptions import MlflowException

        try:
            yield
        except MlflowException as err:
            code = getattr(err, "error_code", "")
            if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                raise ModelNotFound(missing) from None
            raise Unreachable(f"MLflow registry at {self._where}: {redact(err.message)}") from None
        except OSError as err:
            raise Unreachable(f"MLflow registry at {self._where}: {redact(str(err))}") from None

    def describe(self, uri: str) -> ModelVersionRecord:
        """The registry record of the version `uri` resolves to, with its run's metrics/params."""
        resolved = self.resolve(uri)
        row = self._version(resolved.name, resolved.version, None)
        run = self._run(row.run_id) if row.run_id else RunRow({}, {}, {})
        created = (
            dt.datetime.fromtimestamp(row.creation_timestamp / 1000, dt.UTC)
            if row.creation_timestamp
            else None
        )
        return ModelVersionRecord(
            name=resolved.name,
            version=resolved.version,
            status=row.status or "READY",
            aliases=row.aliases,
            tags=row.tags,
            description=row.description,
            source=row.source,
            run_id=row.run_id,
            creation_time=created,
            run_metrics=run.metrics,
            run_params=run.params,
            run_tags=run.tags,
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

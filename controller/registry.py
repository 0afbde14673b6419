"""Model references to exact registry versions.

An alias (`models:/fraud@champion`) moves; a plan must not. Every reference is resolved to a
version at plan time and the plan records both, so applying it later serves what was reviewed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from controller.errors import ServeopsError, Unreachable
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


class ModelNotFound(ServeopsError):
    """The registry has no such model, version or alias."""


class Registry(Protocol):
    """Resolves `models:/...` URIs; the MLflow registry in production, a fixed table in tests."""

    def resolve(self, uri: str) -> ResolvedModel: ...

    @property
    def tracking_uri(self) -> str | None: ...


class MlflowRegistry:
    """The MLflow model registry at `tracking_uri` (a server URL or a local `sqlite:///` store)."""

    def __init__(self, tracking_uri: str, registry_uri: str | None = None) -> None:
        # A registry that is down must fail fast, not retry for minutes.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        from mlflow.tracking import MlflowClient

        self._tracking_uri = tracking_uri
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
        self._cache: dict[str, ResolvedModel] = {}

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


class FixedRegistry:
    """A registry held in memory, for unit tests and benchmarks (never for users).

    `models` maps a model name to its versions and aliases: {"fraud": {"1": "1", "@champion": "1"}}.
    """

    def __init__(
        self, models: Mapping[str, Mapping[str, str]], tracking_uri: str | None = None
    ) -> None:
        self._models = {name: dict(refs) for name, refs in models.items()}
        self._tracking_uri = tracking_uri

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

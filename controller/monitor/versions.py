"""Which registered version a model update rule selects: the registry scan of `propose` and
of the controller's model update automation (Flux's image policies, in MLflow's terms).

A rule names an explicit version, an alias, a tag, or a metric of the version's run above or
below a threshold (or nothing: the newest READY version). Listing reads the registry with
bounded retries and, for a metric rule, one run per version of the newest MAX_METRIC_RUNS.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.errors import BadInput
from controller.spec.updates import parse_metric_rule

MAX_METRIC_RUNS = 200  # newest READY versions whose run is read for a metric rule
_COMPARE = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
}


@dataclass(frozen=True)
class VersionInfo:
    version: str
    status: str = "READY"
    aliases: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    metrics: tuple[tuple[str, float], ...] = ()  # of the version's run (read for metric rules)

    def metric(self, name: str) -> float | None:
        return next((v for k, v in self.metrics if k == name), None)


@dataclass(frozen=True)
class MetricRule:
    """A version qualifies when its run logged `name` and `value op threshold` holds."""

    name: str
    op: str
    threshold: float

    @classmethod
    def parse(cls, text: str) -> MetricRule:
        """`accuracy>=0.95`, `loss < 0.2` (operators >=, <=, >, <)."""
        try:
            return cls(*parse_metric_rule(text))
        except ValueError as err:
            raise BadInput(str(err)) from None

    def holds(self, version: VersionInfo) -> bool:
        value = version.metric(self.name)
        return value is not None and _COMPARE[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.name} {self.op} {self.threshold:g}"


@dataclass(frozen=True)
class Rule:
    """Which registered version qualifies (at most one of version, alias, tag, metric)."""

    version: str | None = None
    alias: str | None = None
    tag: tuple[str, str] | None = None
    metric: MetricRule | None = None

    def describe(self) -> str:
        if self.version is not None:
            return f"version {self.version}, named by hand"
        if self.alias is not None:
            return f"the version alias @{self.alias} points at"
        if self.tag is not None:
            return f"the newest READY version tagged {self.tag[0]}={self.tag[1]}"
        if self.metric is not None:
            return f"the newest READY version whose run logged {self.metric}"
        return "the newest READY version"

    def select(self, versions: Sequence[VersionInfo]) -> VersionInfo | None:
        ready = [v for v in versions if v.status in ("", "READY")]
        if self.version is not None:
            return next((v for v in ready if v.version == self.version), None)
        if self.alias is not None:
            return next((v for v in ready if self.alias in v.aliases), None)
        if self.tag is not None:
            ready = [v for v in ready if self.tag in v.tags]
        if self.metric is not None:
            ready = [v for v in ready if self.metric.holds(v)]
        return max(ready, key=lambda v: int(v.version), default=None)


def list_versions(tracking_uri: str, name: str, metrics: Sequence[str] = ()) -> list[VersionInfo]:
    """Every version of registered model `name` (MLflow's client, bounded retries); with
    `metrics`, those of each READY version's run too (the newest MAX_METRIC_RUNS versions:
    one request each)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[10:]).exists():
        raise BadInput(f"no MLflow store at {tracking_uri[10:]}")
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        found = client.search_model_versions(f"name='{name}'")
        # Version search leaves aliases out; the registered model has them.
        aliases = dict(client.get_registered_model(name).aliases or {})
    except MlflowException as err:
        raise BadInput(f"MLflow registry: cannot list versions of {name!r}: {err}") from None
    newest = sorted(
        (mv for mv in found if str(mv.status or "READY") == "READY" and mv.run_id),
        key=lambda mv: int(mv.version),
        reverse=True,
    )[:MAX_METRIC_RUNS]
    logged = {str(mv.version): _run_metrics(client, str(mv.run_id), metrics) for mv in newest}
    return [
        VersionInfo(
            str(mv.version),
            str(mv.status or ""),
            tuple(sorted(str(a) for a, v in aliases.items() if str(v) == str(mv.version))),
            tuple(sorted((str(k), str(v)) for k, v in (mv.tags or {}).items())),
            logged.get(str(mv.version), ()) if metrics else (),
        )
        for mv in found
    ]


def _run_metrics(client: Any, run_id: str, names: Sequence[str]) -> tuple[tuple[str, float], ...]:
    """The latest value of each metric in `names` the run logged (none when it is gone)."""
    if not names:
        return ()
    from mlflow.exceptions import MlflowException

    try:
        logged = client.get_run(run_id).data.metrics
    except MlflowException:  # a deleted run: its version does not qualify
        return ()
    return tuple((n, float(logged[n])) for n in names if n in logged)

"""Where `serveops simulate` gets its thresholds, and a note of where each one came from.

Layers, each overriding the one before for the fields it sets:

1. the defaults of `simulator.compare.Thresholds`;
2. a policy file (`--thresholds FILE`, a YAML/JSON mapping of `Thresholds` fields): the
   organisation's rule for a whole run;
3. the deployment's `spec.rollout.analysis`, for the fields it sets explicitly (the p95
   regression and the error-rate increase the rollout would accept live);
4. the deployment's `spec.simulation`.

Deployment files are read at the *base* revision: a change is judged by the thresholds that
were reviewed and merged before it, so it cannot loosen its own. When several changed
deployments set a threshold differently, the strictest value wins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from controller.errors import BadInput
from controller.spec.models import ModelDeployment
from simulator.checks import Thresholds

DEFAULT = "default"


@dataclass(frozen=True)
class SpecSource:
    """A deployment file as it was at the base revision."""

    path: str
    deployment: ModelDeployment


@dataclass(frozen=True)
class _Mapping:
    spec_path: tuple[str, ...]  # under `spec`
    field: str  # of Thresholds
    scale: float  # spec value * scale = threshold value
    explicit_only: bool = False  # only when the spec sets it (not its default)


# Spec fields (percent, as in the rest of the spec) to thresholds (fractions). Order: analysis
# first, so spec.simulation overrides it.
MAPPINGS: tuple[_Mapping, ...] = (
    _Mapping(("rollout", "analysis", "max_p95_regression_pct"), "latency_tolerance", 0.01, True),
    _Mapping(("rollout", "analysis", "max_error_rate_increase"), "max_error_rate_increase", 0.01,
             True),
    _Mapping(("simulation", "latency_tolerance_pct"), "latency_tolerance", 0.01),
    _Mapping(("simulation", "max_error_rate_increase"), "max_error_rate_increase", 0.01),
    _Mapping(("simulation", "min_agreement_pct"), "min_agreement", 0.01),
    _Mapping(("simulation", "max_out_of_tolerance_pct"), "max_out_of_tolerance", 0.01),
    _Mapping(("simulation", "max_output_psi"), "max_output_psi", 1.0),
    _Mapping(("simulation", "max_input_psi"), "max_input_psi", 1.0),
    _Mapping(("simulation", "min_requests"), "min_requests", 1.0),
)  # fmt: skip

# Which of two values is stricter, per threshold a spec can set.
STRICTER: dict[str, Callable[[Any, Any], Any]] = {
    "latency_tolerance": min,
    "max_error_rate_increase": min,
    "min_agreement": max,
    "max_out_of_tolerance": min,
    "max_output_psi": min,
    "max_input_psi": min,
    "min_requests": max,
}


def spec_source(path: str, text: str, revision: str) -> SpecSource:
    """A deployment file's text at `revision`, parsed; its label names both."""
    label = f"{path}@{revision}"
    try:
        return SpecSource(label, ModelDeployment.model_validate(yaml.safe_load(text)))
    except (yaml.YAMLError, ValidationError) as e:
        raise BadInput(
            f"{label}: not a valid deployment, cannot read its thresholds: {e}"
        ) from None


def _spec_value(dep: ModelDeployment, m: _Mapping) -> Any:
    node: Any = dep.spec
    for i, name in enumerate(m.spec_path):
        if node is None:
            return None
        if m.explicit_only and i == len(m.spec_path) - 1 and name not in node.model_fields_set:
            return None
        node = getattr(node, name)
    if node is None:
        return None
    return int(node) if m.field == "min_requests" else round(float(node) * m.scale, 12)


def from_spec(source: SpecSource) -> dict[str, tuple[Any, str]]:
    """Threshold field -> (value, where it is set) for one deployment file."""
    found: dict[str, tuple[Any, str]] = {}
    for m in MAPPINGS:
        value = _spec_value(source.deployment, m)
        if value is not None:
            found[m.field] = (value, f"{source.path}: spec.{'.'.join(m.spec_path)}")
    return found


def load_policy(path: Path) -> dict[str, Any]:
    """A policy file: a mapping of `Thresholds` fields (fractions), validated."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise BadInput(f"{path}: no such thresholds file") from None
    except yaml.YAMLError as e:
        raise BadInput(f"{path}: not YAML: {e}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a mapping of thresholds, e.g. latency_tolerance: 0.1")
    try:
        Thresholds.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise BadInput(f"{path}: field {field}: {first['msg']}") from None
    return data


def resolve(
    specs: Sequence[SpecSource], policy: Path | None = None
) -> tuple[Thresholds, dict[str, str]]:
    """The thresholds of a run and, for every field, where its value came from."""
    values: dict[str, Any] = {}
    sources = {name: DEFAULT for name in Thresholds.model_fields}
    if policy is not None:
        for name, value in load_policy(policy).items():
            values[name] = value
            sources[name] = f"policy file {policy}"
    chosen: dict[str, tuple[Any, str]] = {}
    setters: dict[str, int] = {}
    for spec in specs:
        for name, (value, where) in from_spec(spec).items():
            setters[name] = setters.get(name, 0) + 1
            if name not in chosen or STRICTER[name](chosen[name][0], value) != chosen[name][0]:
                chosen[name] = (value, where)
    for name, (value, where) in chosen.items():
        values[name] = value
        sources[name] = where + (" (the strictest)" if setters[name] > 1 else "")
    return Thresholds.model_validate(values), sources

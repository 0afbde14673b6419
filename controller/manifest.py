"""Deployment files to validated specs, with every problem located at file, line and field.

YAML is composed into nodes first (safe loader only: tags that would build Python objects are
errors), so each value keeps its line; pydantic's error locations are then mapped back to lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import yaml
from pydantic import ValidationError

from controller.errors import Location, Problem, ValidationFailed
from controller.spec import ModelDeployment

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Manifest:
    """A validated deployment file and where it came from."""

    path: str
    deployment: ModelDeployment
    lines: Mapping[Path_, int]

    @property
    def name(self) -> str:
        return self.deployment.metadata.name

    def line_of(self, *field: str | int) -> int | None:
        return _nearest_line(self.lines, field)


def _field_path(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _index(
    node: yaml.Node, path: Path_, lines: dict[Path_, int], problems: list[Problem], file: str
) -> Any:
    """Record the 1-based line of every value and key under `node`; report duplicate keys."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(
                    Problem(
                        Location(file, line, _field_path((*path, key))),
                        f"duplicate key (first set on line {seen[key]})",
                    )
                )
            seen[key] = line
            lines[(*path, key)] = line
            _index(value_node, (*path, key), lines, problems, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*path, i), lines, problems, file)


def _nearest_line(lines: Mapping[Path_, int], loc: Path_) -> int | None:
    # A missing field has no line of its own: point at its closest parent that exists.
    for end in range(len(loc), -1, -1):
        if tuple(loc[:end]) in lines:
            return lines[tuple(loc[:end])]
    return None


def parse_manifest(path: str, text: str) -> tuple[Manifest | None, list[Problem]]:
    """Parse one file. Returns the manifest (None when invalid) and the problems found."""
    loader = yaml.SafeLoader(text)
    lines: dict[Path_, int] = {}
    problems: list[Problem] = []
    try:
        node = loader.get_single_node()
        if node is None:
            return None, [Problem(Location(path, 1), "file is empty")]
        _index(node, (), lines, problems, path)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        return None, [Problem(Location(path, line), f"invalid YAML: {err.problem or err}")]
    except yaml.YAMLError as err:
        return None, [Problem(Location(path), f"invalid YAML: {err}")]
    finally:
        loader.dispose()
    if problems:
        return None, problems
    if not isinstance(data, dict):
        return None, [
            Problem(Location(path, 1), "expected a mapping with apiVersion, kind, metadata, spec")
        ]
    try:
        deployment = ModelDeployment.model_validate(data)
    except ValidationError as err:
        return None, [_problem_from_pydantic(path, lines, e) for e in err.errors()]
    return Manifest(path, deployment, lines), []


def _problem_from_pydantic(path: str, lines: Mapping[Path_, int], error: Any) -> Problem:
    loc: Path_ = tuple(error["loc"])
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    elif error["type"] == "missing":
        message = "required field is missing"
    elif "input" in error and not isinstance(error["input"], dict | list):
        message = f"{message} (got {error['input']!r})"
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return Problem(Location(path, _nearest_line(lines, loc), _field_path(loc) or None), message)


def environment_of(path: str) -> str | None:
    """`deployments/staging/fraud.yaml` -> `staging`."""
    parts = PurePosixPath(path).parts
    if "deployments" in parts:
        i = len(parts) - 1 - parts[::-1].index("deployments")
        if i + 2 < len(parts):
            return parts[i + 1]
    return None


def is_deployment_file(path: str) -> bool:
    return path.endswith((".yaml", ".yml")) and environment_of(path) is not None


def load_manifests(files: Mapping[str, str], environment: str | None = None) -> list[Manifest]:
    """Parse and cross-check deployment files; raise ValidationFailed listing every problem.

    `files` maps a repository-relative path (deployments/<env>/<name>.yaml) to its text. Only
    files of `environment` are loaded when it is given.
    """
    manifests: list[Manifest] = []
    problems: list[Problem] = []
    for path in sorted(files):
        folder_env = environment_of(path)
        if environment is not None and folder_env != environment:
            continue
        manifest, found = parse_manifest(path, files[path])
        problems.extend(found)
        if manifest is None:
            continue
        declared = manifest.deployment.metadata.environment
        if folder_env is not None and declared != folder_env:
            problems.append(
                Problem(
                    Location(
                        path, manifest.line_of("metadata", "environment"), "metadata.environment"
                    ),
                    f"environment {declared!r} does not match the folder deployments/{folder_env}/",
                )
            )
            continue
        manifests.append(manifest)
    problems.extend(_cross_check(manifests))
    if problems:
        raise ValidationFailed(problems)
    return manifests


def _cross_check(manifests: list[Manifest]) -> list[Problem]:
    """Names and routes must be unique within one environment."""
    problems: list[Problem] = []
    for key, field in (("metadata", "name"), ("spec", "route")):
        first: dict[tuple[str, str], Manifest] = {}
        for m in manifests:
            value = getattr(getattr(m.deployment, key), field)
            env = m.deployment.metadata.environment
            if (env, value) in first:
                other = first[(env, value)]
                problems.append(
                    Problem(
                        Location(m.path, m.line_of(key, field), f"{key}.{field}"),
                        f"{field} {value!r} is already used in environment {env!r} by "
                        f"{other.path}:{other.line_of(key, field)}",
                    )
                )
            else:
                first[(env, value)] = m
    return problems

"""Deployment files to validated specs, with every problem located at file, line and field."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from controller.errors import Location, Problem, ValidationFailed
from controller.spec.batchfile import is_batch_doc, validate_batch
from controller.spec.models import ModelDeployment
from controller.spec.yamldoc import YamlDoc, load_yaml, validate_doc


@dataclass(frozen=True)
class Manifest:
    """A validated deployment file and where it came from."""

    doc: YamlDoc
    deployment: ModelDeployment

    @property
    def path(self) -> str:
        return self.doc.path

    @property
    def name(self) -> str:
        return self.deployment.metadata.name

    def line_of(self, *field: str | int) -> int | None:
        return self.doc.line_of(*field)


def parse_manifest(path: str, text: str) -> tuple[Manifest | None, list[Problem]]:
    """Parse one file. Returns the manifest (None when invalid) and the problems found. A
    BatchInference file is validated as one, and gives no manifest."""
    doc, problems = load_yaml(path, text)
    if doc is None:
        return None, problems
    if is_batch_doc(doc):  # another kind: its own problems, and no endpoint (spec/batchfile.py)
        return None, validate_batch(doc)[1]
    deployment, problems = validate_doc(doc, ModelDeployment)
    if deployment is None:
        return None, problems
    return Manifest(doc, deployment), []


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


Parser = Callable[[str, str], tuple[Manifest | None, list[Problem]]]


def load_manifests(
    files: Mapping[str, str], environment: str | None = None, parse: Parser = parse_manifest
) -> list[Manifest]:
    """Parse and cross-check deployment files; raise ValidationFailed listing every problem.

    `files` maps a repository-relative path (deployments/<env>/<name>.yaml) to its text. Only
    files of `environment` are loaded when it is given. `parse` is parse_manifest or gives the
    same results (e.g. computed ahead in several processes).
    """
    manifests: list[Manifest] = []
    problems: list[Problem] = []
    for path in sorted(files):
        folder_env = environment_of(path)
        if environment is not None and folder_env != environment:
            continue
        manifest, found = parse(path, files[path])
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

"""What changed between two revisions, per deployment: the subjects rules are evaluated on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.errors import Problem
from controller.policy.model import ChangeKind
from controller.policy.parallel import parallel_map
from controller.spec.batchfile import BatchManifest, load_batches, may_be_batch, parse_batch
from controller.spec.manifest import (
    Manifest,
    Parser,
    environment_of,
    load_manifests,
    parse_manifest,
)
from controller.spec.yamldoc import field_path


@dataclass(frozen=True)
class Subject:
    """One deployment as a rule sees it: head and base versions and what changed."""

    environment: str
    name: str
    kind: ChangeKind
    head: Manifest | BatchManifest | None
    base: Manifest | BatchManifest | None
    fields: tuple[str, ...]  # changed field paths, e.g. ("spec.model", "spec.replicas")

    @property
    def document_kind(self) -> str:
        """`ModelDeployment` or `BatchInference`: which rules judge it (match.kind)."""
        return "BatchInference" if isinstance(self.manifest, BatchManifest) else "ModelDeployment"

    @property
    def key(self) -> str:
        return f"{self.environment}/{self.name}"

    @property
    def manifest(self) -> Manifest | BatchManifest:
        manifest = self.head or self.base
        assert manifest is not None
        return manifest

    @property
    def path(self) -> str:
        return self.manifest.path

    @property
    def model_changed(self) -> bool:
        return self.kind == "created" or "spec.model" in self.fields

    def as_object(self) -> dict[str, Any] | None:
        return _dump(self.head)

    def as_old_object(self) -> dict[str, Any] | None:
        return _dump(self.base)


def _dump(manifest: Manifest | BatchManifest | None) -> dict[str, Any] | None:
    return None if manifest is None else manifest.deployment.model_dump(mode="json")


def changed_fields(old: Any, new: Any, path: tuple[str | int, ...] = ()) -> list[str]:
    """Leaf field paths whose values differ: `spec.rollout.steps[0].weight`."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out.extend(changed_fields(old.get(key), new.get(key), (*path, key)))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            f
            for i, (a, b) in enumerate(zip(old, new, strict=True))
            for f in changed_fields(a, b, (*path, i))
        ]
    return [] if old == new else [field_path(path)]


ParseResult = tuple[Manifest | None, list[Problem]]
# Below this many files to parse, a second process costs more than it saves (about 0.25 ms
# to parse and validate a file, 10 ms to fork, 0.05 ms to send a parsed file back).
PARALLEL_MIN_FILES = 200


def parse_ahead(
    base_files: Mapping[str, str] | None,
    head_files: Mapping[str, str],
    environment: str | None,
    workers: int,
) -> Parser:
    """A parser answering from the files subjects_between will parse, parsed in `workers`
    processes when there are enough of them; any other file is parsed when asked."""

    def wanted(path: str) -> bool:
        return environment is None or environment_of(path) == environment

    items = [(path, text) for path, text in head_files.items() if wanted(path)]
    items += [
        (path, text)
        for path, text in (base_files or {}).items()
        if environment_of(path) is not None and wanted(path) and head_files.get(path) != text
    ]
    if len(items) < PARALLEL_MIN_FILES:
        workers = 1

    def parse_part(part: range) -> list[ParseResult]:
        return [parse_manifest(*items[i]) for i in part]

    parsed = dict(zip(items, parallel_map(parse_part, len(items), workers), strict=True))

    def parse(path: str, text: str) -> ParseResult:
        found = parsed.get((path, text))
        return found if found is not None else parse_manifest(path, text)

    return parse


def subjects_between(
    base_files: Mapping[str, str] | None,
    head_files: Mapping[str, str],
    *,
    include_unchanged: bool = False,
    environment: str | None = None,
    workers: int = 1,
) -> list[Subject]:
    """Deployments created, updated or deleted from base to head (and unchanged ones too with
    `include_unchanged`). Head files must be valid (ValidationFailed otherwise); a base file
    that no longer parses is ignored: it was never deployable. With no base at all (None),
    every deployment at head is `created`: change-based rules apply (fail closed). `workers` > 1
    parses in that many processes (fork) when there are enough files; the result is the
    same. Only for a process that may fork (the CLI)."""
    parse = parse_ahead(base_files, head_files, environment, workers)
    head: dict[tuple[str, str], Manifest | BatchManifest] = {
        (m.deployment.metadata.environment, m.name): m
        for m in load_manifests(head_files, environment, parse)
    }
    base: dict[tuple[str, str], Manifest | BatchManifest] = {}
    head_by_path = {m.path: m for m in head.values()}
    for path, text in (base_files or {}).items():
        env = environment_of(path)
        if env is None or (environment is not None and env != environment):
            continue
        if head_files.get(path) == text and path in head_by_path:
            m: Manifest | BatchManifest | None = head_by_path[path]  # same bytes: no re-parse
        else:
            m, _ = parse(path, text)
        if m is not None and m.deployment.metadata.environment == env:
            base[(env, m.name)] = m
    subjects = _subjects(head, base, include_unchanged)
    return subjects + batch_subjects(base_files, head_files, environment, include_unchanged)


def batch_subjects(
    base_files: Mapping[str, str] | None,
    head_files: Mapping[str, str],
    environment: str | None,
    include_unchanged: bool = False,
) -> list[Subject]:
    """The BatchInference documents created, updated or deleted (rules with
    `match.kind: BatchInference` judge them). Head files must be valid."""
    head: dict[tuple[str, str], Manifest | BatchManifest] = {
        (b.environment, b.name): b for b in load_batches(head_files, environment)
    }
    base: dict[tuple[str, str], Manifest | BatchManifest] = {}
    by_path = {b.path: b for b in head.values()}
    for path, text in (base_files or {}).items():
        env = environment_of(path)
        if (
            env is None
            or (environment is not None and env != environment)
            or not may_be_batch(text)
        ):
            continue
        if head_files.get(path) == text and path in by_path:
            b: Manifest | BatchManifest | None = by_path[path]
        else:
            b = parse_batch(path, text)[0]
        if isinstance(b, BatchManifest) and b.environment == env:
            base[(env, b.name)] = b
    return _subjects(head, base, include_unchanged)


def _subjects(
    head: Mapping[tuple[str, str], Manifest | BatchManifest],
    base: Mapping[tuple[str, str], Manifest | BatchManifest],
    include_unchanged: bool = False,
) -> list[Subject]:
    subjects: list[Subject] = []
    for key in sorted(set(head) | set(base)):
        new, old = head.get(key), base.get(key)
        kind: ChangeKind
        fields: tuple[str, ...]
        if old is None:
            kind, fields = "created", ()
        elif new is None:
            kind, fields = "deleted", ()
        elif old is new:
            kind, fields = "unchanged", ()
        else:
            fields = tuple(changed_fields(_dump(old), _dump(new)))
            kind = "updated" if fields else "unchanged"
        if kind == "unchanged" and not include_unchanged:
            continue
        subjects.append(Subject(key[0], key[1], kind, new, old, fields))
    return subjects

"""BatchInference files to validated specs, with every problem at file, line and field.

Batch documents live beside ModelDeployment files in deployments/<environment>/. The endpoint
loader (`manifest.parse_manifest`) validates them as BatchInference and otherwise leaves them
out, so `serveops validate` and the gate see their errors; this module gives them to the batch
side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from controller.errors import Location, Problem, ValidationFailed
from controller.spec.batch import BatchInference
from controller.spec.yamldoc import YamlDoc, load_yaml, validate_doc

# A repository is untrusted: however many files it holds, one environment's batch deployments
# stay within this many (each may become a Ray Job).
MAX_BATCH_DOCS = 2000
BATCH_KIND = "BatchInference"


@dataclass(frozen=True)
class BatchManifest:
    """A validated batch file and where it came from."""

    doc: YamlDoc
    batch: BatchInference

    @property
    def deployment(self) -> BatchInference:
        """The document (named like Manifest's, for code that reads either kind)."""
        return self.batch

    @property
    def path(self) -> str:
        return self.doc.path

    @property
    def name(self) -> str:
        return self.batch.metadata.name

    @property
    def environment(self) -> str:
        return self.batch.metadata.environment

    def line_of(self, *field: str | int) -> int | None:
        return self.doc.line_of(*field)


def is_batch_doc(doc: YamlDoc) -> bool:
    return isinstance(doc.data, dict) and doc.data.get("kind") == BATCH_KIND


def may_be_batch(text: str) -> bool:
    """Cheap prefilter: a file without the word cannot declare the kind."""
    return BATCH_KIND in text


def parse_batch(path: str, text: str) -> tuple[BatchManifest | None, list[Problem]]:
    """Parse one file as a BatchInference (None with no problems: it is another kind)."""
    doc, problems = load_yaml(path, text)
    if doc is None:
        return None, problems
    if not is_batch_doc(doc):
        return None, []
    return validate_batch(doc)


def validate_batch(doc: YamlDoc) -> tuple[BatchManifest | None, list[Problem]]:
    batch, problems = validate_doc(doc, BatchInference)
    return (None, problems) if batch is None else (BatchManifest(doc, batch), [])


def load_batches(files: Mapping[str, str], environment: str | None = None) -> list[BatchManifest]:
    """The batch deployments among deployment files (of `environment` when given); raise
    ValidationFailed listing every problem: invalid files, an environment that does not match
    the folder, names or outputs used twice, an output that is another deployment's input,
    more than MAX_BATCH_DOCS in one environment."""
    from controller.spec.manifest import environment_of

    found: list[BatchManifest] = []
    problems: list[Problem] = []
    for path in sorted(files):
        folder = environment_of(path)
        if folder is None or (environment is not None and folder != environment):
            continue
        if not may_be_batch(files[path]):
            continue
        batch, errs = parse_batch(path, files[path])
        problems += errs
        if batch is None:
            continue
        if batch.environment != folder:
            where = Location(path, batch.line_of("metadata", "environment"), "metadata.environment")
            why = (
                f"environment {batch.environment!r} does not match the folder deployments/{folder}/"
            )
            problems.append(Problem(where, why))
            continue
        found.append(batch)
    problems += _cross_check(found)
    if problems:
        raise ValidationFailed(problems)
    return found


def _cross_check(batches: list[BatchManifest]) -> list[Problem]:
    problems: list[Problem] = []
    by_env: dict[str, list[BatchManifest]] = {}
    for b in batches:
        by_env.setdefault(b.environment, []).append(b)
    for env, group in sorted(by_env.items()):
        if len(group) > MAX_BATCH_DOCS:
            where = Location(group[MAX_BATCH_DOCS].path, 1)
            why = f"environment {env!r} declares {len(group)} batch deployments, more than {MAX_BATCH_DOCS}"
            problems.append(Problem(where, why))
            continue
        names: dict[str, BatchManifest] = {}
        outputs: dict[str, BatchManifest] = {}
        inputs = {_norm(b.batch.spec.input.uri): b for b in group}
        for b in group:
            if b.name in names:
                other = names[b.name]
                problems.append(_dup(b, ("metadata", "name"), f"name {b.name!r}", other))
            names.setdefault(b.name, b)
            out = _norm(b.batch.spec.output.uri)
            if out in outputs:
                other = outputs[out]
                problems.append(_dup(b, ("spec", "output", "uri"), f"output {out!r}", other))
            outputs.setdefault(out, b)
            reader = inputs.get(out)
            if reader is not None and reader is not b:
                where = Location(b.path, b.line_of("spec", "output", "uri"), "spec.output.uri")
                why = f"output {out!r} would overwrite the input of {reader.name} ({reader.path})"
                problems.append(Problem(where, why))
    return problems


def _dup(b: BatchManifest, field: tuple[str, ...], what: str, other: BatchManifest) -> Problem:
    where = Location(b.path, b.line_of(*field), ".".join(field))
    why = f"{what} is already used in environment {b.environment!r} by {other.path}:{other.line_of(*field)}"
    return Problem(where, why)


def _norm(uri: str) -> str:
    return uri.removeprefix("file://").rstrip("/")

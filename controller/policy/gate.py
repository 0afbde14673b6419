"""The policy check of a change between two revisions: shared by `serveops check` (CI) and the
controller's gate before apply, so both refuse with the same messages.

The rules and waivers never come from the revision judged (source.py): `check` reads them at
the merge-base of --base and --head, the controller from a source it is configured with.
Without a base every deployment counts as created, so change-based rules (freeze window,
simulation evidence) apply: the gate fails closed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import git

from controller.errors import BadInput
from controller.policy.changes import Subject, subjects_between
from controller.policy.engine import RequestContext, SimulationLookup, Verdict, evaluate
from controller.policy.evidence import EvidenceStore, read_evidence
from controller.policy.loader import POLICIES_DIR, PolicySet, load_policies
from controller.policy.proposal import PolicyChange, check_policy_change
from controller.policy.source import PoliciesAtRevision, PolicyFiles, PolicySource
from controller.registry.mlflow import ModelVersionRecord
from controller.source.git import environment_names, open_repo, read_snapshot, resolve_commit
from controller.spec.batchfile import BatchManifest
from controller.spec.manifest import Manifest

MAX_SIMULATION_BYTES = 16 * 1024 * 1024
NO_BASE_NOTE = (
    "no base revision: every deployment is treated as created, so change-based rules apply "
    "(freeze window, simulation evidence)"
)


class Describer(Protocol):
    """A registry that can describe a model version (MlflowRegistry, FixedRegistry)."""

    def describe(self, uri: str) -> ModelVersionRecord: ...


@dataclass(frozen=True)
class CheckResult:
    verdict: Verdict
    policies: PolicySet
    subjects: list[Subject]
    request: RequestContext
    policy_origin: str = ""
    policy_change: PolicyChange | None = None
    notes: list[str] = field(default_factory=list)


def load_simulation(path: Path | None) -> dict[str, Any] | None:
    """The simulator's JSON report, or None when no path is given."""
    if path is None:
        return None
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_SIMULATION_BYTES + 1)
    except FileNotFoundError:
        raise BadInput(f"{path}: no such simulation report") from None
    except OSError as err:
        raise BadInput(f"{path}: cannot read the simulation report: {err.strerror}") from None
    if len(raw) > MAX_SIMULATION_BYTES:
        raise BadInput(f"{path}: a simulation report larger than {MAX_SIMULATION_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise BadInput(f"{path}: not a JSON simulation report: {err}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: a simulation report must be a JSON object")
    return data


def load_simulations(paths: list[Path]) -> dict[str, Any] | None:
    """Reports of `serveops simulate`, one per environment simulated, as one report whose
    `deployments` entries apply each to the deployments its `meta` names; a single report
    without that `meta` applies to every deployment, as given."""
    reports = [r for r in (load_simulation(p) for p in paths) if r is not None]
    if not reports:
        return None
    per: dict[str, Any] = {}
    for path, report in zip(paths, reports, strict=True):
        meta = report.get("meta")
        names = meta.get("deployments") if isinstance(meta, dict) else None
        env = meta.get("environment") if isinstance(meta, dict) else None
        if isinstance(report.get("deployments"), dict):
            per.update(report["deployments"])
        elif isinstance(names, list) and isinstance(env, str):
            per.update({f"{env}/{name}": report for name in names})
        elif len(reports) == 1:
            return report
        else:
            raise BadInput(f"{path}: a report among several must name its meta.deployments")
    return {"deployments": per}


def changed_subjects(
    repo: str | Path, base: str, head: str, *, use_merge_base: bool = True
) -> list[Subject]:
    """What changed from the merge-base of `base` and `head` (or `base` as is) to `head`."""
    if use_merge_base:
        base = merge_base(repo, base, head)
    return subjects_between(read_snapshot(repo, base).files, read_snapshot(repo, head).files)


def merge_base(repo: str | Path, base: str, head: str) -> str:
    """The best common ancestor of `base` and `head` (what `git diff base...head` diffs
    against): a pull request is judged on its own changes, not on those that landed on the
    base branch after it branched."""
    git_repo = open_repo(repo)
    base_commit = resolve_commit(git_repo, base)
    head_commit = resolve_commit(git_repo, head)
    try:
        found = git_repo.merge_base(base_commit, head_commit)
    except git.GitCommandError as err:
        raise BadInput(f"{repo}: no merge-base of {base!r} and {head!r}: {err}") from None
    if not found:
        raise BadInput(
            f"{repo}: {base!r} and {head!r} share no history (no merge-base); "
            "pass --base-tip to diff against the base as it is"
        )
    return str(found[0].hexsha)


def request_context(
    repo: str | Path,
    head: str,
    base: str | None,
    *,
    now: dt.datetime | None = None,
    author: str | None = None,
    branch: str | None = None,
) -> RequestContext:
    """Who and when: explicit values, else GitHub's environment, else the head commit."""
    git_repo = open_repo(repo)
    head_commit = resolve_commit(git_repo, head)
    base_sha = resolve_commit(git_repo, base).hexsha if base else ""
    if author is None:
        author = os.environ.get("GITHUB_ACTOR") or str(head_commit.author.email or "")
    if branch is None:
        branch = os.environ.get("GITHUB_HEAD_REF") or os.environ.get("GITHUB_REF_NAME") or ""
        if not branch:
            try:
                branch = git_repo.active_branch.name
            except TypeError:  # detached HEAD
                branch = ""
    when = now or dt.datetime.now(dt.UTC)
    if when.tzinfo is None:
        raise BadInput(f"time {when.isoformat()} needs a timezone (e.g. Z or +00:00)")
    return RequestContext(when, author, branch, base_sha, head_commit.hexsha)


def simulation_lookup(
    report: Mapping[str, Any] | None,
    evidence: EvidenceStore | None,
    evidence_key: bytes | None,
    notes: list[str],
) -> SimulationLookup | None:
    """The `simulation` input per subject: its verified evidence record when the store has
    one, else its entry of the report given; problems with records go to `notes`."""
    from controller.policy.engine import simulation_for

    if report is None and evidence is None:
        return None

    def lookup(subject: Subject, model: Mapping[str, Any] | None) -> dict[str, Any] | None:
        # Endpoints (a simulation) and batch deployments (a sample comparison).
        if evidence is not None and isinstance(subject.head, Manifest | BatchManifest):
            version = None
            if model is not None and model.get("status") != "NOT_FOUND":
                version = str(model.get("version") or "") or None
            try:
                found = read_evidence(evidence, subject.head.deployment, version, evidence_key)
            except BadInput as err:  # an alias with no registry to resolve it
                notes.append(f"{subject.key}: no evidence looked up: {err.message}")
                found = None
            if found is not None and found.problem:
                notes.append(found.problem)
            if found is not None and found.record is not None:
                return found.record.as_cel()
        return simulation_for(report, subject)

    return lookup


def check_revisions(
    repo: str | Path,
    head: str,
    base: str | None = None,
    *,
    include_unchanged: bool = False,
    environment: str | None = None,
    policies: PolicySource | None = None,
    registry: Describer | None = None,
    simulation: Mapping[str, Any] | None = None,
    evidence: EvidenceStore | None = None,
    evidence_key: bytes | None = None,
    use_merge_base: bool = True,
    check_change: bool = True,
    now: dt.datetime | None = None,
    author: str | None = None,
    branch: str | None = None,
    workers: int = 1,
) -> CheckResult:
    """Evaluate the policies on what changed from `base` to `head` (everything with
    `include_unchanged`). `base` is replaced by the merge-base of `base` and `head` unless
    `use_merge_base` is false. Without a base every deployment is `created` (fail closed).

    Policies come from `policies`, by default policies/ at the (merge-)base, or at `head`
    when there is no base (a note says so). When `head` changes policies/ (`check_change`),
    that change is loaded, tested and reported in `policy_change`, never applied.
    Raises BadInput (PolicyInvalid, ValidationFailed) before evaluating anything when a policy
    or deployment file is wrong. `workers`: processes to parse and evaluate in."""
    notes: list[str] = []
    if base is not None and use_merge_base:
        base = merge_base(repo, base, head)
    request = request_context(repo, head, base, now=now, author=author, branch=branch)
    # Only the environment's folder is read: another environment's broken file cannot stop it.
    head_files = read_snapshot(repo, request.head, environment=environment).files
    base_files = read_snapshot(repo, request.base, environment=environment).files if base else None
    if base is None:
        notes.append(NO_BASE_NOTE)
    head_environments = environment_names(repo, request.head)
    known = set(head_environments)
    if base:
        known |= environment_names(repo, request.base)
    if environment is not None and environment not in known:
        raise BadInput(
            f"no environment {environment!r} in deployments/ "
            f"(environments: {', '.join(sorted(known)) or 'none'})"
        )
    source = policies or PoliciesAtRevision(repo, request.base or request.head)
    trusted: PolicyFiles = source.read()
    if policies is None and not base:
        notes.append(f"policies: {trusted.origin}, the revision judged (no base: give --policies)")
    policy_set = load_policies(trusted.files, environments=known)
    change = None
    if check_change and base:
        change = check_policy_change(
            read_snapshot(repo, request.base, root=POLICIES_DIR).files,
            read_snapshot(repo, request.head, root=POLICIES_DIR).files,
            head_environments,
        )
    subjects = subjects_between(
        base_files,
        head_files,
        include_unchanged=include_unchanged,
        environment=environment,
        workers=workers,
    )
    verdict = evaluate(
        policy_set,
        subjects,
        request,
        models=registry.describe if registry is not None else None,
        simulation=simulation_lookup(simulation, evidence, evidence_key, notes),
        workers=workers,
    )
    verdict.notes = [f"policies: {trusted.origin}", *notes]
    verdict.policy_change = change
    return CheckResult(verdict, policy_set, subjects, request, trusted.origin, change, notes)


def gate(
    repo: str | Path,
    head: str,
    environment: str,
    *,
    registry: Describer | None,
    base: str | None = None,
    policies: PolicySource | None = None,
    evidence: EvidenceStore | None = None,
    evidence_key: bytes | None = None,
    simulation: Mapping[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> Verdict:
    """The controller's check before anything of `head` runs or is stored: every deployment
    of `environment` at `head`, judged by the rules and waivers of `policies` (a source
    outside the judged revision: PoliciesAtRevision of the last applied commit or of a
    platform repository, or PoliciesInDirectory).

    `base` is the revision live on the cluster, diffed as is (no merge-base); None (first
    pass, lost state, history rewritten) treats every deployment as created. `evidence` (with
    `evidence_key`, else $SERVEOPS_EVIDENCE_KEY) gives each deployment its `simulation`
    input. Refuse when not `.allowed`; `controller.policy.report.refusal(verdict)` is the
    message.

    `policies=None` is the behaviour from before trusted sources: the policies of `head`
    itself, and without a base every deployment unchanged. It remains for callers not yet
    given a source and is not a trust boundary."""
    if evidence is not None and evidence_key is None:
        from controller.policy.evidence import load_key

        evidence_key = load_key()
    if policies is None:
        return _legacy_gate(repo, head, environment, registry, base, simulation, now)
    return check_revisions(
        repo,
        head,
        base,
        include_unchanged=True,
        environment=environment,
        policies=policies,
        registry=registry,
        simulation=simulation,
        evidence=evidence,
        evidence_key=evidence_key,
        use_merge_base=False,
        check_change=False,
        now=now,
    ).verdict


def _legacy_gate(
    repo: str | Path,
    head: str,
    environment: str,
    registry: Describer | None,
    base: str | None,
    simulation: Mapping[str, Any] | None,
    now: dt.datetime | None,
) -> Verdict:
    request = request_context(repo, head, base, now=now)
    files = read_snapshot(repo, request.head, environment=environment).files
    base_files = read_snapshot(repo, request.base, environment=environment).files if base else files
    trusted = PoliciesAtRevision(repo, request.head).read()
    policy_set = load_policies(trusted.files, environments=environment_names(repo, request.head))
    subjects = subjects_between(base_files, files, include_unchanged=True, environment=environment)
    verdict = evaluate(
        policy_set,
        subjects,
        request,
        models=registry.describe if registry is not None else None,
        simulation=simulation_lookup(simulation, None, None, []),
    )
    verdict.notes = [f"policies: {trusted.origin}, the revision judged (no trusted source)"]
    return verdict

"""The policy check of a change between two revisions: shared by `serveops check` (CI) and the
controller's gate before apply, so both refuse with the same messages."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from controller.errors import BadInput
from controller.policy.changes import Subject, subjects_between
from controller.policy.engine import RequestContext, Verdict, evaluate
from controller.policy.loader import POLICIES_DIR, PolicySet, load_policies
from controller.registry.mlflow import ModelVersionRecord
from controller.source.git import open_repo, read_snapshot, resolve_commit


class Describer(Protocol):
    """A registry that can describe a model version (MlflowRegistry, FixedRegistry)."""

    def describe(self, uri: str) -> ModelVersionRecord: ...


@dataclass(frozen=True)
class CheckResult:
    verdict: Verdict
    policies: PolicySet
    subjects: list[Subject]
    request: RequestContext


def load_simulation(path: Path | None) -> dict[str, Any] | None:
    """The simulator's JSON report, or None when no path is given."""
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{path}: no such simulation report") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise BadInput(f"{path}: not a JSON simulation report: {err}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: a simulation report must be a JSON object")
    return data


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


def check_revisions(
    repo: str | Path,
    head: str,
    base: str | None = None,
    *,
    include_unchanged: bool = False,
    environment: str | None = None,
    policy_files: Mapping[str, str] | None = None,
    registry: Describer | None = None,
    simulation: Mapping[str, Any] | None = None,
    now: dt.datetime | None = None,
    author: str | None = None,
    branch: str | None = None,
    workers: int = 1,
) -> CheckResult:
    """Evaluate the policies on what changed from `base` to `head` (everything with
    `include_unchanged`, or when `base` is None). Policies come from `policy_files` or, by
    default, from policies/ at `head`. Raises BadInput (PolicyInvalid, ValidationFailed) before
    evaluating anything when a policy or deployment file is wrong. `workers`: processes to parse
    and evaluate in (see evaluate)."""
    request = request_context(repo, head, base, now=now, author=author, branch=branch)
    if policy_files is None:
        policy_files = read_snapshot(repo, request.head, root=POLICIES_DIR).files
    policies = load_policies(policy_files)
    head_files = read_snapshot(repo, request.head).files
    base_files = read_snapshot(repo, request.base).files if base else None
    subjects = subjects_between(
        base_files,
        head_files,
        include_unchanged=include_unchanged,
        environment=environment,
        workers=workers,
    )
    verdict = evaluate(
        policies,
        subjects,
        request,
        models=registry.describe if registry is not None else None,
        simulation=simulation,
        workers=workers,
    )
    return CheckResult(verdict, policies, subjects, request)


def gate(
    repo: str | Path,
    rev: str,
    environment: str,
    *,
    registry: Describer | None,
    base: str | None = None,
    simulation: Mapping[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> Verdict:
    """The controller's check before apply: every deployment of `environment` at `rev`, with the
    policies of `rev`. `base` (e.g. the revision live on the cluster) adds change information;
    without it every deployment counts as `unchanged`. Refuse to apply when not `.allowed`;
    `controller.policy.report.refusal(verdict)` is the message."""
    return check_revisions(
        repo,
        rev,
        base,
        include_unchanged=True,
        environment=environment,
        registry=registry,
        simulation=simulation,
        now=now,
    ).verdict

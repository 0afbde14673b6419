"""What `serveops batch plan` reviews at a revision: the batch plan, and each model change's
sample check run here, with a verdict the gate can read as evidence.

A model change (the version a deployment resolves to now differs from the one it had: at the
controller's last promotion, or at `base`, a pull request's merge-base) is scored on a sample of
its input by both versions (controller/batch/promotion.py). The verdict is one of:

- `pass`: the new version agrees within the declared `promotion` thresholds, conclusively;
- `fail`: it does not (the controller would reject the run and keep the old version);
- `inconclusive`: the run would go ahead, but the sample cannot tell: a gating check's
  confidence interval straddles its threshold (raise `promotion.sample_rows`);
- `not-run`: nothing was scored, and the reason says why (the input is not on this machine).

Only `pass` lets the starter rule `batch-production-comparison-passed` admit the change.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from controller.batch.inputs import InputInfo, check_input, check_signature
from controller.batch.plan import BatchPlan, plan_batches
from controller.batch.promotion import promotion_check
from controller.batch.request import RunRequest, RunResult
from controller.gitops.state import StateStore
from controller.gitops.state.batch import BatchRun
from controller.policy.evidence import EvidenceStore, write_evidence
from controller.registry.mlflow import MlflowRegistry
from controller.source.git import read_snapshot
from controller.spec.batchfile import BatchManifest, load_batches
from controller.spec.models import parse_model_uri

Verdict = Literal["pass", "fail", "inconclusive", "not-run"]


@dataclass(frozen=True)
class SampleCheck:
    """One model change's sample check at plan time, or why none ran."""

    deployment: str
    previous: str  # models:/<name>/<version> before the change
    candidate: str  # and after
    verdict: Verdict
    reason: str
    result: RunResult | None = None  # the scoring's figures, when it ran

    def report(self) -> dict[str, Any]:
        """The evidence body the gate reads as `simulation` (policies/batch.yaml)."""
        checks = self.result.checks if self.result else []
        return {
            "passed": self.verdict == "pass",
            "verdict": self.verdict,
            "reason": self.reason,
            "previous": self.previous,
            "candidate": self.candidate,
            "checks": checks,
        }


@dataclass
class BatchReview:
    commit: str
    plan: BatchPlan
    batches: dict[str, BatchManifest]
    checks: dict[str, SampleCheck] = field(default_factory=dict)
    base_commit: str | None = None

    @property
    def rejected(self) -> list[SampleCheck]:
        return [c for c in self.checks.values() if c.verdict == "fail"]


def read_batches(repo: Path, rev: str, env: str) -> tuple[str, list[BatchManifest]]:
    """The commit `rev` names and the batch deployments of `env` at it."""
    snapshot = read_snapshot(str(repo), rev, environment=env)
    return snapshot.commit, load_batches(snapshot.files, env)


def review(
    repo: Path,
    rev: str,
    env: str,
    *,
    state: Path,
    now: dt.datetime,
    registry: MlflowRegistry | None = None,
    compare: bool = True,
    base: str | None = None,
    remote: bool = False,
) -> BatchReview:
    """Plan the batch deployments of `env` at `rev` against the controller's store at `state`
    (a store that does not exist is an empty one); with a registry, check each input against
    its model's signature and, with `compare`, run each model change's sample check; with
    `remote`, object-store inputs too (this machine's credentials). Raises BadInput (file:line)
    for an input that is missing or does not fit. Writes nothing."""
    commit, batches = read_batches(repo, rev, env)
    inputs = {
        b.name: check_input(
            b.batch.spec, str(b.doc.location("spec", "input", "uri")), remote=remote
        )
        for b in batches
    }
    resolved: dict[str, str] = {}
    if registry is not None:
        resolved = {b.name: registry.resolve(b.batch.spec.model).pinned_uri for b in batches}
        for b in batches:  # the columns a run hands the model are the ones it takes
            pinned, where = resolved[b.name], str(b.doc.location("spec", "input"))
            check_signature(
                b.batch.spec, inputs[b.name], pinned, registry.input_schema(pinned), where
            )
    plan = _plan(env, batches, state, now, resolved)
    result = BatchReview(commit, plan, {b.name: b for b in batches})
    if registry is None or not compare:
        return result
    previous = {i.name: i.promoted for i in plan.items}
    if base is not None:
        result.base_commit, at_base = read_batches(repo, base, env)
        previous = {b.name: registry.resolve(b.batch.spec.model).pinned_uri for b in at_base}
    for name, candidate in resolved.items():
        before = previous.get(name)
        if before is not None and candidate != before:
            batch = result.batches[name]
            result.checks[name] = sample_check(
                batch, inputs[name], commit, before, candidate, registry.tracking_uri
            )
    return result


def _plan(
    env: str, batches: list[BatchManifest], state: Path, now: dt.datetime, resolved: dict[str, str]
) -> BatchPlan:
    latest: dict[str, BatchRun] = {}
    active: list[BatchRun] = []
    last: dict[str, BatchRun] = {}
    promoted: dict[str, str] = {}
    since: dict[str, dt.datetime] = {}  # a deployment the controller never saw: new now
    if state.exists():
        with StateStore(state) as store:
            latest, active = store.latest_batch_runs(env), store.active_batch_runs(env)
            promoted, since = store.promoted_models(env), store.batch_since(env)
            last = store.last_batch_runs(env)
    return plan_batches(
        env, [b.batch for b in batches], now=now, since=since, latest=latest, active=active,
        promoted=promoted, resolved=resolved, last=last,
    )  # fmt: skip


def sample_check(
    batch: BatchManifest,
    info: InputInfo,
    commit: str,
    previous: str,
    candidate: str,
    tracking_uri: str | None,
) -> SampleCheck:
    """Score a sample of the input with both versions, as the run would, and say the verdict."""
    name, spec = batch.name, batch.batch.spec
    if info.columns is None:
        return SampleCheck(
            name, previous, candidate, "not-run",
            f"the input {spec.input.uri} is not on this machine: run the comparison where it "
            "is readable, with --remote-inputs for an object store (the controller's run "
            "checks it again on the cluster)",
        )  # fmt: skip
    request = RunRequest(
        environment=batch.environment, deployment=name, run_key="plan", commit=commit,
        model_uri=candidate, previous_model_uri=previous, tracking_uri=tracking_uri,
        input=spec.input, output=spec.output, resources=spec.resources, promotion=spec.promotion,
    )  # fmt: skip
    result = promotion_check(request)
    assert result is not None  # the versions differ
    if result.status == "rejected":
        return SampleCheck(name, previous, candidate, "fail", result.message, result)
    unsure = [c for c in result.checks if c.get("gating") and c.get("status") == "inconclusive"]
    if unsure:
        why = "; ".join(str(c.get("reason", c.get("name"))) for c in unsure)
        return SampleCheck(
            name, previous, candidate, "inconclusive",
            f"{why}: the {spec.promotion.sample_rows}-row sample cannot tell; raise "
            "promotion.sample_rows",
            result,
        )  # fmt: skip
    return SampleCheck(name, previous, candidate, "pass", summary(result), result)


def summary(result: RunResult) -> str:
    """One line: the agreement a passed sample check found (a rejection says its own why)."""
    figures: Mapping[str, Any] = next(
        (c["figures"] for c in result.checks if c.get("name") == "agreement"), {}
    )
    kappa, ci = figures.get("cohen_kappa"), figures.get("agreement_ci")
    share = result.agreement or 0.0
    return (
        f"agreement {share:.1%}"
        + (f" [CI {ci[0]:.1%}, {ci[1]:.1%}]" if ci else "")
        + (f", kappa {kappa:.3f}" if kappa is not None else "")
    )


def record(
    review: BatchReview, store: EvidenceStore, key: bytes, now: dt.datetime
) -> dict[str, str]:
    """Each sample check's verdict as signed evidence (what the gate reads for the change);
    where each record went, by deployment."""
    commits = {
        "head": review.commit,
        **({"base": review.base_commit} if review.base_commit else {}),
    }
    written = {}
    for name, check in review.checks.items():
        version = parse_model_uri(check.candidate)[1]
        batch = review.batches[name].batch
        written[name] = write_evidence(
            store, batch, version, check.report(), commits, key, now=now
        ).location
    return written

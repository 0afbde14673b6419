"""Model update automation in the controller pass (`--propose-every`): for every deployment of
the admitted revision that declares `spec.model_updates`, the version its rule selects becomes
a proposal branch (pushed with `--propose-push`, a pull request with `--forge`), as
`serveops propose` would write it by hand.

It writes Git, never the cluster: the branch goes through the gate as any change. A version is
proposed once (`model_proposals`); one whose push or pull request failed is tried at the next
scan. The scan shares the monitoring budget, and nothing here raises: a deployment that cannot
be proposed for is logged and recorded, and the others go on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from controller.errors import ServeopsError
from controller.gitops.context import PassContext
from controller.gitops.state import DesiredRevision, ModelProposal
from controller.monitor.forge import open_pull_request
from controller.monitor.propose import NothingToPropose, Proposal, plan_proposal, write_proposal
from controller.monitor.versions import MetricRule, Rule, VersionInfo, list_versions
from controller.redact import redact
from controller.spec.models import parse_model_uri
from controller.spec.updates import ModelUpdates

log = logging.getLogger("serveops.controller")

# (tracking URI, registered model name, metrics wanted) -> the model's versions
VersionLister = Callable[[str, str, Sequence[str]], list[VersionInfo]]


def rule_of(updates: ModelUpdates) -> Rule:
    """The selection `spec.model_updates` declares (validated with the file)."""
    tag = None
    if updates.tag:
        key, _, value = updates.tag.partition("=")
        tag = (key, value)
    metric = MetricRule.parse(updates.metric) if updates.metric else None
    return Rule(alias=updates.alias, tag=tag, metric=metric)


@dataclass(frozen=True)
class ProposeStep:
    proposed: list[ModelProposal]

    def summary(self) -> str:
        done = [p for p in self.proposed if p.status == "proposed"]
        failed = len(self.proposed) - len(done)
        parts = [f"proposed {p.deployment} {p.proposed} on {p.branch}" for p in done]
        if failed:
            parts.append(f"{failed} proposal(s) failed")
        return "; ".join(parts)


def run_propose_step(
    ctx: PassContext,
    admitted: DesiredRevision | None,
    *,
    versions: VersionLister | None = None,
) -> ProposeStep:
    """Propose what the admitted revision's `model_updates` rules select and was not proposed."""
    if admitted is None:
        return ProposeStep([])
    env, store, settings = ctx.environment, ctx.store, ctx.settings
    deadline = time.monotonic() + settings.monitor_budget_s
    tracking_uri = ctx.registry().tracking_uri
    done: list[ModelProposal] = []
    for name in sorted(admitted.specs):
        updates = admitted.specs[name].spec.model_updates
        if updates is None:
            continue
        if time.monotonic() >= deadline:
            log.info("%s: proposal budget spent; %s waits for the next scan", env, name)
            break
        if tracking_uri is None:
            log.error("%s: %s declares model_updates, but no MLflow registry is set", env, name)
            break
        try:
            proposal = _plan(ctx, admitted, name, updates, tracking_uri, versions or list_versions)
        except NothingToPropose:
            continue
        except ServeopsError as err:
            log.error("%s: cannot propose a model for %s: %s", env, name, err.message)
            continue
        except Exception:  # a bug must not stop the pass
            log.exception("%s: proposing a model for %s failed", env, name)
            continue
        before = store.proposal(env, name, proposal.proposed)
        if before is not None and before.status == "proposed":
            continue
        result = _write(ctx, proposal)
        store.record_proposal(result)
        done.append(result)
        if result.status == "proposed":
            log.info("%s: %s", env, result.message)
            ctx.notify("model_proposed", admitted.commit, result.message)
        else:
            log.error("%s: %s", env, result.message)
    return ProposeStep(done)


def _plan(
    ctx: PassContext,
    admitted: DesiredRevision,
    name: str,
    updates: ModelUpdates,
    tracking_uri: str,
    versions: VersionLister,
) -> Proposal:
    rule = rule_of(updates)
    model, _, _ = parse_model_uri(admitted.specs[name].spec.model)
    listed = versions(tracking_uri, model, [rule.metric.name] if rule.metric else [])
    repo = ctx.source.repository()
    return plan_proposal(
        str(repo.working_tree_dir or repo.git_dir),
        ctx.environment,
        name,
        listed,
        rule,
        rev=admitted.commit,
        evidence=ctx.store.drift_history(ctx.environment, name, 3),
        branch_prefix=updates.branch_prefix,
    )


def _write(ctx: PassContext, proposal: Proposal) -> ModelProposal:
    """Commit (and push, and open the pull request of) one proposal; what happened."""
    settings, now = ctx.settings, ctx.store.now()
    sha, pull = "", ""
    try:
        sha = write_proposal(proposal, push=settings.propose_push)
        said = f"proposed {proposal.current} -> {proposal.proposed} for {proposal.deployment}"
        said += f": {sha[:12]} on {proposal.branch}"
        if settings.propose_push:
            said += f", pushed to {settings.propose_push}"
        if settings.forge is not None and settings.propose_push:
            title, _, body = proposal.message.partition("\n")
            opened = open_pull_request(
                settings.forge, proposal.branch, settings.forge_base, title, body.strip()
            )
            pull = opened.url
            said += f", pull request #{opened.number}"
        status = "proposed"
    except ServeopsError as err:
        said, status = (
            f"proposing {proposal.proposed} for {proposal.deployment}: {err.message}",
            "failed",
        )
    except Exception as err:
        log.exception("%s: writing the proposal of %s failed", ctx.environment, proposal.deployment)
        said, status = f"proposing {proposal.proposed}: {type(err).__name__}: {err}", "failed"
    return ModelProposal(
        ctx.environment,
        proposal.deployment,
        proposal.proposed,
        proposal.branch,
        sha,
        pull,
        status,  # type: ignore[arg-type]
        redact(said)[:1000],
        now,
    )


def due(last_scan: float | None, every_s: float | None, now: float) -> bool:
    """Is a scan due (times in seconds)? Never without `every_s`; at once the first time."""
    if every_s is None:
        return False
    return last_scan is None or now - last_scan >= every_s

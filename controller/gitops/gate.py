"""Step 2 of a pass, gate: which desired state the pass may act on.

A new head (or a new resolution of the same head: an alias that moved) is admitted only when
the policies allow it; nothing of it runs or is stored before that (no hook, no rollout
decision, no state). Every new commit is gated, whatever it changes. A head that is refused,
failed before, or cannot be read leaves the pass acting on what was admitted before, so
rollouts in flight keep being analysed (and aborted when their analysis says so) whatever
happens to the head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from controller.errors import BadInput, Refused, ServeopsError, ValidationFailed
from controller.gitops.context import PassContext
from controller.gitops.read import Observation
from controller.gitops.state import DesiredRevision
from controller.policy.gate import gate as evaluate_policies
from controller.policy.loader import PolicyInvalid
from controller.policy.report import refusal
from controller.policy.source import PoliciesAtRevision, PolicySource
from controller.source.git import open_repo, resolve_commit

HeadVerdict = Literal["admitted", "unchanged", "refused", "failed", "skipped", "unreadable"]


@dataclass(frozen=True)
class Admission:
    target: DesiredRevision | None  # what this pass acts on; None: nothing was ever admitted
    head: HeadVerdict  # what became of the branch head
    message: str = ""  # why the head was not admitted
    error: ServeopsError | None = None
    revision_fault: bool = False  # retrying the same revision cannot help: remember it failed

    @property
    def new(self) -> bool:
        return self.head == "admitted"


def gate(ctx: PassContext, obs: Observation) -> Admission:
    before = obs.state.admitted
    if obs.error is not None:
        return Admission(
            before,
            "unreadable" if obs.head is None else "failed",
            obs.error.message,
            obs.error,
            revision_fault=obs.head is not None and revision_fault(obs.error),
        )
    if obs.skipped:
        return Admission(before, "skipped")
    candidate = obs.desired
    assert candidate is not None
    if candidate is before:
        return Admission(before, "unchanged")
    policies = trusted_policies(ctx, before)
    if policies is None:
        why = BadInput(
            "no trusted policies to judge the first revision with: the rules and waivers that "
            "judge a change never come from it. Pass --policies (a directory or repository the "
            "platform team owns) or --bootstrap-policies REV (a reviewed revision whose "
            "policies/ judge the first admission); see docs/policy.md, Trust model"
        )
        return Admission(before, "failed", why.message, why)
    # Without a known base (first pass, lost state, rewritten history) every deployment counts
    # as created: change-based rules (freeze window, simulation passed) apply. Fail closed.
    base = _known_commit(ctx, before.commit if before else None)
    try:
        verdict = evaluate_policies(
            ctx.source.path,
            candidate.commit,
            ctx.environment,
            registry=obs.registry,
            base=base,
            policies=policies,
            evidence=ctx.settings.evidence,
            evidence_key=ctx.settings.evidence_key,
            now=ctx.store.now(),
        )
    except ServeopsError as err:
        return Admission(before, "failed", err.message, err, revision_fault=revision_fault(err))
    if not verdict.allowed:
        return Admission(before, "refused", refusal(verdict), revision_fault=True)
    return Admission(candidate, "admitted")


def trusted_policies(ctx: PassContext, before: DesiredRevision | None) -> PolicySource | None:
    """Where the rules and waivers judging the next revision come from: the operator's
    source, else what was admitted last (it landed and was judged itself), else the reviewed
    bootstrap revision; never the revision being judged."""
    settings = ctx.settings
    if settings.policies is not None:
        return settings.policies
    if before is not None and _known_commit(ctx, before.commit) is not None:
        return PoliciesAtRevision(ctx.source.path, before.commit)
    if settings.bootstrap_policies is not None:
        return PoliciesAtRevision(ctx.source.path, settings.bootstrap_policies)
    return None


def revision_fault(err: ServeopsError) -> bool:
    """Does this failure come from the revision itself, so that retrying the same revision
    cannot help? Invalid files, a model the registry does not have, invalid policies, a conflict
    with someone else's application. Serve or the registry being down, or a misconfiguration of
    the controller (plain BadInput), are retried at the next pass."""
    return isinstance(err, ValidationFailed | PolicyInvalid | Refused)


def _known_commit(ctx: PassContext, commit: str | None) -> str | None:
    """The gate's base, when the repository still has it (history may have been rewritten)."""
    if commit is None:
        return None
    try:
        return resolve_commit(open_repo(ctx.source.path), commit).hexsha
    except BadInput:
        return None

"""A change to policies/ itself: checked in the run that judges the change, never applied by it.

The rules and waivers a change proposes take effect once it has landed (docs/policy.md, "Trust
model"). In the same `check` run they are loaded like any policies (every file must compile,
every environment named must exist in deployments/, every waiver must name a rule), their
tests must pass, and what they add or remove is reported for the reviewer: a rule removed, a
waiver added. A malformed proposal is bad input (exit 2); failing tests refuse it (exit 1).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from controller.errors import Problem
from controller.policy.loader import PolicyInvalid, is_test_file, load_policies
from controller.policy.testing import CaseResult, run_tests


class ProposedPolicyInvalid(PolicyInvalid):
    files = "the policy files this change proposes (they take effect once landed)"

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems)


@dataclass(frozen=True)
class PolicyChange:
    files: list[str]  # paths added, changed or removed under policies/
    cases: list[CaseResult]  # the proposed policies' tests, run on the proposed rules
    rules_added: list[str] = field(default_factory=list)
    rules_removed: list[str] = field(default_factory=list)
    rules_changed: list[str] = field(default_factory=list)
    waivers_added: list[str] = field(default_factory=list)  # "rule for env/name, ... until"

    @property
    def ok(self) -> bool:
        return all(c.passed for c in self.cases)

    @property
    def failed(self) -> list[CaseResult]:
        return [c for c in self.cases if not c.passed]

    def summary(self) -> str:
        passed = len(self.cases) - len(self.failed)
        parts = [
            f"policies/ changed ({len(self.files)} file(s)): checked here, takes effect once "
            f"landed; {passed} of {len(self.cases)} policy test(s) passed"
        ]
        for label, items in (
            ("rules added", self.rules_added),
            ("rules removed", self.rules_removed),
            ("rules changed", self.rules_changed),
            ("waivers added (they do not waive this change)", self.waivers_added),
        ):
            if items:
                parts.append(f"{label}: {', '.join(items)}")
        return "; ".join(parts)


def _declared(files: Mapping[str, str]) -> tuple[dict[str, Any], set[str]]:
    """Rules by id and waivers (as text) in `files`, read leniently (the proposed files were
    validated by load_policies; the base's were when they landed)."""
    rules: dict[str, Any] = {}
    waivers: set[str] = set()
    for path, text in files.items():
        if is_test_file(path):
            continue
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        if not isinstance(data, dict):
            continue
        for r in data.get("rules") or []:
            if isinstance(r, dict) and isinstance(r.get("id"), str):
                rules[r["id"]] = r
        for w in data.get("waivers") or []:
            if isinstance(w, dict):
                deployments = ", ".join(str(d) for d in w.get("deployments") or [])
                waivers.add(f"{w.get('rule')} for {deployments} until {w.get('expires')}")
    return rules, waivers


def check_policy_change(
    base: Mapping[str, str], head: Mapping[str, str], environments: Collection[str]
) -> PolicyChange | None:
    """None when policies/ is the same at base and head; else the proposed policies checked.
    Raises ProposedPolicyInvalid (bad input) when they do not load."""
    changed = sorted(p for p in set(base) | set(head) if base.get(p) != head.get(p))
    if not changed:
        return None
    try:
        proposed = load_policies(head, with_tests=True, environments=environments)
        cases = run_tests(proposed)
    except PolicyInvalid as err:
        raise ProposedPolicyInvalid(err.problems) from None
    old_rules, old_waivers = _declared(base)
    new_rules, new_waivers = _declared(head)
    return PolicyChange(
        files=changed,
        cases=cases,
        rules_added=sorted(set(new_rules) - set(old_rules)),
        rules_removed=sorted(set(old_rules) - set(new_rules)),
        rules_changed=sorted(
            r for r in set(new_rules) & set(old_rules) if new_rules[r] != old_rules[r]
        ),
        waivers_added=sorted(new_waivers - old_waivers),
    )

"""`serveops policy test`: the policies' own test cases (policies/tests/), like `conftest verify`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.errors import Location, Problem
from controller.policy.celrt import cel
from controller.policy.changes import Subject, changed_fields
from controller.policy.engine import RequestContext, Status, evaluate_rule, subject_context
from controller.policy.loader import CompiledRule, PolicyInvalid, PolicySet
from controller.policy.model import ChangeKind, TestCase
from controller.spec.batch import BatchInference
from controller.spec.batchfile import BatchManifest
from controller.spec.manifest import Manifest
from controller.spec.models import ModelDeployment
from controller.spec.yamldoc import YamlDoc, validate_doc

DEFAULT_TIME = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class CaseResult:
    location: Location
    name: str
    failures: list[str]  # empty: the case passed

    @property
    def passed(self) -> bool:
        return not self.failures


def _sub_doc(doc: YamlDoc, prefix: tuple[str | int, ...], data: Any) -> YamlDoc:
    n = len(prefix)
    lines = {k[n:]: line for k, line in doc.lines.items() if k[:n] == prefix}
    return YamlDoc(doc.path, data, lines)


def _manifest(
    doc: YamlDoc, prefix: tuple[str | int, ...], data: Any
) -> tuple[Manifest | BatchManifest | None, list[Problem]]:
    sub = _sub_doc(doc, prefix, data)
    if isinstance(data, dict) and data.get("kind") == "BatchInference":
        batch, problems = validate_doc(sub, BatchInference)
        return (BatchManifest(sub, batch) if batch else None), _prefixed(prefix, problems)
    deployment, problems = validate_doc(sub, ModelDeployment)
    return (Manifest(sub, deployment) if deployment else None), _prefixed(prefix, problems)


def _prefixed(prefix: tuple[str | int, ...], problems: list[Problem]) -> list[Problem]:
    return [
        Problem(
            Location(
                p.location.file,
                p.location.line,
                ".".join(map(str, prefix)) + "." + (p.location.field or ""),
            ),
            p.message,
        )
        for p in problems
    ]


def _model(data: dict[str, Any] | None) -> dict[str, Any] | None:
    if data is None:
        return None
    record: dict[str, Any] = {
        "name": "",
        "version": "",
        "uri": "",
        "alias": None,
        "status": "READY",
        "aliases": [],
        "tags": {},
        "description": "",
        "source": "",
        "run_id": "",
        "creation_time": None,
    }
    record.update(data)
    record["run"] = {"metrics": {}, "params": {}, "tags": {}, **(data.get("run") or {})}
    if isinstance(record["creation_time"], str):
        record["creation_time"] = dt.datetime.fromisoformat(record["creation_time"])
    return record


def _request(data: dict[str, Any]) -> RequestContext:
    raw = data.get("time")
    when = DEFAULT_TIME
    if isinstance(raw, dt.datetime):
        when = raw if raw.tzinfo else raw.replace(tzinfo=dt.UTC)
    elif raw is not None:
        when = dt.datetime.fromisoformat(str(raw))
    return RequestContext(when, str(data.get("author", "")), str(data.get("branch", "")), "", "")


def _subject(
    head: Manifest | BatchManifest | None, base: Manifest | BatchManifest | None
) -> Subject:
    manifest = head or base
    assert manifest is not None
    meta = manifest.deployment.metadata
    kind: ChangeKind
    fields: list[str]
    if base is None:
        kind, fields = "created", []
    elif head is None:
        kind, fields = "deleted", []
    else:
        fields = changed_fields(
            base.deployment.model_dump(mode="json"), head.deployment.model_dump(mode="json")
        )
        kind = "updated" if fields else "unchanged"
    return Subject(meta.environment, meta.name, kind, head, base, tuple(fields))


@dataclass(frozen=True)
class PreparedCase:
    """A case's inputs, built once: run against the rules (or mutants of them) many times."""

    location: Location
    name: str
    subject: Subject
    ctx: cel.Context
    expected: dict[str, Status]  # rule id -> fail, pass or skip

    def judge(self, rule_of: Callable[[str], CompiledRule | None]) -> CaseResult:
        failures: list[str] = []
        for rule_id, want in self.expected.items():
            rule = rule_of(rule_id)
            assert rule is not None  # prepare_case checked every id
            status, failures_of_rule = evaluate_rule(rule, self.subject, self.ctx)
            # a rule that cannot be evaluated on a valid input is a bug, not the `fail` expected
            got = "error" if any(f.errored for f in failures_of_rule) else status
            if got != want:
                detail = "; ".join(f.message for f in failures_of_rule)
                failures.append(
                    f"[{rule_id}] expected {want}, got {got}" + (f": {detail}" if detail else "")
                )
        return CaseResult(self.location, self.name, failures)


def prepare_case(
    policies: PolicySet, doc: YamlDoc, index: int, case: TestCase
) -> tuple[PreparedCase | None, list[Problem]]:
    """The inputs of one case; problems are bad input (an invalid object, an unknown rule)."""
    prefix: tuple[str | int, ...] = ("cases", index)
    where = doc.location(*prefix, "name")
    problems: list[Problem] = []
    head = base = None
    if case.object is not None:
        head, found = _manifest(doc, (*prefix, "object"), case.object)
        problems += found
    if case.oldObject is not None:
        base, found = _manifest(doc, (*prefix, "oldObject"), case.oldObject)
        problems += found
    if case.object is None and case.oldObject is None:
        problems.append(Problem(where, "a case needs `object`, `oldObject` or both"))
    for key in ("fail", "pass", "skip"):
        ids = getattr(case.expect, "pass_" if key == "pass" else key)
        for i, rule_id in enumerate(ids):
            if policies.rule(rule_id) is None:
                problems.append(
                    Problem(
                        doc.location(*prefix, "expect", key, i),
                        f"no rule {rule_id!r} in the policies",
                    )
                )
    try:
        request = _request(case.request)
    except ValueError as err:
        problems.append(Problem(doc.location(*prefix, "request", "time"), f"bad time: {err}"))
    if problems or (head is None and base is None):
        return None, problems
    subject = _subject(head, base)
    ctx = subject_context(subject, _model(case.model), case.simulation, request)
    expected: dict[str, Status] = {
        **{r: "fail" for r in case.expect.fail},
        **{r: "pass" for r in case.expect.pass_},
        **{r: "skip" for r in case.expect.skip},
    }
    return PreparedCase(where, case.name, subject, ctx, expected), []


def prepare_cases(policies: PolicySet) -> list[PreparedCase]:
    """Every case's inputs; raise PolicyInvalid (bad input) listing every problem first."""
    prepared: list[PreparedCase] = []
    problems: list[Problem] = []
    for doc, test_file in policies.tests:
        for i, case in enumerate(test_file.cases):
            found_case, found = prepare_case(policies, doc, i, case)
            problems += found
            if found_case is not None:
                prepared.append(found_case)
    if problems:
        raise PolicyInvalid(problems)
    return prepared


def run_tests(policies: PolicySet) -> list[CaseResult]:
    """Run every case; raise PolicyInvalid (bad input) listing every problem first."""
    return [case.judge(policies.rule) for case in prepare_cases(policies)]

"""Verdicts for CI tools, SARIF 2.1.0 (code scanning) and JUnit XML (test reports), and
`render`, which picks a verdict's output format by name. Every format says what the text one
does (controller/policy/report.py).
"""

from __future__ import annotations

import json
from typing import Any
from xml.etree import ElementTree as ET

from controller import __version__
from controller.policy.engine import Verdict
from controller.policy.loader import PolicySet
from controller.policy.report import (
    DOCS_URL,
    EXPIRED_RULE,
    POLICY_TESTS_RULE,
    as_github,
    as_json,
    as_text,
    finding_text,
    waiver_note,
)

OUTPUTS = ("text", "json", "github", "sarif", "junit")


def _sarif_location(file: str, line: int | None) -> dict[str, Any]:
    physical: dict[str, Any] = {"artifactLocation": {"uri": file}}
    if line:
        physical["region"] = {"startLine": line}
    return {"physicalLocation": physical}


def _sarif_rules(policies: PolicySet) -> list[dict[str, Any]]:
    rules = [
        {
            "id": r.id,
            "name": r.id,
            "shortDescription": {"text": r.rule.description},
            "fullDescription": {"text": r.rule.description},
            "help": {
                "text": f"{r.rule.description} Rule {r.id}, declared at {r.location.file}:"
                f"{r.location.line}; waive it with an owned, dated waiver (docs/policy.md).",
            },
            "helpUri": f"{DOCS_URL}#starter-library",
            "defaultConfiguration": {"level": "error" if r.rule.severity == "error" else "warning"},
        }
        for r in policies.rules
    ]
    rules.append(
        {
            "id": EXPIRED_RULE,
            "name": "expired-waiver",
            "shortDescription": {"text": "A waiver past its expiry date: it no longer waives."},
            "help": {"text": "Renew the waiver with a new date, or fix what it excused."},
            "helpUri": f"{DOCS_URL}#waiver-waivers-of-a-policywaivers-file",
            "defaultConfiguration": {"level": "warning"},
        }
    )
    rules.append(
        {
            "id": POLICY_TESTS_RULE,
            "name": "policy-tests",
            "shortDescription": {"text": "A policy test case of the proposed policies/ fails."},
            "help": {"text": "Fix the rule or the case: `serveops policy test`."},
            "helpUri": f"{DOCS_URL}#test-case-cases-of-a-policytest-file",
            "defaultConfiguration": {"level": "error"},
        }
    )
    return rules


def as_sarif(v: Verdict, policies: PolicySet) -> str:
    results: list[dict[str, Any]] = []
    for f in v.findings:
        result: dict[str, Any] = {
            "ruleId": f.rule,
            "level": "error" if f.severity == "error" else "warning",
            "message": {"text": f"{f.deployment}: {f.message}{waiver_note(f)}"},
            "locations": [_sarif_location(f.location.file, f.location.line)],
        }
        if f.waiver is not None:
            result["suppressions"] = [
                {"kind": "external", "status": "accepted", "justification": f.waiver.waiver.reason}
            ]
        results.append(result)
    for w in v.waivers.expired:
        results.append(
            {
                "ruleId": EXPIRED_RULE,
                "level": "warning",
                "message": {"text": f"expired waiver: {w.label}"},
                "locations": [_sarif_location(w.location.file, w.location.line)],
            }
        )
    if v.policy_change is not None:
        for c in v.policy_change.failed:
            results.append(
                {
                    "ruleId": POLICY_TESTS_RULE,
                    "level": "error",
                    "message": {"text": f"{c.name}: {'; '.join(c.failures)}"},
                    "locations": [_sarif_location(c.location.file, c.location.line)],
                }
            )
    t = v.waivers
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": "serveops",
                "version": __version__,
                "informationUri": DOCS_URL,
                "rules": _sarif_rules(policies),
            }
        },
        "invocations": [
            {
                "executionSuccessful": True,
                "toolExecutionNotifications": [
                    {"message": {"text": n}, "level": "note"} for n in v.notes
                ],
            }
        ],
        "results": results,
        "properties": {
            "waivers": {
                "applied": len(t.applied),
                "unused": len(t.unused),
                "expired": len(t.expired),
            },
            "allowed": v.allowed,
        },
    }
    doc = {"$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0"}
    return json.dumps({**doc, "runs": [run]}, indent=2) + "\n"


def as_junit(v: Verdict) -> str:
    """One test case per rule and deployment: a <failure> when it fails unwaived with an
    error, <skipped/> when the rule does not apply; waived and warning findings go to
    system-out. The counts are those of the elements."""
    suites = ET.Element("testsuites")
    failures = sum(1 for o in v.outcomes if any(f.blocking for f in o.findings))
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="serveops-policy",
        tests=str(len(v.outcomes)),
        failures=str(failures),
        errors="0",
        skipped=str(v.count("skip")),
    )
    props = ET.SubElement(suite, "properties")
    for name, items in (
        ("waivers.applied", v.waivers.applied),
        ("waivers.unused", v.waivers.unused),
        ("waivers.expired", v.waivers.expired),
    ):
        ET.SubElement(props, "property", name=name, value=str(len(items)))
    for i, note in enumerate(v.notes):
        ET.SubElement(props, "property", name=f"note.{i}", value=note)
    for o in v.outcomes:
        case = ET.SubElement(suite, "testcase", classname=o.deployment, name=o.rule)
        if o.status == "skip":
            ET.SubElement(case, "skipped", message="not applicable")
            continue
        blocking = [f for f in o.findings if f.blocking]
        if blocking:
            node = ET.SubElement(case, "failure", message=blocking[0].message, type=o.rule)
            node.text = "\n".join(finding_text(f) for f in blocking)
        others = [f for f in o.findings if not f.blocking]
        if others:
            ET.SubElement(case, "system-out").text = "\n".join(finding_text(f) for f in others)
    change = v.policy_change
    if change is not None:
        proposed = ET.SubElement(
            suites,
            "testsuite",
            name="serveops-policy-change",
            tests=str(len(change.cases)),
            failures=str(len(change.failed)),
            errors="0",
            skipped="0",
        )
        for c in change.cases:
            case = ET.SubElement(proposed, "testcase", classname=c.location.file, name=c.name)
            if c.failures:
                node = ET.SubElement(case, "failure", message=c.failures[0], type="policy-test")
                node.text = "\n".join(c.failures)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def render(v: Verdict, policies: PolicySet, output: str) -> str:
    if output == "text":
        return as_text(v)
    if output == "json":
        return as_json(v)
    if output == "github":
        return as_github(v)
    if output == "sarif":
        return as_sarif(v, policies)
    if output == "junit":
        return as_junit(v)
    raise ValueError(output)

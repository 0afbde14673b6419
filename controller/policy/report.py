"""Verdicts as text, JSON, GitHub annotations + markdown summary, SARIF 2.1.0 and JUnit XML."""

from __future__ import annotations

import json
from typing import Any
from xml.etree import ElementTree as ET

from controller import __version__
from controller.policy.engine import Finding, Verdict
from controller.policy.loader import LocatedWaiver, PolicySet

OUTPUTS = ("text", "json", "github", "sarif", "junit")


def _where(f: Finding) -> str:
    return str(f.location)


def _tally_line(v: Verdict) -> str:
    t = v.waivers
    return f"waivers: {len(t.applied)} applied, {len(t.unused)} unused, {len(t.expired)} expired"


def _summary_line(v: Verdict) -> str:
    return (
        f"{v.deployments} deployment(s), {v.rules} rule(s): {v.count('pass')} passed, "
        f"{len(v.errors)} error(s), {len(v.warnings)} warning(s), {len(v.waived)} waived, "
        f"{v.count('skip')} not applicable"
    )


def _finding_text(f: Finding) -> str:
    text = f"{_where(f)}: {f.severity} [{f.rule}] {f.message}"
    if f.waiver is not None:
        loc = f.waiver.location
        text += f" (waived: {f.waiver.label}, {loc.file}:{loc.line})"
    elif f.expired_waiver is not None:
        loc = f.expired_waiver.location
        text += f" (waiver expired on {f.expired_waiver.waiver.expires}, {loc.file}:{loc.line})"
    return text


def _expired_lines(v: Verdict) -> list[str]:
    return [
        f"{w.location.file}:{w.location.line}: expired waiver: {w.label}" for w in v.waivers.expired
    ]


def refusal(v: Verdict) -> str:
    """The message the controller gives when the gate refuses an apply."""
    lines = [f"policy check failed: {len(v.errors)} error(s)"]
    lines += [f"  {_finding_text(f)}" for f in v.errors]
    return "\n".join(lines)


def as_text(v: Verdict) -> str:
    lines = [_finding_text(f) for f in v.findings if f.severity == "error" and f.waiver is None]
    lines += [_finding_text(f) for f in v.findings if f.severity == "warning" and not f.waiver]
    lines += [_finding_text(f) for f in v.waived]
    lines += _expired_lines(v)
    lines.append(_summary_line(v))
    lines.append(_tally_line(v))
    lines.append("result: " + ("pass" if v.allowed else "FAIL"))
    return "\n".join(lines) + "\n"


def _waiver_json(w: LocatedWaiver) -> dict[str, Any]:
    return {
        "rule": w.waiver.rule,
        "deployments": w.waiver.deployments,
        "owner": w.waiver.owner,
        "reason": w.waiver.reason,
        "expires": w.waiver.expires.isoformat(),
        "file": w.location.file,
        "line": w.location.line,
    }


def as_json(v: Verdict) -> str:
    findings = [
        {
            "rule": f.rule,
            "severity": f.severity,
            "deployment": f.deployment,
            "file": f.location.file,
            "line": f.location.line,
            "field": f.location.field,
            "message": f.message,
            "waived": f.waiver is not None,
            "waiver": _waiver_json(f.waiver) if f.waiver else None,
            "expiredWaiver": _waiver_json(f.expired_waiver) if f.expired_waiver else None,
        }
        for f in v.findings
    ]
    doc = {
        "allowed": v.allowed,
        "deployments": v.deployments,
        "rules": v.rules,
        "counts": {
            "passed": v.count("pass"),
            "failed": v.count("fail"),
            "notApplicable": v.count("skip"),
            "errors": len(v.errors),
            "warnings": len(v.warnings),
            "waived": len(v.waived),
        },
        "findings": findings,
        "waivers": {
            "applied": [_waiver_json(w) for w in v.waivers.applied],
            "unused": [_waiver_json(w) for w in v.waivers.unused],
            "expired": [_waiver_json(w) for w in v.waivers.expired],
        },
    }
    return json.dumps(doc, indent=2) + "\n"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def as_github(v: Verdict) -> str:
    """Workflow commands: one annotation per finding, on the line of the offending field."""
    lines: list[str] = []
    for f in v.findings:
        if f.waiver is not None:
            level = "notice"
        else:
            level = "error" if f.severity == "error" else "warning"
        props = f"file={_escape_property(f.location.file)}"
        if f.location.line:
            props += f",line={f.location.line}"
        props += f",title={_escape_property(f.rule)}"
        message = f.message + (f" (waived: {f.waiver.label})" if f.waiver else "")
        lines.append(f"::{level} {props}::{_escape_data(message)}")
    for w in v.waivers.expired:
        props = f"file={_escape_property(w.location.file)}"
        if w.location.line:
            props += f",line={w.location.line}"
        lines.append(f"::warning {props},title=expired waiver::{_escape_data(w.label)}")
    lines.append(_summary_line(v))
    lines.append(_tally_line(v))
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_summary(v: Verdict) -> str:
    """The job summary ($GITHUB_STEP_SUMMARY)."""
    icon = "✅" if v.allowed else "❌"
    out = [
        f"## {icon} serveops policy check: {'passed' if v.allowed else 'failed'}",
        "",
        _summary_line(v) + "  ",
        _tally_line(v),
        "",
    ]
    if v.findings:
        out += ["| | rule | deployment | where | message |", "|---|---|---|---|---|"]
        for f in v.findings:
            mark = "waived" if f.waiver else f.severity
            out.append(
                f"| {mark} | `{f.rule}` | {f.deployment} | `{_md(_where(f))}` | {_md(f.message)} |"
            )
        out.append("")
    if v.waivers.applied or v.waivers.expired or v.waivers.unused:
        out += [
            "### Waivers",
            "",
            "| state | rule | owner | expires | reason |",
            "|---|---|---|---|---|",
        ]
        for state, ws in (
            ("applied", v.waivers.applied),
            ("unused", v.waivers.unused),
            ("expired", v.waivers.expired),
        ):
            for w in ws:
                out.append(
                    f"| {state} | `{w.waiver.rule}` | {_md(w.waiver.owner)} | "
                    f"{w.waiver.expires} | {_md(w.waiver.reason)} |"
                )
        out.append("")
    return "\n".join(out) + "\n"


def as_sarif(v: Verdict, policies: PolicySet) -> str:
    rules = [
        {
            "id": r.id,
            "shortDescription": {"text": r.rule.description},
            "defaultConfiguration": {"level": "error" if r.rule.severity == "error" else "warning"},
        }
        for r in policies.rules
    ]
    results: list[dict[str, Any]] = []
    for f in v.findings:
        region = {"startLine": f.location.line} if f.location.line else {}
        result: dict[str, Any] = {
            "ruleId": f.rule,
            "level": "error" if f.severity == "error" else "warning",
            "message": {"text": f"{f.deployment}: {f.message}"},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": f.location.file},
                        **({"region": region} if region else {}),
                    }
                }
            ],
        }
        if f.waiver is not None:
            result["suppressions"] = [
                {"kind": "external", "status": "accepted", "justification": f.waiver.waiver.reason}
            ]
        results.append(result)
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "serveops",
                        "version": __version__,
                        "informationUri": "https://example.invalid/serveops/docs/policy.md",
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


def as_junit(v: Verdict) -> str:
    """One test case per (rule, deployment) that applied; failures are unwaived findings."""
    suite = ET.Element(
        "testsuite",
        name="serveops-policy",
        tests=str(v.count("pass") + v.count("fail")),
        failures=str(sum(1 for o in v.outcomes if any(f.blocking for f in o.findings))),
        skipped=str(v.count("skip")),
    )
    for o in v.outcomes:
        if o.status == "skip":
            continue
        case = ET.SubElement(suite, "testcase", classname=o.deployment, name=o.rule)
        for f in o.findings:
            if f.waiver is not None:
                ET.SubElement(case, "system-out").text = _finding_text(f)
            elif f.severity == "error":
                node = ET.SubElement(case, "failure", message=f.message, type=f.rule)
                node.text = _finding_text(f)
            else:
                ET.SubElement(case, "system-err").text = _finding_text(f)
    suites = ET.Element("testsuites")
    suites.append(suite)
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

"""Verdicts as text, JSON, GitHub annotations + markdown summary (SARIF and JUnit XML:
controller/policy/formats.py).

Every format says the same thing: the same findings (a waived one marked so, one whose waiver
expired with that note), the waiver tally, the notes (where the policies came from, a check
that failed closed) and the result of a change to policies/ itself.
"""

from __future__ import annotations

import json
from typing import Any

from controller.policy.engine import Finding, Verdict
from controller.policy.loader import LocatedWaiver

DOCS_URL = "https://serveops.dev/docs/policy.md"
EXPIRED_RULE = "serveops-expired-waiver"
POLICY_TESTS_RULE = "serveops-policy-tests"


def _tally_line(v: Verdict) -> str:
    t = v.waivers
    return f"waivers: {len(t.applied)} applied, {len(t.unused)} unused, {len(t.expired)} expired"


def _summary_line(v: Verdict) -> str:
    return (
        f"{v.deployments} deployment(s), {v.rules} rule(s): {v.count('pass')} passed, "
        f"{len(v.errors)} error(s), {len(v.warnings)} warning(s), {len(v.waived)} waived, "
        f"{v.count('skip')} not applicable"
    )


def waiver_note(f: Finding) -> str:
    """`(waived: ...)` or `(waiver expired on ...)`, with the waiver's file:line; or ""."""
    if f.waiver is not None:
        loc = f.waiver.location
        return f" (waived: {f.waiver.label}, {loc.file}:{loc.line})"
    if f.expired_waiver is not None:
        loc = f.expired_waiver.location
        return f" (waiver expired on {f.expired_waiver.waiver.expires}, {loc.file}:{loc.line})"
    return ""


def finding_text(f: Finding) -> str:
    return f"{f.location}: {f.severity} [{f.rule}] {f.message}{waiver_note(f)}"


def _expired_lines(v: Verdict) -> list[str]:
    return [
        f"{w.location.file}:{w.location.line}: expired waiver: {w.label}" for w in v.waivers.expired
    ]


def _change_lines(v: Verdict) -> list[str]:
    change = v.policy_change
    if change is None:
        return []
    lines = [change.summary()]
    for case in change.failed:
        for failure in case.failures:
            lines.append(f"{case.location.file}:{case.location.line}: {case.name}: {failure}")
    return lines


def refusal(v: Verdict) -> str:
    """The message the controller gives when the gate refuses an apply."""
    lines = [f"policy check failed: {len(v.errors)} error(s)"]
    lines += [f"  {finding_text(f)}" for f in v.errors]
    lines += [f"  {line}" for line in _change_lines(v)]
    lines += [f"  note: {n}" for n in v.notes]
    return "\n".join(lines)


def as_text(v: Verdict) -> str:
    lines = [f"note: {n}" for n in v.notes]
    lines += [finding_text(f) for f in v.errors]
    lines += [finding_text(f) for f in v.warnings]
    lines += [finding_text(f) for f in v.waived]
    lines += _expired_lines(v)
    lines += _change_lines(v)
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
    change = v.policy_change
    doc = {
        "allowed": v.allowed,
        "deployments": v.deployments,
        "rules": v.rules,
        "notes": v.notes,
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
        "policyChange": None
        if change is None
        else {
            "ok": change.ok,
            "files": change.files,
            "tests": len(change.cases),
            "failed": [
                {"file": c.location.file, "line": c.location.line, "case": c.name, "failures": c.failures}
                for c in change.failed
            ],
            "rulesAdded": change.rules_added,
            "rulesRemoved": change.rules_removed,
            "rulesChanged": change.rules_changed,
            "waiversAdded": change.waivers_added,
        },
    }  # fmt: skip
    return json.dumps(doc, indent=2) + "\n"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _annotation(level: str, file: str, line: int | None, title: str, message: str) -> str:
    props = f"file={_escape_property(file)}"
    if line:
        props += f",line={line}"
    props += f",title={_escape_property(title)}"
    return f"::{level} {props}::{_escape_data(message)}"


def as_github(v: Verdict) -> str:
    """Workflow commands: one annotation per finding, on the line of the offending field."""
    lines = [f"::notice title=serveops policy check::{_escape_data(n)}" for n in v.notes]
    for f in v.findings:
        level = "notice" if f.waiver else ("error" if f.severity == "error" else "warning")
        lines.append(_annotation(level, f.location.file, f.location.line, f.rule, f.message + waiver_note(f)))  # fmt: skip
    for w in v.waivers.expired:
        lines.append(_annotation("warning", w.location.file, w.location.line, "expired waiver", w.label))  # fmt: skip
    change = v.policy_change
    if change is not None:
        lines.append(f"::notice title=policies/ changed::{_escape_data(change.summary())}")
        for c in change.failed:
            for failure in c.failures:
                lines.append(_annotation("error", c.location.file, c.location.line, "policy test", f"{c.name}: {failure}"))  # fmt: skip
    lines.append(_summary_line(v))
    lines.append(_tally_line(v))
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_summary(v: Verdict) -> str:
    """The job summary ($GITHUB_STEP_SUMMARY)."""
    icon = "✅" if v.allowed else "❌"
    out = [f"## {icon} serveops policy check: {'passed' if v.allowed else 'failed'}", ""]
    out += [f"> {_md(n)}  " for n in v.notes] + ([""] if v.notes else [])
    out += [_summary_line(v) + "  ", _tally_line(v), ""]
    if v.findings:
        out += ["| | rule | deployment | where | message |", "|---|---|---|---|---|"]
        for f in v.findings:
            mark = "waived" if f.waiver else f.severity
            text = _md(f.message + waiver_note(f))
            out.append(f"| {mark} | `{f.rule}` | {f.deployment} | `{_md(str(f.location))}` | {text} |")  # fmt: skip
        out.append("")
    if v.waivers.applied or v.waivers.expired or v.waivers.unused:
        out += ["### Waivers", "", "| state | rule | owner | expires | reason |"]
        out.append("|---|---|---|---|---|")
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
    if v.policy_change is not None:
        out += ["### policies/ changed", "", _md(v.policy_change.summary()), ""]
        out += [f"- `{c.location.file}:{c.location.line}` {_md(c.name)}: {_md('; '.join(c.failures))}" for c in v.policy_change.failed]  # fmt: skip
        out.append("")
    return "\n".join(out) + "\n"

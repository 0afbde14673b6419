"""Policy files: pydantic models whose field descriptions are the reference (docs/policy.md).

Three kinds of YAML file live in policies/, told apart by `kind`:

- `PolicyRules` (policies/*.yaml): rules shaped like Kubernetes' ValidatingAdmissionPolicy.
- `PolicyWaivers` (policies/*.yaml): owned, dated exceptions to rules for named deployments.
- `PolicyTest` (policies/tests/*.yaml): cases of input and expected verdict.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

API_VERSION = "serveops.dev/v1alpha1"
RULE_ID_PATTERN = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"
ChangeKind = Literal["created", "updated", "deleted", "unchanged"]
Severity = Literal["error", "warning"]
# `environment/name` globs: `production/*`, `*/fraud`, `staging/fraud-*`.
DEPLOYMENT_GLOB_PATTERN = r"^[a-z0-9*?\[\]-]+/[a-z0-9*?\[\]-]+$"
# `spec.model`, `spec.rollout.steps[0].weight`, `metadata.labels.db-password`,
# `metadata.labels["app.kubernetes.io/name"]`: a map key that is not a plain word is quoted.
FIELD_PATH_PATTERN = (
    r'^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_-]*|\[[0-9]+\]|\["[^"\\]*"\])*$'
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Match(_Strict):
    """Which deployments and changes a rule applies to; every given criterion must hold."""

    environments: list[str] = Field(
        default_factory=list,
        description="Environments (folders of deployments/) the rule applies to; empty: all.",
    )
    names: list[str] = Field(
        default_factory=list,
        description="Deployment name globs (`fraud`, `fraud-*`); empty: all.",
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels the deployment must carry with these values (all of them). "
        "The value `*` only requires the key.",
    )
    kind: Literal["ModelDeployment", "BatchInference"] = Field(
        default="ModelDeployment",
        description="Kind of deployment file the rule judges: `ModelDeployment` (endpoints) or "
        "`BatchInference` (batch runs). `object` has that kind's fields, and `field` paths are "
        "checked against them.",
    )
    changes: list[ChangeKind] = Field(
        default_factory=lambda: list[ChangeKind](["created", "updated", "unchanged"]),
        description="Kinds of change the rule applies to: `created`, `updated`, `deleted`, "
        "`unchanged` (seen only with `check --all` and in the controller's gate). For "
        "`deleted`, `object` is null and `oldObject` holds the deployment.",
    )


class MatchCondition(_Strict):
    """A CEL expression that must be true for the rule to apply (like a VAP matchCondition)."""

    name: str = Field(min_length=1, description="Name of the condition, for messages.")
    expression: str = Field(
        min_length=1, description="CEL expression returning a bool; false skips the rule."
    )


class Validation(_Strict):
    """One CEL check of a rule: false means the rule fails with `message`."""

    expression: str = Field(
        min_length=1, description="CEL expression returning a bool: true passes."
    )
    message: str = Field(
        default="",
        description="Message shown when the expression is false. Defaults to the rule's "
        "description.",
    )
    messageExpression: str | None = Field(
        default=None,
        description="CEL expression returning a string, shown instead of `message` when it "
        "evaluates without error.",
    )
    field: str | None = Field(
        default=None,
        pattern=FIELD_PATH_PATTERN,
        description="Field of the deployment file the failure points at, e.g. `spec.model` or "
        "`spec.rollout.steps[0].weight`: annotations go on its line (or its closest parent's). "
        "It must exist in the deployment schema.",
    )
    fieldExpression: str | None = Field(
        default=None,
        description="CEL expression returning the field path of the offending entry, e.g. "
        "`'metadata.labels.' + object.metadata.labels.filter(k, ...)[0]` or a path from "
        "`findStrings`; evaluated when the validation fails, instead of `field` when it gives "
        'a non-empty string. A map key that is not a plain word is written `["key"]`.',
    )


class Rule(_Strict):
    """A gating rule: where it applies, and what must hold there."""

    id: str = Field(
        pattern=RULE_ID_PATTERN,
        max_length=80,
        description="Unique id across policies/, referenced by waivers and tests.",
    )
    description: str = Field(min_length=1, description="What the rule requires, and why.")
    severity: Severity = Field(
        default="error",
        description="`error` blocks the change (exit 1, apply refused); `warning` only reports.",
    )
    match: Match = Field(default_factory=Match, description="Deployments and changes it covers.")
    matchConditions: list[MatchCondition] = Field(
        default_factory=list,
        description="CEL conditions, all true for the rule to apply (e.g. only when the model "
        "changed, or only when a registry record is available).",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Values the expressions read as `params` (thresholds, limits, freeze "
        "windows), so they are tuned without touching the CEL.",
    )
    validations: list[Validation] = Field(
        min_length=1, description="CEL checks; each false one is a failure of the rule."
    )


class PolicyRules(_Strict):
    """A file of rules."""

    apiVersion: Literal["serveops.dev/v1alpha1"] = Field(description=f"Always `{API_VERSION}`.")
    kind: Literal["PolicyRules"] = Field(description="Always `PolicyRules`.")
    rules: list[Rule] = Field(min_length=1, description="The rules of this file.")


class Waiver(_Strict):
    """An exception to one rule for some deployments, owned and dated."""

    rule: str = Field(description="Id of the waived rule; it must exist.")
    deployments: list[str] = Field(
        min_length=1,
        description="`environment/name` of each waived deployment; globs allowed (`staging/*`).",
    )
    owner: str = Field(min_length=1, description="Who answers for the exception.")
    reason: str = Field(min_length=1, description="Why the rule does not apply here.")
    expires: dt.date = Field(
        description="Last day (UTC, `YYYY-MM-DD`) the waiver applies. After it, the rule "
        "blocks again and the expired waiver is reported."
    )

    @field_validator("deployments")
    @classmethod
    def _globs(cls, values: list[str]) -> list[str]:
        for v in values:
            if not re.match(DEPLOYMENT_GLOB_PATTERN, v):
                raise ValueError(f"{v!r} must be `environment/name` (globs allowed)")
        return values


class PolicyWaivers(_Strict):
    """A file of waivers."""

    apiVersion: Literal["serveops.dev/v1alpha1"] = Field(description=f"Always `{API_VERSION}`.")
    kind: Literal["PolicyWaivers"] = Field(description="Always `PolicyWaivers`.")
    waivers: list[Waiver] = Field(default_factory=list, description="The waivers of this file.")


class Expect(_Strict):
    """The verdict a test case expects."""

    fail: list[str] = Field(
        default_factory=list,
        description="Rule ids that must fail (waived failures count as failures here).",
    )
    pass_: list[str] = Field(
        default_factory=list,
        alias="pass",
        description="Rule ids that must apply and pass.",
    )
    skip: list[str] = Field(
        default_factory=list, description="Rule ids that must not apply (match or conditions)."
    )


class TestCase(_Strict):
    """One input to the rules, as `check` would build it, and the expected verdict."""

    name: str = Field(min_length=1, description="What the case shows.")
    object: dict[str, Any] | None = Field(
        default=None,
        description="The deployment at head (a deployment file's content); null for a "
        "deletion. It is validated like a deployment file.",
    )
    oldObject: dict[str, Any] | None = Field(
        default=None, description="The deployment at base; null for a creation."
    )
    model: dict[str, Any] | None = Field(
        default=None,
        description="The registry record (`model` variable); null: no registry was reachable.",
    )
    simulation: dict[str, Any] | None = Field(
        default=None, description="The simulation report for this deployment, if any."
    )
    request: dict[str, Any] = Field(
        default_factory=dict,
        description="Request context: `time` (RFC 3339), `author`, `branch`. Time defaults "
        "to 2026-01-15T12:00:00Z so cases do not depend on the day they run.",
    )
    expect: Expect = Field(description="The verdict expected.")


class PolicyTest(_Strict):
    """A file of test cases for rules."""

    __test__ = False  # not a pytest class

    apiVersion: Literal["serveops.dev/v1alpha1"] = Field(description=f"Always `{API_VERSION}`.")
    kind: Literal["PolicyTest"] = Field(description="Always `PolicyTest`.")
    cases: list[TestCase] = Field(min_length=1, description="The cases.")


TestCase.__test__ = False  # type: ignore[attr-defined]


_FIELD_TOKEN = re.compile(r'\.?([A-Za-z_][A-Za-z0-9_-]*)|\[([0-9]+)\]|\["([^"\\]*)"\]')
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def parse_field_path(path: str) -> tuple[str | int, ...] | None:
    """`spec.rollout.steps[0].weight` -> ("spec", "rollout", "steps", 0, "weight"); None when
    `path` is not a field path."""
    parts: list[str | int] = []
    pos = 0
    while pos < len(path):
        m = _FIELD_TOKEN.match(path, pos)
        if m is None or (m.group(1) is not None and pos > 0 and path[pos] != "."):
            return None
        name, index, key = m.groups()
        parts.append(int(index) if index is not None else (name if name is not None else key))
        pos = m.end()
    return tuple(parts) if parts else None


def format_field_path(parts: tuple[str | int, ...]) -> str:
    """The inverse of parse_field_path."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += '["' + part.replace('"', "'") + '"]'
    return out

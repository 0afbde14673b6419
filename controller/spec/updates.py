"""`spec.model_updates`: which new registered versions the controller proposes through Git
(docs/monitoring.md, "Proposing a new version"), as Flux's ImagePolicy says which image tags
its automation may write.

A rule only selects; what it selects becomes a commit on a branch (and a pull request when the
operator configured a forge), which goes through the gate like any change. So a pull request
that sets this field can at most make the controller propose versions of the deployment's own
model: never apply one.
"""

from __future__ import annotations

import math
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_METRIC = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9_.\-/ ]{1,250}?)\s*(?P<op>>=|<=|>|<)\s*(?P<value>[-+0-9.eE]{1,40})\s*$"
)
OPERATORS = (">=", "<=", ">", "<")
ALIAS_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,255}$"
TAG_PATTERN = r"^[^=\s]{1,250}=.{0,250}$"
BRANCH_PREFIX_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*){0,5}$"


def parse_metric_rule(text: str) -> tuple[str, str, float]:
    """`accuracy>=0.95` as (name, operator, threshold); ValueError says what is wrong."""
    match = _METRIC.match(text) if len(text) <= 300 else None
    if match is None:
        raise ValueError(
            "metric rule must be NAME OP NUMBER with OP one of >=, <=, >, < (e.g. "
            f"accuracy>=0.95), not {text[:80]!r}"
        )
    try:
        threshold = float(match["value"])
    except ValueError:
        raise ValueError(f"metric rule {text!r}: {match['value']!r} is not a number") from None
    if not math.isfinite(threshold):
        raise ValueError(f"metric rule {text!r}: the threshold must be a finite number")
    return match["name"].strip(), match["op"], threshold


class ModelUpdates(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alias: str | None = Field(
        default=None,
        pattern=ALIAS_PATTERN,
        description="Propose the version this MLflow alias points at (e.g. `challenger`).",
    )
    tag: str | None = Field(
        default=None,
        pattern=TAG_PATTERN,
        description="KEY=VALUE: propose the newest READY version with this tag.",
    )
    metric: str | None = Field(
        default=None,
        description="NAME>=X (or <=, >, <): propose the newest READY version whose MLflow run "
        "logged metric NAME meeting the threshold (e.g. `auc>=0.92`).",
    )
    branch_prefix: str = Field(
        default="serveops/propose",
        pattern=BRANCH_PREFIX_PATTERN,
        description="Proposal branches are named PREFIX/ENVIRONMENT/NAME-vVERSION.",
    )

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str | None) -> str | None:
        if value is not None:
            parse_metric_rule(value)
        return value

    @model_validator(mode="after")
    def _one_rule(self) -> ModelUpdates:
        if sum(x is not None for x in (self.alias, self.tag, self.metric)) > 1:
            raise ValueError("set at most one of 'alias', 'tag', 'metric' (none: the newest)")
        return self

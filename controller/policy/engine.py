"""Evaluate compiled rules on subjects: pure, given the registry records and the request."""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from controller.errors import Location
from controller.policy.activation import (
    SKIP,
    Activation,
    RequestContext,
    RuleResult,
    Status,
    run_rule,
    subject_context,
)
from controller.policy.celrt import cel
from controller.policy.changes import Subject
from controller.policy.loader import CompiledRule, LocatedWaiver, PolicySet
from controller.policy.model import parse_field_path
from controller.policy.parallel import PARALLEL_MIN_EVALUATIONS, parallel_map
from controller.registry.mlflow import ModelNotFound, ModelVersionRecord
from controller.spec.models import parse_model_uri

if TYPE_CHECKING:
    from controller.policy.proposal import PolicyChange

__all__ = ["RequestContext", "RuleResult", "Status", "subject_context"]


@dataclass(frozen=True)
class Finding:
    """A failed validation of a rule on a deployment."""

    rule: str
    severity: str
    deployment: str  # environment/name
    location: Location
    message: str
    waiver: LocatedWaiver | None = None  # the active waiver that excuses it
    expired_waiver: LocatedWaiver | None = None  # a matching waiver that has expired

    @property
    def blocking(self) -> bool:
        return self.severity == "error" and self.waiver is None


@dataclass(frozen=True)
class Outcome:
    rule: str
    deployment: str
    status: Status
    findings: tuple[Finding, ...] = ()


@dataclass
class WaiverTally:
    applied: list[LocatedWaiver] = field(default_factory=list)  # excused at least one failure
    unused: list[LocatedWaiver] = field(default_factory=list)  # active, nothing to excuse
    expired: list[LocatedWaiver] = field(default_factory=list)  # past their date: not waiving


@dataclass
class Verdict:
    """The result of a policy evaluation; `allowed` is false when an error is not waived."""

    outcomes: list[Outcome]
    waivers: WaiverTally
    deployments: int
    rules: int
    notes: list[str] = field(default_factory=list)  # where policies came from, fail-closed...
    # policies/ as the judged change would leave it: checked, reported, not applied
    policy_change: PolicyChange | None = None

    @property
    def findings(self) -> list[Finding]:
        return [f for o in self.outcomes for f in o.findings]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.blocking]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning" and f.waiver is None]

    @property
    def waived(self) -> list[Finding]:
        return [f for f in self.findings if f.waiver is not None]

    @property
    def allowed(self) -> bool:
        return not self.errors and (self.policy_change is None or self.policy_change.ok)

    def count(self, status: Status) -> int:
        return sum(1 for o in self.outcomes if o.status == status)


ModelLookup = Callable[[str], ModelVersionRecord]


def model_as_cel(uri: str, record: ModelVersionRecord) -> dict[str, Any]:
    _, _, alias = parse_model_uri(uri)
    return {
        "name": record.name,
        "version": record.version,
        "uri": uri,
        "alias": alias,
        "status": record.status,
        "aliases": list(record.aliases),
        "tags": dict(record.tags),
        "description": record.description,
        "source": record.source,
        "run_id": record.run_id,
        "creation_time": record.creation_time,
        "run": {
            "metrics": dict(record.run_metrics),
            "params": dict(record.run_params),
            "tags": dict(record.run_tags),
        },
    }


def model_missing(uri: str, reason: str) -> dict[str, Any]:
    name, version, alias = parse_model_uri(uri)
    return {
        "name": name,
        "version": version or "",
        "uri": uri,
        "alias": alias,
        "status": "NOT_FOUND",
        "aliases": [],
        "tags": {},
        "description": reason,
        "source": "",
        "run_id": "",
        "creation_time": None,
        "run": {"metrics": {}, "params": {}, "tags": {}},
    }


class ModelCache:
    """Registry records by model URI, each looked up once per run."""

    def __init__(self, lookup: ModelLookup | None) -> None:
        self._lookup = lookup
        self._cache: dict[str, dict[str, Any] | None] = {}

    def get(self, uri: str | None) -> dict[str, Any] | None:
        if uri is None or self._lookup is None:
            return None
        if uri not in self._cache:
            try:
                self._cache[uri] = model_as_cel(uri, self._lookup(uri))
            except ModelNotFound as err:
                self._cache[uri] = model_missing(uri, err.message)
        return self._cache[uri]


# The `simulation` input of a subject, given its registry record (None without a registry).
SimulationLookup = Callable[[Subject, Mapping[str, Any] | None], dict[str, Any] | None]


def _simulation_lookup(
    simulation: Mapping[str, Any] | SimulationLookup | None,
) -> SimulationLookup | None:
    if simulation is None or callable(simulation):
        return simulation
    report = simulation
    return lambda subject, _model: simulation_for(report, subject)


def simulation_for(report: Mapping[str, Any] | None, subject: Subject) -> dict[str, Any] | None:
    """The part of a simulation report about this deployment.

    A report with `deployments: {"<env>/<name>": {...}}` (or keyed by name) gives each its
    own entry; any other report is about the change as a whole and is given as is."""
    if report is None:
        return None
    per = report.get("deployments")
    if isinstance(per, Mapping):
        entry = per.get(subject.key, per.get(subject.name))
        return dict(entry) if isinstance(entry, Mapping) else None
    return dict(report)


def matches(rule: CompiledRule, subject: Subject) -> bool:
    """The rule's `match` selects the subject."""
    m = rule.rule.match
    if subject.document_kind != m.kind or subject.kind not in m.changes:
        return False
    if m.environments and subject.environment not in m.environments:
        return False
    if m.names and not any(fnmatch.fnmatchcase(subject.name, p) for p in m.names):
        return False
    if m.labels:
        labels = subject.manifest.deployment.metadata.labels
        for key, value in m.labels.items():
            if key not in labels or (value != "*" and labels[key] != value):
                return False
    return True


def _waiver_for(waivers: list[LocatedWaiver], rule: str, subject: Subject) -> LocatedWaiver | None:
    for w in waivers:
        if w.waiver.rule == rule and any(
            fnmatch.fnmatchcase(subject.key, p) for p in w.waiver.deployments
        ):
            return w
    return None


def _location(subject: Subject, field_name: str | None) -> Location:
    manifest = subject.manifest
    if field_name is None:
        return Location(manifest.path, manifest.line_of("metadata", "name"), None)
    parts = parse_field_path(field_name) or ()
    return Location(manifest.path, manifest.line_of(*parts), field_name)


def evaluate_rule(rule: CompiledRule, subject: Subject, ctx: cel.Context) -> RuleResult:
    """(status, ((field, message), ...) of failed validations) for one rule on one subject,
    in a context built by subject_context."""
    if not matches(rule, subject):
        return SKIP
    for var in rule.params_vars:
        ctx.add_variable(var, rule.rule.params)
    return run_rule(rule, lambda compiled: compiled.run(ctx))


def _evaluate_subjects(
    rules: list[CompiledRule],
    subjects: list[Subject],
    matching: list[list[bool]],
    models: list[dict[str, Any] | None],
    request: RequestContext,
    simulations: list[dict[str, Any] | None],
) -> list[list[RuleResult]]:
    """Every matching rule on every subject (matching[i][j]: rule j applies to subject i;
    models[i]: subject i's registry record), before waivers."""
    activation = Activation(rules, request)
    out: list[list[RuleResult]] = []
    for subject, matches, model, simulation in zip(
        subjects, matching, models, simulations, strict=True
    ):
        if any(matches):
            activation.load(subject, model, simulation)
        out.append(
            [
                activation.run_rule(rule) if match else SKIP
                for rule, match in zip(rules, matches, strict=True)
            ]
        )
    return out


def default_workers() -> int:
    """Processes `serveops check` parses and evaluates in: the CPUs it may use, at most 4,
    less those the load average says are busy (like `make -l`). A second process pays only
    on a free core: on a machine kept busy by others it measured 0.2 s slower (about 2 s)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        busy = round(os.getloadavg()[0])
    except OSError:  # no load average on this platform
        busy = 0
    return max(1, min(4, cpus - busy))


def evaluate(
    policies: PolicySet,
    subjects: list[Subject],
    request: RequestContext,
    *,
    models: ModelLookup | None = None,
    simulation: Mapping[str, Any] | SimulationLookup | None = None,
    workers: int = 1,
) -> Verdict:
    """Every rule on every subject, waivers applied: the same verdict for CI and the gate.

    With `workers` > 1 the rules run in that many processes (fork) when there are enough
    evaluations to pay for them; the verdict is the same. Only for a process that may fork
    (the CLI), not for the controller and its threads."""
    today = request.time.astimezone(dt.UTC).date()
    active = [w for w in policies.waivers if w.waiver.expires >= today]
    expired = [w for w in policies.waivers if w.waiver.expires < today]
    used: set[int] = set()
    cache = ModelCache(models)
    rules = policies.rules
    matching = [[matches(rule, s) for rule in rules] for s in subjects]
    # looked up here, before any fork: each record once, and no client is used across a fork
    records = [
        cache.get(s.manifest.deployment.spec.model) if any(m) else None
        for s, m in zip(subjects, matching, strict=True)
    ]
    lookup = _simulation_lookup(simulation)
    simulations = [
        lookup(s, r) if lookup is not None and any(m) else None
        for s, m, r in zip(subjects, matching, records, strict=True)
    ]

    def evaluate_part(part: range) -> list[list[RuleResult]]:
        return _evaluate_subjects(
            rules,
            subjects[part.start : part.stop],
            matching[part.start : part.stop],
            records[part.start : part.stop],
            request,
            simulations[part.start : part.stop],
        )

    if len(subjects) * len(rules) < PARALLEL_MIN_EVALUATIONS:
        workers = 1
    results = parallel_map(evaluate_part, len(subjects), workers)
    outcomes: list[Outcome] = []
    ids = [rule.id for rule in rules]
    for subject, per_rule in zip(subjects, results, strict=True):
        key = subject.key
        for rule, rule_id, (status, failures) in zip(rules, ids, per_rule, strict=True):
            if status != "fail":
                outcomes.append(Outcome(rule_id, key, status))
                continue
            waiver = _waiver_for(active, rule_id, subject)
            stale = None if waiver else _waiver_for(expired, rule_id, subject)
            if waiver is not None:
                used.add(id(waiver))
            findings = tuple(
                Finding(
                    rule_id,
                    rule.rule.severity,
                    key,
                    _location(subject, field_name),
                    message,
                    waiver,
                    stale,
                )
                for field_name, message, _ in failures
            )
            outcomes.append(Outcome(rule_id, key, "fail", findings))
    tally = WaiverTally(
        applied=[w for w in active if id(w) in used],
        unused=[w for w in active if id(w) not in used],
        expired=expired,
    )
    return Verdict(outcomes, tally, len(subjects), len(rules))

"""Evaluate compiled rules on subjects: pure, given the registry records and the request."""

from __future__ import annotations

import datetime as dt
import fnmatch
import functools
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from controller.errors import Location
from controller.policy.celexpr import Compiled, FieldPathT, path_variable
from controller.policy.celrt import cel
from controller.policy.changes import Subject
from controller.policy.loader import CompiledRule, LocatedWaiver, PolicySet
from controller.policy.parallel import PARALLEL_MIN_EVALUATIONS, parallel_map
from controller.registry.mlflow import ModelNotFound, ModelVersionRecord
from controller.spec.models import parse_model_uri

Status = Literal["pass", "fail", "skip"]


@dataclass(frozen=True)
class RequestContext:
    """Who asks, when, from where: the `request` variable."""

    time: dt.datetime
    author: str = ""
    branch: str = ""
    base: str = ""
    head: str = ""

    def as_cel(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "author": self.author,
            "branch": self.branch,
            "base": self.base,
            "head": self.head,
        }


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
        return not self.errors

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


def _matches(rule: CompiledRule, subject: Subject) -> bool:
    m = rule.rule.match
    if subject.kind not in m.changes:
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
    parts: list[str | int] = []
    for token in field_name.replace("[", ".[").split("."):
        if token.startswith("["):
            parts.append(int(token[1:-1]))
        elif token:
            parts.append(token)
    return Location(manifest.path, manifest.line_of(*parts), field_name)


def _truthy(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


Failure = tuple[str | None, str]  # (field, message) of a failed validation
RuleResult = tuple[Status, tuple[Failure, ...]]
Runner = Callable[[Compiled], Any]  # runs one compiled expression in the current context
_PASS: RuleResult = ("pass", ())
_SKIP: RuleResult = ("skip", ())


def evaluate_rule(rule: CompiledRule, subject: Subject, ctx: cel.Context) -> RuleResult:
    """(status, ((field, message), ...) of failed validations) for one rule on one subject,
    in a context built by subject_context."""
    if not _matches(rule, subject):
        return _SKIP
    for var in rule.params_vars:
        ctx.add_variable(var, rule.rule.params)
    return _run_rule(rule, lambda compiled: compiled.run(ctx))


def _run_rule(rule: CompiledRule, run: Runner) -> RuleResult:
    for name, cond in rule.conditions:
        try:
            result = run(cond)
        except Exception as err:  # the CEL runtime raises several types; all are failures
            return "fail", ((None, f"match condition {name!r} could not be evaluated: {err}"),)
        if _truthy(result) is None:
            return "fail", ((None, f"match condition {name!r} returned {result!r}, not a bool"),)
        if not result:
            return _SKIP
    failures: list[Failure] = []
    for v in rule.validations:
        try:
            result = run(v.expression)
        except Exception as err:
            failures.append((v.field, f"{v.message} (expression could not be evaluated: {err})"))
            continue
        if _truthy(result) is None:
            failures.append((v.field, f"{v.message} (expression returned {result!r}, not a bool)"))
            continue
        if result:
            continue
        message = v.message
        if v.message_expression is not None:
            try:
                text = run(v.message_expression)
                if isinstance(text, str) and text:
                    message = text
            except Exception:
                pass  # fall back to `message`, as Kubernetes does
        failures.append((v.field, message))
    return ("fail", tuple(failures)) if failures else _PASS


@functools.lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _search(text: str, pattern: str) -> bool:
    """`text.search(pattern)`: CEL's `matches` with each pattern compiled once per run. The
    runtime's `matches` recompiles its regex on every call (about 0.4 ms), which dominated
    `check` on 1,000 deployments. Python's `re` reads the RE2 syntax rules use (classes,
    alternation, `(?i)`, anchors)."""
    if not isinstance(text, str) or not isinstance(pattern, str):
        raise TypeError("search(string, string) takes strings")
    return _regex(pattern).search(text) is not None


FUNCTIONS = {"search": _search}  # serveops' CEL extensions (docs/policy.md)


def subject_variables(
    subject: Subject, model: dict[str, Any] | None, simulation: dict[str, Any] | None
) -> dict[str, Any]:
    """The variables that describe one deployment: all but `request` and `params`."""
    obj = subject.as_object()
    # unchanged (same manifest at both revisions): one dump serves both
    old = obj if subject.head is not None and subject.head is subject.base else None
    return {
        "object": obj,
        "oldObject": old if old is not None else subject.as_old_object(),
        "change": {
            "kind": subject.kind,
            "fields": list(subject.fields),
            "modelChanged": subject.model_changed,
            "environment": subject.environment,
            "name": subject.name,
            "path": subject.path,
        },
        "model": model,
        "simulation": simulation,
    }


def subject_context(
    subject: Subject,
    model: dict[str, Any] | None,
    simulation: dict[str, Any] | None,
    request: RequestContext,
) -> cel.Context:
    return cel.Context(
        {
            **subject_variables(subject, model, simulation),
            "request": request.as_cel(),
            "params": {},
        },
        functions=FUNCTIONS,
    )


_MISSING = object()


class Activation:
    """One CEL context for a whole run: the request, the functions and every rule's params
    (each under the rule's own variable, see celexpr.compile_expression) are bound once;
    only the deployment's variables change from one deployment to the next. The runtime
    rebuilds its activation whenever a variable changes, so this is one rebuild per
    deployment instead of one per rule and deployment. The sub-objects the rules read
    (`object.spec.model`, see celexpr.bind_paths) are bound once per deployment too."""

    def __init__(self, rules: list[CompiledRule], request: RequestContext) -> None:
        self.ctx = cel.Context({"request": request.as_cel(), "params": {}}, functions=FUNCTIONS)
        # ids of the rules whose programs read plain `params` (compile_expression could not
        # rename it): theirs is bound before each run
        self.unbound = {id(rule) for rule in rules if "params" in rule.params_vars}
        for rule in rules:
            for var in rule.params_vars - {"params"}:
                self.ctx.add_variable(var, rule.rule.params)
        self.programs = [c for rule in rules for c in rule.programs]
        paths = {path for c in self.programs for path in c.paths}
        self.paths = [(path, path_variable(path)) for path in sorted(paths)]
        self.reads = frozenset[str]().union(*(c.reads_bound for c in self.programs))
        self.run: Runner = self._run_bound

    def load(
        self, subject: Subject, model: dict[str, Any] | None, simulation: dict[str, Any] | None
    ) -> None:
        """Bind the variables of `subject`, and choose how `run` runs programs for it."""
        variables = subject_variables(subject, model, simulation)
        unavailable: list[FieldPathT] = []
        for path, var in self.paths:
            value = variables[path[0]]
            for field_name in path[1:]:
                if not isinstance(value, dict) or field_name not in value:
                    value = _MISSING  # below a null: the program as written runs instead
                    break
                value = value[field_name]
            if value is _MISSING:
                unavailable.append(path)
                value = None
            variables[var] = value
        needed = self.reads
        if unavailable:
            missing = frozenset(unavailable)
            needed = needed.union(
                *(c.reads for c in self.programs if not c.paths.isdisjoint(missing))
            )
            self.run = lambda compiled: compiled.run_bound(self.ctx, missing)
        else:
            self.run = self._run_bound
        for name, value in variables.items():
            # converting a value costs about 2 us per field: skip those no program reads
            self.ctx.add_variable(name, value if name in needed else None)

    def _run_bound(self, compiled: Compiled) -> Any:
        return compiled.fast.execute(self.ctx)

    def run_rule(self, rule: CompiledRule) -> RuleResult:
        if self.unbound and id(rule) in self.unbound:
            for var in rule.params_vars:
                self.ctx.add_variable(var, rule.rule.params)
        return _run_rule(rule, self.run)


def _evaluate_subjects(
    rules: list[CompiledRule],
    subjects: list[Subject],
    matching: list[list[bool]],
    models: list[dict[str, Any] | None],
    request: RequestContext,
    simulation: Mapping[str, Any] | None,
) -> list[list[RuleResult]]:
    """Every matching rule on every subject (matching[i][j]: rule j applies to subject i;
    models[i]: subject i's registry record), before waivers."""
    activation = Activation(rules, request)
    out: list[list[RuleResult]] = []
    for subject, matches, model in zip(subjects, matching, models, strict=True):
        if any(matches):
            activation.load(subject, model, simulation_for(simulation, subject))
        out.append(
            [
                activation.run_rule(rule) if match else _SKIP
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
    simulation: Mapping[str, Any] | None = None,
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
    matching = [[_matches(rule, s) for rule in rules] for s in subjects]
    # looked up here, before any fork: each record once, and no client is used across a fork
    records = [
        cache.get(s.manifest.deployment.spec.model) if any(m) else None
        for s, m in zip(subjects, matching, strict=True)
    ]

    def evaluate_part(part: range) -> list[list[RuleResult]]:
        return _evaluate_subjects(
            rules,
            subjects[part.start : part.stop],
            matching[part.start : part.stop],
            records[part.start : part.stop],
            request,
            simulation,
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
                for field_name, message in failures
            )
            outcomes.append(Outcome(rule_id, key, "fail", findings))
    tally = WaiverTally(
        applied=[w for w in active if id(w) in used],
        unused=[w for w in active if id(w) not in used],
        expired=expired,
    )
    return Verdict(outcomes, tally, len(subjects), len(rules))

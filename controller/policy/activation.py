"""Binding a deployment to CEL and running a rule's programs on it.

Rules share one CEL activation per deployment (Activation): the request, functions and every
rule's params are bound once per run, the deployment's variables once per deployment. The
verdict (which rules apply, waivers, findings) is engine.py's.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from controller.policy.celexpr import Compiled
from controller.policy.celrewrite import FieldPathT, path_variable
from controller.policy.celrt import cel
from controller.policy.changes import Subject
from controller.policy.loader import CompiledRule, CompiledValidation
from controller.policy.model import format_field_path, parse_field_path

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


def _truthy(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


class Failure(NamedTuple):
    """A failed validation: the field it points at, the message, and whether the rule could
    not be evaluated at all (a runtime error, or not a bool: still a failure in a check, fail
    closed, but not the `fail` a policy test expects)."""

    field: str | None
    message: str
    errored: bool = False


RuleResult = tuple[Status, tuple[Failure, ...]]
Runner = Callable[[Compiled], Any]  # runs one compiled expression in the current context
PASS: RuleResult = ("pass", ())
SKIP: RuleResult = ("skip", ())


def run_rule(rule: CompiledRule, run: Runner) -> RuleResult:
    """(status, failures) of one rule whose params are bound, running its programs with `run`."""
    for name, cond in rule.conditions:
        try:
            result = run(cond)
        except Exception as err:  # the CEL runtime raises several types; all are failures
            why = f"match condition {name!r} could not be evaluated: {err}"
            return "fail", (Failure(None, why, True),)
        if _truthy(result) is None:
            why = f"match condition {name!r} returned {result!r}, not a bool"
            return "fail", (Failure(None, why, True),)
        if not result:
            return SKIP
    failures: list[Failure] = []
    for v in rule.validations:
        try:
            result = run(v.expression)
        except Exception as err:
            why = f"{v.message} (expression could not be evaluated: {err})"
            failures.append(Failure(v.field, why, True))
            continue
        if _truthy(result) is None:
            why = f"{v.message} (expression returned {result!r}, not a bool)"
            failures.append(Failure(v.field, why, True))
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
        failures.append(Failure(_field(v, run), message))
    return ("fail", tuple(failures)) if failures else PASS


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


def _walk(value: Any) -> Iterator[tuple[tuple[str | int, ...], Any, bool]]:
    """(path, item, is_key) of every map key and every value below `value`, in file order."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            for key in item:
                yield (*path, str(key)), str(key), True
            stack.extend(((*path, str(k)), v) for k, v in reversed(list(item.items())))
        elif isinstance(item, list):
            stack.extend(((*path, i), sub) for i, sub in reversed(list(enumerate(item))))
        else:
            yield path, item, False


def _finder(keys: bool) -> Callable[[Any, str], list[str]]:
    def find(value: Any, pattern: str) -> list[str]:
        if not isinstance(pattern, str):
            raise TypeError("takes a pattern string")
        regex = _regex(pattern)
        return [
            format_field_path(path)
            for path, item, is_key in _walk(value)
            if is_key == keys and isinstance(item, str) and regex.search(item)
        ]

    return find


# `findStrings(value, pattern)`: the field paths (relative to `value`: from `object`, paths of
# the deployment file) of every string anywhere in `value` that `pattern` finds (`search`).
# `findKeys(value, pattern)`: the same for map keys (a label's or a header's name).
_find_strings = _finder(keys=False)
_find_keys = _finder(keys=True)


def _field(v: CompiledValidation, run: Runner) -> str | None:
    """The field a failed validation points at: its fieldExpression's, else its `field`."""
    if v.field_expression is not None:
        try:
            path = run(v.field_expression)
        except Exception:  # the CEL runtime raises several types: fall back to `field`
            return v.field
        if isinstance(path, str) and parse_field_path(path) is not None:
            return path
    return v.field


# serveops' CEL extensions (docs/policy.md)
FUNCTIONS = {"search": _search, "findStrings": _find_strings, "findKeys": _find_keys}


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
    (`object.spec.model`, see celrewrite.bind_paths) are bound once per deployment too."""

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
        return run_rule(rule, self.run)

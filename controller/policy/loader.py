"""policies/ to compiled rules and waivers; every problem located at file, line and field."""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from controller.errors import BadInput, Location, Problem, ValidationFailed
from controller.policy.celexpr import CelError, Compiled, compile_expression, non_cel_values
from controller.policy.celfields import Tree, variable_trees
from controller.policy.celparse import ParseError, parse
from controller.policy.celtypes import CelType, check_result, variable_types
from controller.policy.locate import position_in_value
from controller.policy.model import (
    PolicyRules,
    PolicyTest,
    PolicyWaivers,
    Rule,
    Waiver,
    parse_field_path,
)
from controller.spec.yamldoc import YamlDoc, load_yaml, read_file, validate_doc

POLICIES_DIR = "policies"
MAX_POLICY_FILE_BYTES = 1024 * 1024


class PolicyInvalid(ValidationFailed):
    """Problems in policy, waiver or policy test files; each names file, line and field."""

    files = "policy files"


@dataclass(frozen=True)
class CompiledValidation:
    expression: Compiled
    message: str
    message_expression: Compiled | None
    field: str | None
    field_expression: Compiled | None = None


@dataclass(frozen=True)
class CompiledRule:
    rule: Rule
    location: Location  # where the rule is declared (its `id`)
    conditions: list[tuple[str, Compiled]]
    validations: list[CompiledValidation]

    @property
    def id(self) -> str:
        return self.rule.id

    @functools.cached_property
    def programs(self) -> tuple[Compiled, ...]:
        """Every compiled expression of the rule."""
        compiled = [c for _, c in self.conditions]
        for v in self.validations:
            compiled.append(v.expression)
            if v.message_expression is not None:
                compiled.append(v.message_expression)
            if v.field_expression is not None:
                compiled.append(v.field_expression)
        return tuple(compiled)

    @functools.cached_property
    def params_vars(self) -> frozenset[str]:
        """The variables its programs read the rule's params from (see compile_expression)."""
        return frozenset(c.params_var for c in self.programs if c.params_var is not None)


@dataclass(frozen=True)
class LocatedWaiver:
    waiver: Waiver
    location: Location

    @property
    def label(self) -> str:
        return f"{self.waiver.rule} by {self.waiver.owner} until {self.waiver.expires}"


@dataclass(frozen=True)
class PolicySet:
    rules: list[CompiledRule]
    waivers: list[LocatedWaiver]
    tests: list[tuple[YamlDoc, PolicyTest]] = field(default_factory=list)

    def rule(self, rule_id: str) -> CompiledRule | None:
        return next((r for r in self.rules if r.id == rule_id), None)


def read_policy_files(directory: str | Path) -> dict[str, str]:
    """Every .yaml/.yml file under `directory` on disk, keyed by its path; each within the
    YAML size limit and UTF-8 (PolicyInvalid lists those that are not)."""
    root = Path(directory)
    if not root.is_dir():
        raise BadInput(f"{root}: no such policy directory")
    files: dict[str, str] = {}
    problems: list[Problem] = []
    for p in sorted(root.rglob("*")):
        if p.suffix in (".yaml", ".yml") and p.is_file():
            text, found = read_file(p)
            problems.extend(found)
            if text is not None:
                files[p.as_posix()] = text
    if problems:
        raise PolicyInvalid(problems)
    return files


def is_test_file(path: str) -> bool:
    return "tests" in PurePosixPath(path).parts[:-1]


def load_policies(
    files: Mapping[str, str],
    *,
    with_tests: bool = False,
    environments: Collection[str] | None = None,
) -> PolicySet:
    """Parse, validate, type-check and compile every rule and waiver; raise PolicyInvalid
    listing all problems, before any rule is evaluated. With `environments` (the folders of
    deployments/), every environment a rule or waiver names must be one of them."""
    problems: list[Problem] = []
    rules: list[CompiledRule] = []
    waivers: list[LocatedWaiver] = []
    tests: list[tuple[YamlDoc, PolicyTest]] = []
    declared: set[str] = set()  # ids of rules, compiled or not: waivers may name them
    complete = True  # every rules file was read: a waiver's unknown rule is its own error
    checker = RuleCompiler(environments)
    for path in sorted(files):
        if is_test_file(path) and not with_tests:
            continue
        text = files[path]
        if len(text) > MAX_POLICY_FILE_BYTES:
            problems.append(
                Problem(Location(path), f"larger than {MAX_POLICY_FILE_BYTES} bytes: not read")
            )
            complete = False
            continue
        doc, found = _load_yaml(path, text)
        problems.extend(found)
        if doc is None:
            complete = False
            continue
        if not isinstance(doc.data, dict):
            what = "a list" if isinstance(doc.data, list) else f"a {type(doc.data).__name__}"
            problems.append(
                Problem(
                    Location(path, 1),
                    "a policy file is a mapping with `apiVersion` and `kind` (PolicyRules, "
                    f"PolicyWaivers or PolicyTest), not {what}",
                )
            )
            complete = False
            continue
        kind = doc.data.get("kind")
        if kind == "PolicyRules":
            rules_file, found = validate_doc(doc, PolicyRules)
            problems.extend(found)
            if rules_file is None:
                ids = _raw_ids(doc.data)
                complete = complete and ids is not None
                declared.update(ids or ())
                continue
            for i, rule in enumerate(rules_file.rules):
                declared.add(rule.id)
                compiled, found = checker.rule(doc, text, i, rule)
                problems.extend(found)
                if compiled is not None:
                    rules.append(compiled)
        elif kind == "PolicyWaivers":
            waivers_file, found = validate_doc(doc, PolicyWaivers)
            problems.extend(found)
            if waivers_file is not None:
                for i, waiver in enumerate(waivers_file.waivers):
                    problems.extend(checker.waiver(doc, i, waiver))
                    waivers.append(LocatedWaiver(waiver, doc.location("waivers", i, "rule")))
        elif kind == "PolicyTest":
            test_file, found = validate_doc(doc, PolicyTest)
            problems.extend(found)
            if test_file is not None:
                tests.append((doc, test_file))
        else:
            problems.append(
                Problem(
                    doc.location("kind"),
                    f"kind must be PolicyRules, PolicyWaivers or PolicyTest, not {kind!r}",
                )
            )
    problems.extend(_cross_check(rules, waivers, declared if complete else None))
    if problems:
        raise PolicyInvalid(problems)
    return PolicySet(rules, waivers, tests)


def _raw_ids(data: dict[str, Any]) -> set[str] | None:
    """Rule ids of a rules file that did not validate, when they can be read at all."""
    items = data.get("rules")
    if not isinstance(items, list):
        return None
    return {str(r["id"]) for r in items if isinstance(r, dict) and isinstance(r.get("id"), str)}


def _load_yaml(path: str, text: str) -> tuple[YamlDoc | None, list[Problem]]:
    """load_yaml, plus a located error for scalars YAML cannot build (`expires: 2026-02-30`)."""
    try:
        return load_yaml(path, text)
    except ValueError as err:
        return None, [Problem(Location(path, _bad_scalar_line(text)), f"invalid value: {err}")]


def _bad_scalar_line(text: str) -> int | None:
    loader = yaml.SafeLoader(text)
    try:
        stack = [loader.get_single_node()]
        while stack:
            node = stack.pop()
            if isinstance(node, yaml.ScalarNode):
                try:
                    loader.construct_object(node, deep=True)
                except ValueError:
                    return int(node.start_mark.line) + 1
            elif isinstance(node, yaml.MappingNode):
                stack.extend(v for pair in node.value for v in pair)
            elif isinstance(node, yaml.SequenceNode):
                stack.extend(node.value)
    except yaml.YAMLError:
        return None
    finally:
        loader.dispose()
    return None


class RuleCompiler:
    """Compiles and checks rules and waivers against the variables' shapes and types and the
    environments that exist."""

    def __init__(self, environments: Collection[str] | None) -> None:
        self.environments = set(environments) if environments is not None else None
        self._by_kind: dict[str, tuple[dict[str, Tree], dict[str, CelType]]] = {}
        self.seen = 0  # rules compiled so far: each gets its own params variable

    def shapes(self, kind: str) -> tuple[dict[str, Tree], dict[str, CelType]]:
        """The variables' shapes and types for rules on documents of `kind`."""
        if kind not in self._by_kind:
            self._by_kind[kind] = (variable_trees(kind), variable_types(kind))
        return self._by_kind[kind]

    def _environment(self, where: Location, env: str) -> list[Problem]:
        if self.environments is None or env in self.environments or any(c in env for c in "*?["):
            return []
        have = ", ".join(sorted(self.environments)) or "none"
        return [Problem(where, f"no environment {env!r} in deployments/ (environments: {have})")]

    def waiver(self, doc: YamlDoc, index: int, waiver: Waiver) -> list[Problem]:
        problems: list[Problem] = []
        for j, pattern in enumerate(waiver.deployments):
            where = doc.location("waivers", index, "deployments", j)
            problems += self._environment(where, pattern.split("/", 1)[0])
        return problems

    def rule(
        self, doc: YamlDoc, text: str, index: int, rule: Rule
    ) -> tuple[CompiledRule | None, list[Problem]]:
        problems: list[Problem] = []
        base = ("rules", index)
        params_var = f"__params{self.seen}"  # this rule's own name for its params
        self.seen += 1
        trees, types = self.shapes(rule.match.kind)

        def compile_at(source: str, want: str, *where: str | int) -> Compiled | None:
            try:
                compiled = compile_expression(source, trees, params_var)
            except CelError as err:
                problems.append(_cel_problem(doc, text, (*base, *where), err))
                return None
            found = _type_problems(source, types, want)
            if found:
                problems.append(Problem(doc.location(*base, *where), found))
                return None
            return compiled

        for where, reason in non_cel_values(rule.params, ("params",)):
            problems.append(Problem(doc.location(*base, *where), reason))
        for j, env in enumerate(rule.match.environments):
            problems += self._environment(doc.location(*base, "match", "environments", j), env)
        conditions: list[tuple[str, Compiled]] = []
        for i, cond in enumerate(rule.matchConditions):
            compiled = compile_at(cond.expression, "bool", "matchConditions", i, "expression")
            if compiled is not None:
                conditions.append((cond.name, compiled))
        validations: list[CompiledValidation] = []
        for i, v in enumerate(rule.validations):
            at = ("validations", i)
            expression = compile_at(v.expression, "bool", *at, "expression")
            message_expression = field_expression = None
            if v.messageExpression:
                message_expression = compile_at(
                    v.messageExpression, "string", *at, "messageExpression"
                )
            if v.fieldExpression:
                field_expression = compile_at(v.fieldExpression, "string", *at, "fieldExpression")
            if v.field is not None:
                reason = _field_problem(v.field, trees["object"])
                if reason:
                    problems.append(Problem(doc.location(*base, *at, "field"), reason))
            if expression is not None:
                validations.append(
                    CompiledValidation(
                        expression,
                        v.message or rule.description,
                        message_expression,
                        v.field,
                        field_expression,
                    )
                )
        if problems:
            return None, problems
        return CompiledRule(rule, doc.location(*base, "id"), conditions, validations), []


def _cel_problem(doc: YamlDoc, text: str, where: tuple[str | int, ...], err: CelError) -> Problem:
    """The error on the line (and column) of the expression's character it points at, also
    inside a folded or literal block."""
    location = doc.location(*where)
    message = str(err)
    if err.offset is not None:
        placed = position_in_value(text, where, err.offset)
        if placed is not None:
            line, column = placed
            location = Location(location.file, line, location.field)
            message += f" (column {column})"
    return Problem(location, message)


def _type_problems(source: str, types: dict[str, CelType], want: str) -> str:
    try:
        tree = parse(source)
    except ParseError:
        return ""  # the runtime compiled it: its grammar is the judge, not this parser's
    return "; ".join(check_result(tree, types, want))


def _field_problem(path: str, tree: Tree) -> str:
    """Why `path` is not a field of the deployment file, or ""."""
    parts = parse_field_path(path)
    if parts is None:
        return f"{path!r} is not a field path"
    walked = ""
    for part in parts:
        if tree is None:
            return ""  # a map: any key
        if isinstance(part, int):
            if "[]" not in tree:
                return f"{walked or 'the deployment'} is not a list: no [{part}]"
            tree, walked = tree["[]"], f"{walked}[{part}]"
            continue
        if part not in tree:
            known = ", ".join(sorted(k for k in tree if k != "[]")) or "none"
            return (
                f"the deployment schema has no field {part!r} under "
                f"{walked or 'the top level'} (known: {known})"
            )
        tree, walked = tree[part], f"{walked}.{part}" if walked else part
    return ""


def _cross_check(
    rules: list[CompiledRule], waivers: list[LocatedWaiver], declared: set[str] | None
) -> list[Problem]:
    """Duplicate ids; waivers of rules that do not exist (not checked when a rules file could
    not be read: its error is the one to fix, not a cascade about its rules)."""
    problems: list[Problem] = []
    first: dict[str, CompiledRule] = {}
    for r in rules:
        if r.id in first:
            other = first[r.id].location
            problems.append(
                Problem(
                    r.location, f"rule id {r.id!r} is already used at {other.file}:{other.line}"
                )
            )
        else:
            first[r.id] = r
    for w in waivers:
        if declared is not None and w.waiver.rule not in declared:
            problems.append(
                Problem(w.location, f"waiver for rule {w.waiver.rule!r}, which does not exist")
            )
    return problems

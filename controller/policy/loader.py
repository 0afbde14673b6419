"""policies/ to compiled rules and waivers; every problem located at file, line and field."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

from controller.errors import BadInput, Location, Problem, ValidationFailed
from controller.policy.celexpr import (
    CelError,
    Compiled,
    Tree,
    compile_expression,
    non_cel_values,
    variable_trees,
)
from controller.policy.model import PolicyRules, PolicyTest, PolicyWaivers, Rule, Waiver
from controller.spec.yamldoc import YamlDoc, load_yaml, validate_doc

POLICIES_DIR = "policies"


class PolicyInvalid(ValidationFailed):
    """Problems in policy, waiver or policy test files; each names file, line and field."""

    files = "policy files"


@dataclass(frozen=True)
class CompiledValidation:
    expression: Compiled
    message: str
    message_expression: Compiled | None
    field: str | None


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
    """Every .yaml/.yml file under `directory` on disk, keyed by its path."""
    root = Path(directory)
    if not root.is_dir():
        raise BadInput(f"{root}: no such policy directory")
    return {
        p.as_posix(): p.read_text(encoding="utf-8")
        for p in sorted(root.rglob("*"))
        if p.suffix in (".yaml", ".yml") and p.is_file()
    }


def is_test_file(path: str) -> bool:
    return "tests" in PurePosixPath(path).parts[:-1]


def load_policies(files: Mapping[str, str], *, with_tests: bool = False) -> PolicySet:
    """Parse, validate and compile every rule and waiver; raise PolicyInvalid listing all
    problems, before any rule is evaluated."""
    problems: list[Problem] = []
    rules: list[CompiledRule] = []
    waivers: list[LocatedWaiver] = []
    tests: list[tuple[YamlDoc, PolicyTest]] = []
    declared: set[str] = set()  # ids of rules, compiled or not: waivers may name them
    trees = variable_trees()
    seen = 0  # rules read so far
    for path in sorted(files):
        if is_test_file(path) and not with_tests:
            continue
        doc, found = _load_yaml(path, files[path])
        problems.extend(found)
        if doc is None:
            continue
        kind = doc.data.get("kind") if isinstance(doc.data, dict) else None
        if kind == "PolicyRules":
            rules_file, found = validate_doc(doc, PolicyRules)
            problems.extend(found)
            if rules_file is not None:
                for i, rule in enumerate(rules_file.rules):
                    declared.add(rule.id)
                    params_var = f"__params{seen}"  # this rule's own name for its params
                    seen += 1
                    compiled, found = _compile_rule(doc, i, rule, trees, params_var)
                    problems.extend(found)
                    if compiled is not None:
                        rules.append(compiled)
        elif kind == "PolicyWaivers":
            waivers_file, found = validate_doc(doc, PolicyWaivers)
            problems.extend(found)
            if waivers_file is not None:
                for i, waiver in enumerate(waivers_file.waivers):
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
    problems.extend(_cross_check(rules, waivers, declared))
    if problems:
        raise PolicyInvalid(problems)
    return PolicySet(rules, waivers, tests)


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


def _compile_rule(
    doc: YamlDoc, index: int, rule: Rule, trees: dict[str, Tree], params_var: str
) -> tuple[CompiledRule | None, list[Problem]]:
    problems: list[Problem] = []
    base = ("rules", index)

    def compile_at(source: str, *where: str | int) -> Compiled | None:
        try:
            return compile_expression(source, trees, params_var)
        except CelError as err:
            problems.append(Problem(doc.location(*base, *where), str(err)))
            return None

    for where, reason in non_cel_values(rule.params, ("params",)):
        problems.append(Problem(doc.location(*base, *where), reason))
    conditions: list[tuple[str, Compiled]] = []
    for i, cond in enumerate(rule.matchConditions):
        compiled = compile_at(cond.expression, "matchConditions", i, "expression")
        if compiled is not None:
            conditions.append((cond.name, compiled))
    validations: list[CompiledValidation] = []
    for i, v in enumerate(rule.validations):
        expression = compile_at(v.expression, "validations", i, "expression")
        message_expression = (
            compile_at(v.messageExpression, "validations", i, "messageExpression")
            if v.messageExpression
            else None
        )
        if expression is not None:
            validations.append(
                CompiledValidation(
                    expression, v.message or rule.description, message_expression, v.field
                )
            )
    if problems:
        return None, problems
    return CompiledRule(rule, doc.location(*base, "id"), conditions, validations), []


def _cross_check(
    rules: list[CompiledRule], waivers: list[LocatedWaiver], declared: set[str]
) -> list[Problem]:
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
        if w.waiver.rule not in declared:
            problems.append(
                Problem(w.location, f"waiver for rule {w.waiver.rule!r}, which does not exist")
            )
    return problems

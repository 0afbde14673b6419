"""Mutation testing of rules: do the policy tests notice when a rule is broken?

Each rule is mutated in the ways a rule goes wrong in review (a validation negated or dropped,
a clause of an `&&`/`||` dropped, a comparison's boundary moved, a regex widened or an
alternative of it dropped, a match condition or criterion dropped); a mutant is killed when
at least one test case that names the rule gets a different verdict. The score is killed /
(mutants that compile); the surviving mutants are what the tests do not pin down.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from controller.policy.celparse import Node, ParseError, literal_text, parse
from controller.policy.loader import (
    PolicyInvalid,
    RuleCompiler,
    is_test_file,
    load_policies,
)
from controller.policy.model import PolicyRules, Rule
from controller.policy.testing import PreparedCase, prepare_cases
from controller.spec.yamldoc import YamlDoc, load_yaml, validate_doc

_REGEX_CALLS = ("matches", "search", "findStrings", "findKeys")
_FLIP = {"<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "=="}
_ALL_CHANGES = ["created", "updated", "deleted", "unchanged"]


@dataclass(frozen=True)
class Mutant:
    rule: str
    description: str  # what was changed, e.g. "validations[1]: dropped `x > 1` of &&"
    mutated: Rule


@dataclass(frozen=True)
class MutantResult:
    mutant: Mutant
    killed: bool
    valid: bool  # compiled and type-checked; invalid mutants do not count


@dataclass(frozen=True)
class MutationReport:
    results: list[MutantResult]

    @property
    def valid(self) -> list[MutantResult]:
        return [r for r in self.results if r.valid]

    @property
    def survivors(self) -> list[MutantResult]:
        return [r for r in self.valid if not r.killed]

    @property
    def score(self) -> float:
        valid = self.valid
        return (len(valid) - len(self.survivors)) / len(valid) if valid else 1.0


def _edit(source: str, node: Node, text: str) -> str:
    return source[: node.start] + text + source[node.end :]


def expression_mutants(source: str) -> Iterator[tuple[str, str]]:
    """(mutated source, description) of one CEL expression."""
    try:
        tree = parse(source)
    except ParseError:
        return
    for node in tree.walk():
        if node.kind == "binary" and node.op in ("&&", "||"):
            left, right = node.args
            for kept, dropped in ((left, right), (right, left)):
                what = " ".join(source[dropped.start : dropped.end].split())
                yield (
                    _edit(source, node, f"({source[kept.start : kept.end]})"),
                    (f"dropped `{_short(what)}` of {node.op}"),
                )
        elif node.kind == "binary" and node.op in _FLIP:
            left, right = node.args
            flipped = f"{source[left.start : left.end]} {_FLIP[node.op]} {source[right.start : right.end]}"
            yield _edit(source, node, f"({flipped})"), f"{node.op} -> {_FLIP[node.op]}"
        elif node.kind == "call" and node.op in _REGEX_CALLS:
            pattern = node.args[-1] if node.args else None
            text = literal_text(source, pattern) if pattern is not None else None
            if pattern is not None and text is not None:
                for widened, why in regex_mutants(text):
                    quoted = "'" + widened.replace("\\", "\\\\").replace("'", "\\'") + "'"
                    yield _edit(source, pattern, quoted), f"regex {why}"


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def _top_alternatives(pattern: str) -> tuple[str, list[str], str] | None:
    """(prefix, alternatives, suffix) of a pattern whose top level (or single outer group) is
    an alternation: `(?i)(a|b|c)` -> ("(?i)(", [a, b, c], ")")."""
    prefix = ""
    body = pattern
    flags = re.match(r"^\(\?[a-z]+\)", body)
    if flags:
        prefix, body = flags.group(), body[flags.end() :]
    suffix = ""
    if body.startswith("(") and body.endswith(")") and _closing(body, 0) == len(body) - 1:
        prefix, body, suffix = prefix + body[:1], body[1:-1], ")"
        if body.startswith("?:"):
            prefix, body = prefix + "?:", body[2:]
    parts, depth, start, i, in_class = [], 0, 0, 0, False
    while i < len(body):
        c = body[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            parts.append(body[start:i])
            start = i + 1
        i += 1
    parts.append(body[start:])
    return (prefix, parts, suffix) if len(parts) > 1 else None


def _closing(text: str, open_at: int) -> int:
    depth, i, in_class = 0, open_at, False
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def regex_mutants(pattern: str) -> Iterator[tuple[str, str]]:
    """Widened (or, dropping an alternative, narrowed) versions of a regex."""
    if pattern.startswith("^"):
        yield pattern[1:], "without its ^ anchor"
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        yield pattern[:-1], "without its $ anchor"
    # a run of comparison characters (`==` in a version pin) accepting any: `>=`, `~=` pass
    for m in re.finditer(r"(?<![\\\[])([=<>~!]+)(?![^\[]*\])", pattern):
        if m.start() > 0 and pattern[m.start() - 1] == "?":
            continue  # `(?<`, `(?!`: syntax, not text
        yield (
            pattern[: m.start()] + "." * len(m.group()) + pattern[m.end() :],
            (f"{m.group()!r} widened to any character"),
        )
    split = _top_alternatives(pattern)
    if split is not None:
        prefix, parts, suffix = split
        for i, part in enumerate(parts):
            rest = "|".join(p for j, p in enumerate(parts) if j != i)
            yield f"{prefix}{rest}{suffix}", f"without alternative {_short(part)!r}"


def rule_mutants(rule: Rule) -> Iterator[Mutant]:
    """Every mutant of one rule."""
    validations = rule.validations
    for i, v in enumerate(validations):
        yield Mutant(
            rule.id,
            f"validations[{i}] negated",
            _with_validation(rule, i, {"expression": f"!({v.expression})"}),
        )
        dropped = [x for j, x in enumerate(validations) if j != i]
        if dropped:
            yield Mutant(
                rule.id,
                f"validations[{i}] dropped",
                rule.model_copy(update={"validations": dropped}),
            )
        for source, why in expression_mutants(v.expression):
            yield Mutant(
                rule.id,
                f"validations[{i}]: {why}",
                _with_validation(rule, i, {"expression": source}),
            )
    for i, c in enumerate(rule.matchConditions):
        rest = [x for j, x in enumerate(rule.matchConditions) if j != i]
        yield Mutant(
            rule.id,
            f"matchConditions[{i}] ({c.name}) dropped",
            rule.model_copy(update={"matchConditions": rest}),
        )
    match = rule.match
    for criterion, empty in (
        ("environments", []),
        ("names", []),
        ("labels", {}),
        ("changes", _ALL_CHANGES),
    ):
        value: Any = getattr(match, criterion)
        if criterion in match.model_fields_set and value and value != empty:
            yield Mutant(
                rule.id,
                f"match.{criterion} dropped",
                rule.model_copy(update={"match": match.model_copy(update={criterion: empty})}),
            )
    for name, value in rule.params.items():
        if isinstance(value, str):
            for widened, why in regex_mutants(value):
                params = {**rule.params, name: widened}
                yield Mutant(rule.id, f"params.{name}: regex {why}", rule.model_copy(update={"params": params}))  # fmt: skip


def _with_validation(rule: Rule, index: int, update: dict[str, Any]) -> Rule:
    validations = list(rule.validations)
    validations[index] = validations[index].model_copy(update=update)
    return rule.model_copy(update={"validations": validations})


def mutation_test(files: dict[str, str]) -> MutationReport:
    """Mutate every rule of `files` (a policies directory, tests included) and run the cases
    that name it against each mutant. Raises PolicyInvalid when the files do not load."""
    policies = load_policies(files, with_tests=True)
    cases = prepare_cases(policies)
    by_rule: dict[str, list[PreparedCase]] = {}
    for case in cases:
        for rule_id in case.expected:
            by_rule.setdefault(rule_id, []).append(case)
    results: list[MutantResult] = []
    compiler = RuleCompiler(None)
    for path in sorted(files):
        if is_test_file(path):
            continue
        doc, _ = load_yaml(path, files[path])
        if doc is None or not isinstance(doc.data, dict) or doc.data.get("kind") != "PolicyRules":
            continue
        rules_file, _ = validate_doc(doc, PolicyRules)
        assert rules_file is not None  # load_policies validated it
        for index, rule in enumerate(rules_file.rules):
            results += _run_mutants(compiler, doc, files[path], index, rule, by_rule, policies)
    return MutationReport(results)


def _run_mutants(
    compiler: RuleCompiler,
    doc: YamlDoc,
    text: str,
    index: int,
    rule: Rule,
    by_rule: dict[str, list[PreparedCase]],
    policies: Any,
) -> list[MutantResult]:
    results: list[MutantResult] = []
    cases = by_rule.get(rule.id, [])
    for mutant in rule_mutants(rule):
        compiled, problems = compiler.rule(doc, text, index, mutant.mutated)
        if compiled is None or problems:
            results.append(MutantResult(mutant, killed=False, valid=False))
            continue

        def rule_of(rule_id: str, mutated: Any = compiled) -> Any:
            return mutated if rule_id == rule.id else policies.rule(rule_id)

        killed = any(not case.judge(rule_of).passed for case in cases)
        results.append(MutantResult(mutant, killed=killed, valid=True))
    return results


__all__ = ["MutationReport", "PolicyInvalid", "mutation_test", "regex_mutants", "rule_mutants"]

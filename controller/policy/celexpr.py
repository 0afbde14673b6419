"""CEL expressions: compiled once per run, checked before anything is evaluated.

The CEL runtime is `common-expression-language` (Rust bindings): about 50 times faster than
the pure-Python `cel-python` on the rules here (see docs/benchmarks.md). It checks syntax at
compile time but not names, so this module also checks, statically, that an expression only
uses the variables rules see, only the fields those variables have, and only functions the
runtime knows (what rules see: celfields.py); a typo is then an error at file:line before any
rule runs.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from controller.policy.celfields import (
    FUNCTIONS,
    MACRO_VARIABLE,
    VARIABLES,
    Tree,
    field_problems,
    strip_strings,
)
from controller.policy.celrewrite import FieldPathT, bind_paths, path_variable, rename_variable
from controller.policy.celrt import cel


class CelError(Exception):
    """An expression that cannot be compiled or refers to something that does not exist;
    `offset`: where in the expression, when known."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True)
class Compiled:
    source: str
    program: cel.Program
    # The variable the program reads the rule's `params` from: `params`, or the rule's own
    # name for it (see compile_expression); None when the expression does not read params.
    params_var: str | None = None
    # The same expression reading sub-objects (`object.spec`) from variables bound once per
    # deployment (see bind_paths), and the paths it reads so; None when it reads none.
    bound: cel.Program | None = None
    paths: frozenset[FieldPathT] = frozenset()

    @functools.cached_property
    def fast(self) -> cel.Program:
        """The program run_bound runs when every path is available."""
        return self.bound or self.program

    @functools.cached_property
    def reads(self) -> frozenset[str]:
        """Variables the program as written reads."""
        return frozenset(self.program.variables())

    @functools.cached_property
    def reads_bound(self) -> frozenset[str]:
        """Variables run_bound reads when every path is available."""
        return frozenset(self.fast.variables())

    def run(self, ctx: cel.Context) -> Any:
        return self.program.execute(ctx)

    def run_bound(self, ctx: cel.Context, unavailable: frozenset[FieldPathT]) -> Any:
        """Run in a context where the path variables are bound, except the `unavailable`
        paths (below a null): there the program as written gives the value or error."""
        if self.bound is None or (unavailable and not self.paths.isdisjoint(unavailable)):
            return self.program.execute(ctx)
        return self.bound.execute(ctx)


def _compile(source: str) -> cel.Program:
    try:
        return cel.compile(source)
    except (ValueError, RuntimeError) as err:
        raise CelError(*_syntax_message(str(err), source)) from None


def compile_expression(
    source: str, trees: dict[str, Tree], params_var: str | None = None
) -> Compiled:
    """Compile and check one expression; raise CelError with a one-line reason.

    With `params_var`, the program reads the rule's params from that variable instead of
    `params` (messages and checks still say `params`). Every rule has its own params but
    rules share one activation per deployment; the runtime rebuilds an activation whenever a
    variable changes (about 15 us), so binding each rule's params once under its own name
    saves a rebuild per rule and deployment."""
    renamed = rename_variable(source, "params", params_var) if params_var else source
    try:
        program = cel.compile(renamed)
    except (ValueError, RuntimeError) as err:
        _compile(source)  # the error with the columns of the source as written
        raise CelError(*_syntax_message(str(err), source)) from None
    if renamed != source and "params" in program.variables():
        renamed, program = source, _compile(source)  # a reference renaming missed: keep it
    variables = set(program.variables())
    if renamed != source:
        variables = {"params" if v == params_var else v for v in variables}
    _check(source, variables, program.functions(), trees)
    reads = params_var if renamed != source else ("params" if "params" in variables else None)
    return Compiled(source, program, reads, *_bound_program(renamed, program, trees))


def _bound_program(
    source: str, program: cel.Program, trees: dict[str, Tree]
) -> tuple[cel.Program | None, frozenset[FieldPathT]]:
    """The program with sub-objects bound (bind_paths), when it reads any and compiles to a
    program that reads those variables where the original read the chains."""
    rewritten, paths = bind_paths(source, trees)
    if not paths:
        return None, frozenset()
    try:
        bound = cel.compile(rewritten)
    except (ValueError, RuntimeError):
        return None, frozenset()
    names = {path_variable(p) for p in paths}
    if not names <= set(bound.variables()) <= set(program.variables()) | names:
        return None, frozenset()
    return bound, paths


def _check(source: str, variables: set[str], functions: list[str], trees: dict[str, Tree]) -> None:
    """Only the variables, functions and fields rules can see."""
    bound = set(MACRO_VARIABLE.findall(strip_strings(source)))
    unknown_vars = sorted(variables - set(trees) - bound)
    if unknown_vars:
        raise CelError(
            f"unknown variable {', '.join(unknown_vars)} (rules see: {', '.join(VARIABLES)})"
        )
    unknown_fns = sorted(
        f for f in functions if f[:1] not in ("_", "@", "!") and f not in FUNCTIONS
    )
    if unknown_fns:
        raise CelError(f"unknown function {', '.join(unknown_fns)}")
    problems = field_problems(source, trees)
    if problems:
        raise CelError("; ".join(p for _, p in problems), problems[0][0])


def non_cel_values(
    value: Any, where: tuple[str | int, ...]
) -> list[tuple[tuple[str | int, ...], str]]:
    """(field path, reason) of each value in `value` the runtime cannot take, e.g. a YAML
    date (`2026-01-01` unquoted) in a rule's params."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in non_cel_values(v, (*where, str(k)))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in non_cel_values(v, (*where, i))]
    try:
        cel.Context({"value": value})
    except ValueError:
        kind = type(value).__name__
        return [(where, f"a {kind} is not a CEL value (quote it to make it a string)")]
    return []


def _syntax_message(text: str, source: str) -> tuple[str, int | None]:
    """The Rust parser's message without the expression echo, on one line, and the offset in
    `source` it points at (its line and column are the expression's)."""
    match = re.search(r"<input>:(\d+):(\d+): (.*?)(\n|$)", text)
    if match:
        lines = source.split("\n")
        line, column = int(match[1]), int(match[2])
        offset = sum(len(x) + 1 for x in lines[: line - 1]) + column - 1
        return f"CEL syntax error: {match[3]}", min(max(offset, 0), len(source))
    return "CEL syntax error: " + text.splitlines()[0], None

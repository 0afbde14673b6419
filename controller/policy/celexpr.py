"""CEL expressions: compiled once per run, checked before anything is evaluated.

The CEL runtime is `common-expression-language` (Rust bindings): about 50 times faster than
the pure-Python `cel-python` on the rules here (see docs/benchmarks.md). It checks syntax at
compile time but not names, so this module also checks, statically, that an expression only
uses the variables rules see, only the fields those variables have, and only functions the
runtime knows; a typo is then an error at file:line before any rule runs.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from controller.policy.celrt import cel
from controller.spec.batch import BatchInference
from controller.spec.models import ModelDeployment

# A field tree: the known fields of a value; None means "anything below" (maps, free-form
# dicts); the key "[]" is the item of a list.
Tree = dict[str, Any] | None

VARIABLES = ("object", "oldObject", "change", "model", "simulation", "request", "params")

_FUNCTION_NAMES = (
    "size matches contains startsWith endsWith timestamp duration string int double uint "
    "bool bytes type dyn getFullYear getMonth getDate getDayOfMonth getDayOfWeek getDayOfYear "
    "getHours getMinutes getSeconds getMilliseconds max min search findStrings findKeys"
)
FUNCTIONS = frozenset(_FUNCTION_NAMES.split(" "))
_MACROS = ("all", "exists", "exists_one", "map", "filter")


class CelError(Exception):
    """An expression that cannot be compiled or refers to something that does not exist;
    `offset`: where in the expression, when known."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


def _schema_tree(schema: dict[str, Any], defs: dict[str, Any]) -> Tree:
    if "$ref" in schema:
        return _schema_tree(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            merged: dict[str, Any] = {}
            for option in schema[key]:
                sub = _schema_tree(option, defs)
                if sub is None and option.get("type") not in (
                    "null",
                    "string",
                    "number",
                    "integer",
                    "boolean",
                ):
                    return None
                if sub:
                    merged.update(sub)
            return merged
    if "properties" in schema:
        return {k: _schema_tree(v, defs) for k, v in schema["properties"].items()}
    if schema.get("type") == "array":
        return {"[]": _schema_tree(schema.get("items", {}), defs)}
    if schema.get("type") == "object":
        return None  # a map: any key
    return {}  # a scalar: no fields


def _deployment_tree(kind: str = "ModelDeployment") -> Tree:
    schema = document_model(kind).model_json_schema()
    return _schema_tree(schema, schema.get("$defs", {}))


def document_model(kind: str) -> type[ModelDeployment] | type[BatchInference]:
    """The model of a kind of deployment file, whose fields `object` has."""
    return BatchInference if kind == "BatchInference" else ModelDeployment


_ANY = None
_SCALAR: dict[str, Any] = {}
MODEL_TREE: Tree = {
    "name": _SCALAR,
    "version": _SCALAR,
    "uri": _SCALAR,
    "alias": _SCALAR,
    "status": _SCALAR,
    "aliases": {"[]": _SCALAR},
    "tags": _ANY,
    "description": _SCALAR,
    "source": _SCALAR,
    "run_id": _SCALAR,
    "creation_time": _SCALAR,
    "run": {"metrics": _ANY, "params": _ANY, "tags": _ANY},
}
CHANGE_TREE: Tree = {
    "kind": _SCALAR,
    "fields": {"[]": _SCALAR},
    "modelChanged": _SCALAR,
    "environment": _SCALAR,
    "name": _SCALAR,
    "path": _SCALAR,
}
REQUEST_TREE: Tree = {
    "time": _SCALAR,
    "author": _SCALAR,
    "branch": _SCALAR,
    "base": _SCALAR,
    "head": _SCALAR,
}


def variable_trees(kind: str = "ModelDeployment") -> dict[str, Tree]:
    deployment = _deployment_tree(kind)
    return {
        "object": deployment,
        "oldObject": deployment,
        "change": CHANGE_TREE,
        "model": MODEL_TREE,
        "simulation": _ANY,
        "request": REQUEST_TREE,
        "params": _ANY,
    }


_STRING = re.compile(r"""[rR]?("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')""")
_ROOT = re.compile(r"(?<![.\w])(" + "|".join(VARIABLES) + r")\b")
_SEGMENT = re.compile(r"\s*(?:\.\s*([A-Za-z_]\w*)(\s*\()?|\[([^\[\]]*)\])")
_BOUND = re.compile(r"\.\s*(?:" + "|".join(_MACROS) + r")\s*\(\s*([A-Za-z_]\w*)\s*,")


def _strip_strings(source: str) -> str:
    """String literals blanked out, every offset kept."""
    return _STRING.sub(lambda m: '"' + " " * (len(m.group()) - 2) + '"', source)


def field_problems(source: str, trees: dict[str, Tree]) -> list[tuple[int, str]]:
    """(offset, reason) of field references (`object.spec.replica`) that do not exist in the
    variable's shape."""
    text = _strip_strings(source)
    problems: list[tuple[int, str]] = []
    for root in _ROOT.finditer(text):
        tree: Tree = trees[root.group(1)]
        path = root.group(1)
        pos = root.end()
        while True:
            seg = _SEGMENT.match(text, pos)
            if seg is None:
                break
            pos = seg.end()
            name, call, index = seg.group(1), seg.group(2), seg.group(3)
            if call:  # a method: `.startsWith(`, `.exists(`: the chain ends here
                break
            if tree is None:
                break  # a map or free-form value: anything goes below
            if index is not None:
                if "[]" in tree:
                    tree, path = tree["[]"], f"{path}[{index.strip()}]"
                    continue
                if tree == {}:
                    problems.append((seg.start(), f"{path} is not a list or map"))
                break
            if name in tree:
                tree, path = tree[name], f"{path}.{name}"
                continue
            known = ", ".join(sorted(k for k in tree if k != "[]")) or "none"
            problems.append((seg.start(), f"{path} has no field {name!r} (known: {known})"))
            break
    return problems


FieldPathT = tuple[str, ...]  # ("object", "spec", "rollout"): a variable and fields below it


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


# Tokens of a CEL expression, enough to rename identifiers: strings (raw, bytes,
# triple-quoted) and comments are kept whole.
_TOKEN = re.compile(
    r"(?P<str>[rRbB]{0,2}(?:'''|\"\"\"|'|\"))"
    r"|(?P<comment>//[^\n]*)"
    r"|(?P<space>\s+)"
    r"|(?P<num>[0-9][0-9A-Za-z_]*)"
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<punct>.)",
    re.DOTALL,
)
Token = tuple[str, str]  # (kind, text)


def _string_end(source: str, start: int, delim: str, raw: bool) -> int:
    """Index just past the literal whose opening `delim` ends at `start`."""
    i = start
    while i < len(source):
        if not raw and source[i] == "\\":
            i += 2
        elif source.startswith(delim, i):
            return i + len(delim)
        else:
            i += 1
    return len(source)


def tokens(source: str) -> list[Token]:
    out: list[Token] = []
    i = 0
    while i < len(source):
        m = _TOKEN.match(source, i)
        assert m is not None  # `punct` matches any character
        kind = m.lastgroup or "punct"
        if kind == "str":
            opening = m.group()
            delim = opening.lstrip("rRbB")
            end = _string_end(source, m.end(), delim, raw="r" in opening.lower())
            out.append(("str", source[i:end]))
            i = end
            continue
        out.append((kind, m.group()))
        i = m.end()
    return out


def _significant(toks: list[Token], i: int, step: int) -> int:
    """Index of the nearest token from i (going by step) that is not space or comment."""
    while 0 <= i < len(toks) and toks[i][0] in ("space", "comment"):
        i += step
    return i


def _is(toks: list[Token], i: int, text: str) -> bool:
    return 0 <= i < len(toks) and toks[i][1] == text and toks[i][0] in ("punct", "ident")


def _is_variable(toks: list[Token], i: int) -> bool:
    """An identifier that names a variable, not a field (`x.name`)."""
    return toks[i][0] == "ident" and not _is(toks, _significant(toks, i - 1, -1), ".")


def rename_variable(source: str, old: str, new: str) -> str:
    """`source` with every reference to the variable `old` renamed `new`. String literals,
    comments and fields (`x.old`) are left as written."""
    toks = tokens(source)
    return "".join(
        new if text == old and _is_variable(toks, i) else text for i, (_, text) in enumerate(toks)
    )


def _is_has_argument(toks: list[Token], start: int, end: int) -> bool:
    """toks[start:end] is the whole argument of has()."""
    opening = _significant(toks, start - 1, -1)
    return (
        _is(toks, opening, "(")
        and _is(toks, _significant(toks, opening - 1, -1), "has")
        and _is(toks, _significant(toks, end, 1), ")")
    )


def path_variable(path: FieldPathT) -> str:
    return "__" + "__".join(path)


def bind_paths(source: str, trees: dict[str, Tree]) -> tuple[str, frozenset[FieldPathT]]:
    """`source` with chains of fields below `object` and `oldObject` (`object.spec.model`)
    read from one variable each (`__object__spec__model`), and those paths.

    The runtime copies a map each time a field of it is read: `object.spec.x` copies spec
    (about 2 us), every time; a variable is read without a copy. And with every chain bound,
    `object` itself need not be converted for the runtime (about 60 us per deployment). A
    chain stops at an index, a method call, or below a map (whose keys are data)."""
    toks = tokens(source)
    bound_names = set(_BOUND.findall(_strip_strings(source)))
    out: list[str] = []
    paths: set[FieldPathT] = set()
    i = 0
    while i < len(toks):
        text = toks[i][1]
        if text not in ("object", "oldObject") or text in bound_names or not _is_variable(toks, i):
            out.append(text)
            i += 1
            continue
        path: FieldPathT = (text,)
        tree = trees[text]
        end = i + 1  # toks[i:end] is the chain as written
        names: list[int] = []  # token index of each field name of the chain
        while isinstance(tree, dict):
            dot = _significant(toks, end, 1)
            name = _significant(toks, dot + 1, 1)
            if not (_is(toks, dot, ".") and name < len(toks) and toks[name][0] == "ident"):
                break
            field = toks[name][1]
            if _is(toks, _significant(toks, name + 1, 1), "("):
                break  # a method call
            if field not in tree:
                break  # below a scalar, or an unknown field (an error as written)
            path, tree, end = (*path, field), tree[field], name + 1
            names.append(name)
        if names and _is_has_argument(toks, i, end):
            # has() tests a field: keep the last one as written
            path, end = path[:-1], _significant(toks, names[-1] - 1, -1)
        if len(path) == 1:
            out.append(text)
            i += 1
            continue
        out.append(path_variable(path))
        paths.add(path)
        i = end
    return "".join(out), frozenset(paths)


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
    bound = set(_BOUND.findall(_strip_strings(source)))
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

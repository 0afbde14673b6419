"""CEL expressions: compiled once per run, checked before anything is evaluated.

The CEL runtime is `common-expression-language` (Rust bindings): about 50 times faster than
the pure-Python `cel-python` on the rules here (see docs/benchmarks.md). It checks syntax at
compile time but not names, so this module also checks, statically, that an expression only
uses the variables rules see, only the fields those variables have, and only functions the
runtime knows; a typo is then an error at file:line before any rule runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import cel

from controller.spec import ModelDeployment

# A field tree: the known fields of a value; None means "anything below" (maps, free-form
# dicts); the key "[]" is the item of a list.
Tree = dict[str, Any] | None

VARIABLES = ("object", "oldObject", "change", "model", "simulation", "request", "params")

_FUNCTION_NAMES = (
    "size matches contains startsWith endsWith timestamp duration string int double uint "
    "bool bytes type dyn getFullYear getMonth getDate getDayOfMonth getDayOfWeek getDayOfYear "
    "getHours getMinutes getSeconds getMilliseconds max min search"
)
FUNCTIONS = frozenset(_FUNCTION_NAMES.split(" "))
_MACROS = ("all", "exists", "exists_one", "map", "filter")


class CelError(Exception):
    """An expression that cannot be compiled or refers to something that does not exist."""


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


def _deployment_tree() -> Tree:
    schema = ModelDeployment.model_json_schema()
    return _schema_tree(schema, schema.get("$defs", {}))


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


def variable_trees() -> dict[str, Tree]:
    deployment = _deployment_tree()
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
    return _STRING.sub(lambda m: '""', source)


def field_problems(source: str, trees: dict[str, Tree]) -> list[str]:
    """Field references (`object.spec.replica`) that do not exist in the variable's shape."""
    text = _strip_strings(source)
    problems: list[str] = []
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
                    problems.append(f"{path} is not a list or map")
                break
            if name in tree:
                tree, path = tree[name], f"{path}.{name}"
                continue
            known = ", ".join(sorted(k for k in tree if k != "[]")) or "none"
            problems.append(f"{path} has no field {name!r} (known: {known})")
            break
    return problems


@dataclass(frozen=True)
class Compiled:
    source: str
    program: cel.Program

    def run(self, ctx: cel.Context) -> Any:
        return self.program.execute(ctx)


def compile_expression(source: str, trees: dict[str, Tree]) -> Compiled:
    """Compile and check one expression; raise CelError with a one-line reason."""
    try:
        program = cel.compile(source)
    except (ValueError, RuntimeError) as err:
        raise CelError(_syntax_message(str(err))) from None
    bound = set(_BOUND.findall(_strip_strings(source)))
    unknown_vars = sorted(set(program.variables()) - set(trees) - bound)
    if unknown_vars:
        raise CelError(
            f"unknown variable {', '.join(unknown_vars)} (rules see: {', '.join(VARIABLES)})"
        )
    unknown_fns = sorted(
        f for f in program.functions() if f[:1] not in ("_", "@", "!") and f not in FUNCTIONS
    )
    if unknown_fns:
        raise CelError(f"unknown function {', '.join(unknown_fns)}")
    problems = field_problems(source, trees)
    if problems:
        raise CelError("; ".join(problems))
    return Compiled(source, program)


def _syntax_message(text: str) -> str:
    """The Rust parser's message without the expression echo, on one line."""
    match = re.search(r"<input>:(\d+):(\d+): (.*?)(\n|$)", text)
    if match:
        return f"CEL syntax error at column {match[2]}: {match[3]}"
    return "CEL syntax error: " + text.splitlines()[0]

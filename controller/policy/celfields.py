"""What CEL rules can see: the variables, the field tree of each (a deployment's from its pydantic
model), the functions the runtime knows, and the field references an expression gets wrong."""

from __future__ import annotations

import re
from typing import Any

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
MACRO_VARIABLE = re.compile(r"\.\s*(?:" + "|".join(_MACROS) + r")\s*\(\s*([A-Za-z_]\w*)\s*,")


def strip_strings(source: str) -> str:
    """String literals blanked out, every offset kept."""
    return _STRING.sub(lambda m: '"' + " " * (len(m.group()) - 2) + '"', source)


def field_problems(source: str, trees: dict[str, Tree]) -> list[tuple[int, str]]:
    """(offset, reason) of field references (`object.spec.replica`) that do not exist in the
    variable's shape."""
    text = strip_strings(source)
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

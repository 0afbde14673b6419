"""Type checking of CEL expressions at load: what each expression can return.

A validation or match condition must return a bool, a messageExpression or fieldExpression a
string; one that cannot (`object.spec.replicas`, `'too many' + 1`) fails for every deployment
at run time, so it is an error at file:line when the policies load. Types come from the
variables' shapes: the deployment's pydantic schema for `object`, fixed shapes for `change`,
`model` and `request`. What is not known statically (params, simulation, map values) is
`dyn` and never an error: the checker only refuses what cannot work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controller.policy.celparse import Node

_MACROS = ("all", "exists", "exists_one", "map", "filter")
_BOOL_FUNCTIONS = ("contains", "startsWith", "endsWith", "matches", "search", "has")
_SCALAR_RESULT = {
    "size": "int",
    "int": "int",
    "uint": "uint",
    "double": "double",
    "string": "string",
    "bool": "bool",
    "bytes": "bytes",
    "timestamp": "timestamp",
    "duration": "duration",
    "type": "type",
}
_NUMERIC = ("int", "uint", "double")


@dataclass(frozen=True)
class CelType:
    """`kind`: bool, int, uint, double, string, bytes, null, list, map, timestamp, duration,
    type or dyn. Lists know their items; maps built from a schema know their fields."""

    kind: str
    item: CelType | None = None  # a list's items, a map's values
    fields: dict[str, CelType] | None = field(default=None, compare=False)
    nullable: bool = False

    def __str__(self) -> str:
        return self.kind


DYN = CelType("dyn")
BOOL = CelType("bool")
STRING = CelType("string")


def _t(kind: str) -> CelType:
    return DYN if kind == "dyn" else CelType(kind)


def schema_type(schema: dict[str, Any], defs: dict[str, Any]) -> CelType:
    """The CEL type of values a JSON Schema (pydantic's) describes."""
    if "$ref" in schema:
        return schema_type(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(schema["anyOf"])
        if len(options) == 1:
            inner = schema_type(options[0], defs)
            return CelType(inner.kind, inner.item, inner.fields, nullable or inner.nullable)
        return DYN
    kind = schema.get("type")
    if "const" in schema or "enum" in schema:
        kind = kind or "string"
    if kind == "boolean":
        return BOOL
    if kind == "integer":
        return CelType("int")
    if kind == "number":
        return CelType("double")
    if kind == "string":
        return STRING
    if kind == "array":
        return CelType("list", schema_type(schema.get("items", {}), defs))
    if kind == "object" or "properties" in schema:
        props = schema.get("properties")
        if props is not None:
            return CelType("map", DYN, {k: schema_type(v, defs) for k, v in props.items()})
        extra = schema.get("additionalProperties")
        return CelType("map", schema_type(extra, defs) if isinstance(extra, dict) else DYN)
    return DYN


def shape_type(tree: Any) -> CelType:
    """A CelType from a field tree of celfields (None: anything; {}: a scalar of unknown kind)."""
    if tree is None or tree == {}:
        return DYN
    if "[]" in tree:
        return CelType("list", shape_type(tree["[]"]))
    return CelType("map", DYN, {k: shape_type(v) for k, v in tree.items()})


class CelTypeError(Exception):
    pass


def _is(t: CelType, *kinds: str) -> bool:
    return t.kind in kinds and not t.nullable


def infer(node: Node, env: dict[str, CelType], problems: list[str]) -> CelType:
    """The type `node` evaluates to; definite misuses go to `problems`."""
    k = node.kind
    if k == "lit":
        return _t(node.op)
    if k == "ident":
        return env.get(node.op, DYN)
    if k == "list":
        items = [infer(a, env, problems) for a in node.args]
        same = items[0] if items and all(i.kind == items[0].kind for i in items) else DYN
        return CelType("list", same)
    if k == "map":
        for a in node.args:
            infer(a, env, problems)
        return CelType("map", DYN)
    if k == "struct":
        return DYN
    if k == "select":
        operand = infer(node.args[0], env, problems)
        if operand.kind == "map" and operand.fields is not None:
            return operand.fields.get(node.op, DYN)
        return operand.item if operand.kind == "map" and operand.item is not None else DYN
    if k == "index":
        operand = infer(node.args[0], env, problems)
        infer(node.args[1], env, problems)
        if operand.kind in ("list", "map") and operand.item is not None:
            return operand.item
        return DYN
    if k == "unary":
        operand = infer(node.args[0], env, problems)
        if node.op == "!":
            _want_bool(operand, "the operand of !", problems)
            return BOOL
        return operand if operand.kind in _NUMERIC else DYN
    if k == "binary":
        return _binary(node, env, problems)
    if k == "cond":
        cond = infer(node.args[0], env, problems)
        _want_bool(cond, "the condition of ? :", problems)
        yes, no = infer(node.args[1], env, problems), infer(node.args[2], env, problems)
        if yes.kind == no.kind:
            return CelType(yes.kind, yes.item, yes.fields, yes.nullable or no.nullable)
        if no.kind == "null":
            return CelType(yes.kind, yes.item, yes.fields, True)
        if yes.kind == "null":
            return CelType(no.kind, no.item, no.fields, True)
        return DYN
    if k == "call":
        return _call(node, env, problems)
    return DYN


def _want_bool(t: CelType, what: str, problems: list[str]) -> None:
    if t.kind not in ("bool", "dyn"):
        problems.append(f"{what} is a {t.kind}, not a bool")


def _binary(node: Node, env: dict[str, CelType], problems: list[str]) -> CelType:
    left, right = (infer(a, env, problems) for a in node.args)
    op = node.op
    if op in ("&&", "||"):
        _want_bool(left, f"the left side of {op}", problems)
        _want_bool(right, f"the right side of {op}", problems)
        return BOOL
    if op in ("<", "<=", ">", ">=", "==", "!=", "in"):
        return BOOL
    if op == "+":
        if left.kind == right.kind and left.kind in ("string", "bytes", "list", *_NUMERIC):
            return CelType(left.kind, left.item)
        if {left.kind, right.kind} == {"timestamp", "duration"}:
            return CelType("timestamp")
        if left.kind == right.kind == "duration":
            return CelType("duration")
        if _is(left, "string") and _is(right, *_NUMERIC, "bool", "list", "map", "null"):
            problems.append(f"string + {right.kind}: convert with string() first")
        return DYN
    if op == "-" and left.kind == right.kind == "timestamp":
        return CelType("duration")
    if left.kind == right.kind and left.kind in _NUMERIC:
        return CelType(left.kind)
    return DYN


def _call(node: Node, env: dict[str, CelType], problems: list[str]) -> CelType:
    name = node.op
    if name in _MACROS and node.target is not None and node.args:
        receiver = infer(node.target, env, problems)
        var = node.args[0].op if node.args[0].kind == "ident" else ""
        inner = dict(env)
        if receiver.kind == "list" and receiver.item is not None:
            inner[var] = receiver.item
        elif receiver.kind == "map":
            inner[var] = STRING if receiver.fields is not None else DYN
        else:
            inner[var] = DYN
        results = [infer(a, inner, problems) for a in node.args[1:]]
        if name in ("all", "exists", "exists_one", "filter"):
            _want_bool(results[-1], f"the predicate of {name}()", problems)
        if name == "filter":
            return CelType("list", receiver.item if receiver.kind == "list" else DYN)
        if name == "map":
            return CelType("list", results[-1])
        return BOOL
    if node.target is not None:
        infer(node.target, env, problems)
    for a in node.args:
        infer(a, env, problems)
    if name in _BOOL_FUNCTIONS:
        return BOOL
    if name in _SCALAR_RESULT:
        return _t(_SCALAR_RESULT[name])
    if name.startswith("get"):
        return CelType("int")
    if name in ("findStrings", "findKeys"):
        return CelType("list", STRING)
    return DYN


def check_result(node: Node, env: dict[str, CelType], want: str) -> list[str]:
    """Problems of an expression that must return `want` (bool or string)."""
    problems: list[str] = []
    got = infer(node, env, problems)
    if got.kind not in (want, "dyn"):
        problems.insert(0, f"returns a {got.kind}, not a {want}")
    elif got.nullable and want == "bool":
        problems.insert(0, f"may return null, not a {want} (compare it with != null)")
    return problems


def _map(**fields: CelType) -> CelType:
    return CelType("map", DYN, fields)


def variable_types(kind: str = "ModelDeployment") -> dict[str, CelType]:
    """The types of the variables rules see (docs/policy.md, "What a rule sees"); `object` and
    `oldObject` are documents of `kind`."""
    from controller.policy.celfields import document_model

    schema = document_model(kind).model_json_schema()
    deployment = schema_type(schema, schema.get("$defs", {}))
    strings = CelType("list", STRING)
    text_map = CelType("map", STRING)
    model = _map(
        name=STRING,
        version=STRING,
        uri=STRING,
        alias=CelType("string", nullable=True),
        status=STRING,
        aliases=strings,
        tags=text_map,
        description=STRING,
        source=STRING,
        run_id=STRING,
        creation_time=CelType("timestamp", nullable=True),
        run=_map(metrics=CelType("map", CelType("double")), params=text_map, tags=text_map),
    )
    return {
        "object": deployment,
        "oldObject": deployment,
        "change": _map(
            kind=STRING,
            fields=strings,
            modelChanged=BOOL,
            environment=STRING,
            name=STRING,
            path=STRING,
        ),
        "model": model,
        "simulation": DYN,
        "request": _map(
            time=CelType("timestamp"),
            author=STRING,
            branch=STRING,
            base=STRING,
            head=STRING,
        ),
        "params": DYN,
    }

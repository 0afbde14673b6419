"""Rewriting CEL source without a parser: tokens, a variable renamed (a rule's own `params`), and
chains of fields read from one variable each (`object.spec.model` -> `__object__spec__model`)."""

from __future__ import annotations

import re

from controller.policy.celfields import MACRO_VARIABLE, Tree, strip_strings

FieldPathT = tuple[str, ...]  # ("object", "spec", "rollout"): a variable and fields below it


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
    bound_names = set(MACRO_VARIABLE.findall(strip_strings(source)))
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

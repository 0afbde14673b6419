"""A CEL parser producing a small syntax tree with source spans.

The runtime (common-expression-language) compiles and runs expressions but exposes no syntax
tree. Two things need one: type checking at load (a validation that cannot return a bool is an
error at file:line before anything runs, celtypes.py) and mutation testing of rules (drop a
clause of an `&&`, flip a comparison: mutate.py, which edits the source at a node's span).
The grammar is CEL's (github.com/google/cel-spec, langdef.md); the runtime stays the judge of
what compiles: this parser only reads expressions the runtime has already accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(
    r"(?P<space>\s+|//[^\n]*)"
    r"|(?P<str>[rRbB]{0,2}(?:'''|\"\"\"|'|\"))"
    r"|(?P<num>0[xX][0-9a-fA-F]+[uU]?|(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?[uU]?)"
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>==|!=|<=|>=|&&|\|\||[-+*/%!<>?:.,()\[\]{}])",
    re.DOTALL,
)


class ParseError(Exception):
    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True)
class Token:
    kind: str  # str, num, ident, op, end
    text: str
    start: int
    end: int


def tokenize(source: str) -> list[Token]:
    out: list[Token] = []
    i = 0
    while i < len(source):
        m = _TOKEN.match(source, i)
        if m is None:
            raise ParseError(f"unexpected character {source[i]!r}", i)
        kind = m.lastgroup or "op"
        if kind == "space":
            i = m.end()
            continue
        if kind == "str":
            opening = m.group()
            delim = opening.lstrip("rRbB")
            raw = "r" in opening.lower()
            j = m.end()
            while j < len(source) and not source.startswith(delim, j):
                j += 2 if (not raw and source[j] == "\\") else 1
            end = min(j + len(delim), len(source))
            out.append(Token("str", source[i:end], i, end))
            i = end
            continue
        if kind == "num" and m.group() == ".":
            kind = "op"
        out.append(Token(kind, m.group(), i, m.end()))
        i = m.end()
    out.append(Token("end", "", len(source), len(source)))
    return out


@dataclass(frozen=True)
class Node:
    """kind: lit (op: int, uint, double, string, bytes, bool, null), ident, select (args[0]
    the operand, op the field), index, call (op the function; target the receiver of a
    method call), list, map (args alternate keys and values), struct, unary, binary, cond."""

    kind: str
    start: int
    end: int
    op: str = ""
    args: tuple[Node, ...] = ()
    target: Node | None = None
    # Inside a macro's body the bound variable is not a field reference.
    meta: dict[str, str] = field(default_factory=dict, compare=False)

    def walk(self) -> list[Node]:
        nodes = [self]
        if self.target is not None:
            nodes += self.target.walk()
        for a in self.args:
            nodes += a.walk()
        return nodes


_RELOPS = ("<", "<=", ">", ">=", "==", "!=", "in")


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.toks = tokenize(source)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def at(self, *texts: str) -> bool:
        t = self.tok
        return t.kind in ("op", "ident") and t.text in texts

    def take(self, text: str) -> Token:
        if not self.at(text):
            raise ParseError(f"expected {text!r}", self.tok.start)
        t = self.tok
        self.i += 1
        return t

    def parse(self) -> Node:
        node = self.expr()
        if self.tok.kind != "end":
            raise ParseError(f"unexpected {self.tok.text!r}", self.tok.start)
        return node

    def expr(self) -> Node:
        cond = self.binary(0)
        if not self.at("?"):
            return cond
        self.take("?")
        yes = self.binary(0)
        self.take(":")
        no = self.expr()
        return Node("cond", cond.start, no.end, "?:", (cond, yes, no))

    _LEVELS: tuple[tuple[str, ...], ...] = (
        ("||",),
        ("&&",),
        _RELOPS,
        ("+", "-"),
        ("*", "/", "%"),
    )

    def binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.at(*self._LEVELS[level]):
            op = self.tok.text
            self.i += 1
            right = self.binary(level + 1)
            left = Node("binary", left.start, right.end, op, (left, right))
        return left

    def unary(self) -> Node:
        if self.at("!", "-"):
            t = self.tok
            self.i += 1
            operand = self.unary()
            return Node("unary", t.start, operand.end, t.text, (operand,))
        return self.member()

    def member(self) -> Node:
        node = self.primary()
        while True:
            if self.at("."):
                self.i += 1
                name = self.tok
                if name.kind != "ident":
                    raise ParseError("expected a field name", name.start)
                self.i += 1
                if self.at("("):
                    args, end = self.call_args()
                    node = Node("call", node.start, end, name.text, args, target=node)
                else:
                    node = Node("select", node.start, name.end, name.text, (node,))
            elif self.at("["):
                self.i += 1
                index = self.expr()
                end = self.take("]").end
                node = Node("index", node.start, end, "[]", (node, index))
            elif self.at("{") and node.kind in ("ident", "select"):
                node = self.struct(node)
            else:
                return node

    def call_args(self) -> tuple[tuple[Node, ...], int]:
        self.take("(")
        args: list[Node] = []
        while not self.at(")"):
            args.append(self.expr())
            if not self.at(")"):
                self.take(",")
        return tuple(args), self.take(")").end

    def struct(self, name: Node) -> Node:
        self.take("{")
        args: list[Node] = []
        while not self.at("}"):
            key = self.tok
            self.i += 1
            self.take(":")
            args += [Node("lit", key.start, key.end, "string"), self.expr()]
            if not self.at("}"):
                self.take(",")
        return Node("struct", name.start, self.take("}").end, "", tuple(args))

    def primary(self) -> Node:
        t = self.tok
        if t.kind == "num":
            self.i += 1
            kind = "uint" if t.text[-1] in "uU" else "int"
            if not t.text.lower().startswith("0x") and any(c in t.text for c in ".eE"):
                kind = "double"
            return Node("lit", t.start, t.end, kind)
        if t.kind == "str":
            self.i += 1
            prefix = t.text[: len(t.text) - len(t.text.lstrip("rRbB"))]
            return Node("lit", t.start, t.end, "bytes" if "b" in prefix.lower() else "string")
        if t.kind == "ident":
            self.i += 1
            if t.text in ("true", "false"):
                return Node("lit", t.start, t.end, "bool")
            if t.text == "null":
                return Node("lit", t.start, t.end, "null")
            if self.at("("):
                args, end = self.call_args()
                return Node("call", t.start, end, t.text, args)
            return Node("ident", t.start, t.end, t.text)
        if self.at("."):  # a leading dot: a name from the root scope
            self.i += 1
            return self.primary()
        if self.at("("):
            self.i += 1
            inner = self.expr()
            end = self.take(")").end
            return Node(inner.kind, t.start, end, inner.op, inner.args, inner.target, inner.meta)
        if self.at("["):
            self.i += 1
            items: list[Node] = []
            while not self.at("]"):
                items.append(self.expr())
                if not self.at("]"):
                    self.take(",")
            return Node("list", t.start, self.take("]").end, "", tuple(items))
        if self.at("{"):
            self.i += 1
            entries: list[Node] = []
            while not self.at("}"):
                key = self.expr()
                self.take(":")
                entries += [key, self.expr()]
                if not self.at("}"):
                    self.take(",")
            return Node("map", t.start, self.take("}").end, "", tuple(entries))
        raise ParseError(f"unexpected {t.text or 'end of expression'!r}", t.start)


def parse(source: str) -> Node:
    """The syntax tree of `source`; ParseError (with an offset) when it is not CEL."""
    return _Parser(source).parse()


def literal_text(source: str, node: Node) -> str | None:
    """The value of a string literal node (no escapes beyond \\\\ and quotes), else None."""
    if node.kind != "lit" or node.op != "string":
        return None
    text = source[node.start : node.end]
    raw = text[:1] in "rR"
    body = text.lstrip("rR")
    delim = body[:3] if body[:3] in ("'''", '"""') else body[:1]
    inner = body[len(delim) : len(body) - len(delim)]
    if raw:
        return inner
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m[1], m[1]), inner)

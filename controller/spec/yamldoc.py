"""YAML documents that remember where each value was written, for errors at file:line: field.

Safe loading only: a tag that would build a Python object is an error, never code that runs.
Shared by deployment files (manifest.py) and anything else users write in YAML.

Files come from pull requests, so reading one is bounded before anything is built (`Limits`,
defaults in docs/security.md): the size first, then libyaml's event stream is counted (nesting
depth, aliases, the size of the document with its aliases expanded, recursive aliases) and read
no further than the first limit broken. Only a file within every limit reaches the composer,
whose C recursion overflows the stack on deep nesting, and the line index below, which walks
every path through aliases (a billion-laughs file would take minutes and gigabytes).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from controller.errors import Location, Problem

FieldPath = tuple[str | int, ...]
# libyaml's loader when PyYAML was built with it: about 6x faster on large repositories.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
M = TypeVar("M", bound=BaseModel)

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What reading one YAML file may cost. The defaults exceed every real deployment, policy,
    waiver and policy test file by orders of magnitude (docs/security.md)."""

    max_bytes: int = 1 * MIB  # the file, in bytes of UTF-8
    max_depth: int = 64  # nested mappings and sequences, aliases expanded
    max_aliases: int = 100  # `*name` references (policy tests reuse objects with them)
    max_nodes: int = 100_000  # nodes of the document with every alias expanded


LIMITS = Limits()


class _TooCostly(Exception):
    def __init__(self, mark: Any, message: str) -> None:
        super().__init__(message)
        self.line = mark.line + 1 if mark is not None else None
        self.message = message


@dataclass
class _Open:
    """A mapping or sequence being read: its anchor, and its expanded size and height so far."""

    anchor: str | None
    nodes: int = 1
    height: int = 1


@dataclass(frozen=True)
class YamlDoc:
    path: str
    data: Any
    lines: Mapping[FieldPath, int]  # 1-based line of every key and value

    def line_of(self, *field: str | int) -> int | None:
        """Line of `field`, or of its closest parent when it is absent."""
        for end in range(len(field), -1, -1):
            if tuple(field[:end]) in self.lines:
                return self.lines[tuple(field[:end])]
        return None

    def location(self, *field: str | int) -> Location:
        return Location(self.path, self.line_of(*field), field_path(field) or None)


def field_path(loc: Iterable[str | int]) -> str:
    """('spec', 'steps', 0, 'weight') -> 'spec.steps[0].weight'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _index(
    node: yaml.Node,
    path: FieldPath,
    lines: dict[FieldPath, int],
    problems: list[Problem],
    file: str,
) -> None:
    lines.setdefault(path, node.start_mark.line + 1)  # a key's own line wins over its value's
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key, line = key_node.value, key_node.start_mark.line + 1
            if key in seen:
                where = Location(file, line, field_path((*path, key)))
                problems.append(Problem(where, f"duplicate key (first set on line {seen[key]})"))
            seen[key] = line
            lines[(*path, key)] = line
            _index(value_node, (*path, key), lines, problems, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*path, i), lines, problems, file)


def size_problem(path: str, size: int, limits: Limits = LIMITS) -> Problem | None:
    """A file of `size` bytes is refused before it is read when over `limits.max_bytes`."""
    if size <= limits.max_bytes:
        return None
    return Problem(
        Location(path, 1),
        f"file is {size:,} bytes, more than the limit of {limits.max_bytes:,} bytes",
    )


def decode(path: str, data: bytes, limits: Limits = LIMITS) -> tuple[str | None, list[Problem]]:
    """A file's bytes as text: within the size limit, and UTF-8 (the error names the byte
    offset of the first byte that is not, and its line)."""
    too_large = size_problem(path, len(data), limits)
    if too_large is not None:
        return None, [too_large]
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        why = f"not UTF-8: byte 0x{data[err.start]:02x} at offset {err.start} ({err.reason})"
        return None, [Problem(Location(path, line), why)]


def read_file(path: Path, limits: Limits = LIMITS) -> tuple[str | None, list[Problem]]:
    """A file from disk, decoded; never more than the size limit + 1 bytes are read."""
    name = path.as_posix()
    try:
        with path.open("rb") as f:
            data = f.read(limits.max_bytes + 1)
            size = max(len(data), os.fstat(f.fileno()).st_size)
    except OSError as err:
        return None, [Problem(Location(name), f"cannot read: {err.strerror or err}")]
    too_large = size_problem(name, size, limits)
    return (None, [too_large]) if too_large is not None else decode(name, data, limits)


def check_cost(text: str, limits: Limits = LIMITS) -> None:
    """Raise _TooCostly at the first limit the YAML in `text` breaks, reading no further.

    Counts libyaml's events only (no node is built): depth of nesting, aliases, and the size
    and height every anchor stands for, so an alias costs what it expands to. An alias to a
    node still open (a recursive structure) is refused: nothing that reads it terminates."""
    stack: list[_Open] = []
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> (expanded nodes, height)
    aliases = nodes = 0
    events: Iterable[Any] = yaml.parse(text, Loader=_SafeLoader)
    for event in events:
        kind = type(event)
        if kind is yaml.ScalarEvent:  # the common case first: this loop runs per value
            if event.anchor is not None:
                anchors[event.anchor] = (1, 0)
            if stack:
                stack[-1].nodes += 1
            nodes += 1
        elif kind is yaml.AliasEvent:
            aliases += 1
            if aliases > limits.max_aliases:
                raise _TooCostly(event.start_mark, f"more than {limits.max_aliases} aliases")
            if any(o.anchor == event.anchor for o in stack):
                raise _TooCostly(event.start_mark, f"alias *{event.anchor} refers to itself")
            size, height = anchors.get(str(event.anchor), (1, 0))
            _add(stack, size, height, event, limits)
            nodes += size
        elif kind in (yaml.MappingStartEvent, yaml.SequenceStartEvent):
            nodes += 1
            if len(stack) + 1 > limits.max_depth:
                raise _TooCostly(event.start_mark, f"nested deeper than {limits.max_depth} levels")
            stack.append(_Open(event.anchor))
        elif kind in (yaml.MappingEndEvent, yaml.SequenceEndEvent):
            done = stack.pop()
            if done.anchor is not None:
                anchors[done.anchor] = (done.nodes, done.height)
            _add(stack, done.nodes, done.height, event, limits)
        if nodes > limits.max_nodes:
            raise _TooCostly(
                event.start_mark,
                f"more than {limits.max_nodes:,} values once its aliases are expanded",
            )


def _add(
    stack: list[_Open],
    size: int,
    height: int,
    event: Any,
    limits: Limits,
) -> None:
    """A child of `size` expanded nodes and `height` levels joins the innermost open node."""
    if len(stack) + height > limits.max_depth:
        raise _TooCostly(
            event.start_mark,
            f"nested deeper than {limits.max_depth} levels once its aliases are expanded",
        )
    if stack:
        parent = stack[-1]
        parent.nodes += size
        parent.height = max(parent.height, height + 1)


def load_yaml(
    path: str, text: str, limits: Limits = LIMITS
) -> tuple[YamlDoc | None, list[Problem]]:
    """Parse one single-document YAML file within `limits`; the doc is None when there are
    problems. Never raises for any text: RecursionError and MemoryError are problems too."""
    size = len(text) if len(text) > limits.max_bytes else len(text.encode("utf-8", "replace"))
    too_large = size_problem(path, size, limits)
    if too_large is not None:
        return None, [too_large]
    lines: dict[FieldPath, int] = {}
    problems: list[Problem] = []
    loader = None
    try:
        check_cost(text, limits)
        loader = _SafeLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None, [Problem(Location(path, 1), "file is empty")]
        _index(node, (), lines, problems, path)
        data = loader.construct_document(node)
    except _TooCostly as err:
        return None, [Problem(Location(path, err.line), f"refused: {err.message}")]
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        return None, [Problem(Location(path, line), f"invalid YAML: {err.problem or err}")]
    except yaml.YAMLError as err:
        return None, [Problem(Location(path), f"invalid YAML: {err}")]
    except (RecursionError, MemoryError) as err:  # the limits should make these unreachable
        return None, [
            Problem(Location(path), f"refused: too costly to read ({type(err).__name__})")
        ]
    finally:
        if loader is not None:
            loader.dispose()
    if problems:
        return None, problems
    return YamlDoc(path, data, lines), []


def validate_doc(doc: YamlDoc, model: type[M]) -> tuple[M | None, list[Problem]]:
    """Validate a document against a pydantic model; errors point at the offending line."""
    if not isinstance(doc.data, dict):
        return None, [Problem(Location(doc.path, 1), f"expected a mapping ({model.__name__})")]
    try:
        return model.model_validate(doc.data), []
    except ValidationError as err:
        return None, [_problem(doc, e) for e in err.errors()]


def _problem(doc: YamlDoc, error: Any) -> Problem:
    loc: FieldPath = tuple(error["loc"])
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    elif error["type"] == "missing":
        message = "required field is missing"
    elif "input" in error and not isinstance(error["input"], dict | list):
        got = repr(error["input"])
        got = got if len(got) <= 80 else f"{got[:60]}... ({len(got):,} characters)"
        message = f"{message} (got {got})"
    message = message.removeprefix("Value error, ")
    return Problem(doc.location(*loc), message)

"""YAML documents that remember where each value was written, for errors at file:line: field.

Safe loading only: a tag that would build a Python object is an error, never code that runs.
Shared by deployment files (manifest.py) and anything else users write in YAML.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from controller.errors import Location, Problem

FieldPath = tuple[str | int, ...]
# libyaml's loader when PyYAML was built with it: about 6x faster on large repositories.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
M = TypeVar("M", bound=BaseModel)


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


def load_yaml(path: str, text: str) -> tuple[YamlDoc | None, list[Problem]]:
    """Parse one single-document YAML file; the doc is None when there are problems."""
    loader = _SafeLoader(text)
    lines: dict[FieldPath, int] = {}
    problems: list[Problem] = []
    try:
        node = loader.get_single_node()
        if node is None:
            return None, [Problem(Location(path, 1), "file is empty")]
        _index(node, (), lines, problems, path)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        return None, [Problem(Location(path, line), f"invalid YAML: {err.problem or err}")]
    except yaml.YAMLError as err:
        return None, [Problem(Location(path), f"invalid YAML: {err}")]
    finally:
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
        message = f"{message} (got {error['input']!r})"
    message = message.removeprefix("Value error, ")
    return Problem(doc.location(*loc), message)

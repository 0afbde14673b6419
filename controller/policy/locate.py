"""Where a character of a YAML string value sits in its file: line and column.

A CEL expression is often a folded (`>-`) or literal (`|`) block spanning lines; an error at
offset 40 of the expression belongs on the line of the block that holds that character, not
on the `expression:` key. Composed only when an error needs placing.
"""

from __future__ import annotations

from collections.abc import Sequence

import yaml

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _node_at(root: yaml.Node, path: Sequence[str | int]) -> yaml.Node | None:
    node: yaml.Node | None = root
    for part in path:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if part < len(node.value) else None
        else:
            return None
    return node


def position_in_value(text: str, path: Sequence[str | int], offset: int) -> tuple[int, int] | None:
    """(line, column), both 1-based, of character `offset` of the string at `path` in the
    YAML `text`; None when it cannot be placed (then the key's line is the best answer)."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:
        return None
    node = _node_at(root, path) if root is not None else None
    if not isinstance(node, yaml.ScalarNode) or not isinstance(node.value, str):
        return None
    lines = text.split("\n")
    value: str = node.value
    first = node.start_mark.line + (1 if node.style in ("|", ">") else 0)
    last = min(node.end_mark.line, len(lines) - 1)
    anchors: list[tuple[int, int, int]] = []  # (offset in value, line index, column)
    cursor = 0
    for i in range(first, last + 1):
        start_col = node.start_mark.column if i == node.start_mark.line else 0
        segment = lines[i][start_col:]
        if i == node.start_mark.line and node.style in ('"', "'"):
            segment, start_col = segment[1:], start_col + 1
        stripped = segment.strip().rstrip("\"'") if i == last else segment.strip()
        if not stripped:
            continue
        found = value.find(stripped, cursor)
        if found < 0:
            break  # escapes or folding we do not follow: stop at what is placed
        anchors.append((found, i, start_col + len(segment) - len(segment.lstrip())))
        cursor = found + len(stripped)
    placed = [a for a in anchors if a[0] <= offset]
    if not placed:
        return None
    at, line, column = placed[-1]
    return line + 1, column + (offset - at) + 1

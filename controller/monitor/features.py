"""Numeric input columns out of MLflow scoring-protocol request bodies.

The four formats MLflow's scoring server takes: `dataframe_split` (columns and rows),
`dataframe_records` (a list of objects), `inputs` and `instances` (a list of objects, an object
of columns, or a list of rows). Rows without names get their position as the name (`"0"`,
`"1"`, ...). Non-numeric values (strings, booleans, nulls) are not features and are counted
as missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

MAX_COLUMNS = 4096  # a body with more columns is not a tabular model's input


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def body_rows(body: Any) -> Iterator[dict[str, float | None]]:
    """Each input row of a request body as {column: number or None}."""
    return _rows(body, _number)


def raw_rows(body: Any) -> Iterator[dict[str, Any]]:
    """Each input row of a request body as {column: value as sent} (the schema check)."""
    return _rows(body, _same)


def _same(v: Any) -> Any:
    return v


def _rows(body: Any, convert: Callable[[Any], Any]) -> Iterator[dict[str, Any]]:
    if not isinstance(body, dict):
        return
    split = body.get("dataframe_split")
    if isinstance(split, dict):
        columns = split.get("columns")
        data = split.get("data")
        if isinstance(data, list):
            for row in data:
                yield from _row(row, columns, convert)
        return
    for key in ("dataframe_records", "inputs", "instances"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, list):
            for row in value:
                yield from _row(row, None, convert)
        elif isinstance(value, dict):  # an object of columns
            yield from _columns(value, convert)
        return


def _row(row: Any, columns: Any, convert: Callable[[Any], Any]) -> Iterator[dict[str, Any]]:
    if isinstance(row, dict):
        if len(row) <= MAX_COLUMNS:
            yield {str(k): convert(v) for k, v in row.items()}
    elif isinstance(row, list) and len(row) <= MAX_COLUMNS:
        names = columns if isinstance(columns, list) and len(columns) == len(row) else None
        yield {(str(names[i]) if names else str(i)): convert(v) for i, v in enumerate(row)}


def _columns(value: dict[str, Any], convert: Callable[[Any], Any]) -> Iterator[dict[str, Any]]:
    if len(value) > MAX_COLUMNS:
        return
    lists = {str(k): v for k, v in value.items() if isinstance(v, list)}
    if not lists:
        yield {str(k): convert(v) for k, v in value.items()}
        return
    n = max(len(v) for v in lists.values())
    for i in range(n):
        yield {k: convert(v[i]) if i < len(v) else None for k, v in lists.items()}

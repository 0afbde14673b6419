"""Plan-time checks of a batch deployment's input on this machine: that it exists, that the
columns the spec names are in it, and that the model's signature finds the columns it reads,
of kinds it takes (`check_signature`: a column of text handed to a model that takes numbers
fails every row). Only local paths (and `file://`) are checked here: object stores are the
job's to read, with the cluster's credentials.

The reader is bounded: at most MAX_FILES entries of a folder are listed, and at most
MAX_HEAD_BYTES of one file are read (a CSV header and its first rows, a JSON line, a Parquet
footer), so a hostile or enormous input costs the controller next to nothing. A column's kind
comes from the Parquet schema, the first JSON line's values, or the first MAX_SAMPLE_ROWS CSV
rows (a column mixing numbers and text is text, as pandas reads it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from controller.errors import BadInput
from controller.spec.batch import BatchSpec

MAX_FILES = 10_000
MAX_HEAD_BYTES = 256 * 1024
MAX_SAMPLE_ROWS = 200  # CSV rows read for the columns' kinds
# MLflow's signature types, by the kind of value they take; other types are not checked.
SIGNATURE_KINDS = {
    "double": "number", "float": "number", "long": "number", "integer": "number",
    "string": "text", "boolean": "boolean",
}  # fmt: skip
SUFFIXES = {"csv": (".csv",), "jsonl": (".json", ".jsonl"), "parquet": (".parquet", ".pq")}


@dataclass(frozen=True)
class InputInfo:
    files: int
    columns: list[str] | None  # None: not a local input, not read
    # Column -> "number", "text" or "boolean", where the head showed it (not: all nulls, other).
    kinds: Mapping[str, str] = field(default_factory=dict)


def local_path(uri: str) -> Path | None:
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    return Path(uri) if "://" not in uri else None


def check_input(spec: BatchSpec, where: str) -> InputInfo:
    """Raise BadInput naming `where` (file:line: field) when the input is missing or lacks a
    column the spec names; the columns found otherwise."""
    path = local_path(spec.input.uri)
    if path is None:
        return InputInfo(0, None)
    files = _files(path, spec.input.format, where)
    columns, kinds = head_schema(files[0], spec.input.format, where)
    wanted = list(spec.input.columns or [])
    if spec.output.id_column:
        wanted.append(spec.output.id_column)
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise BadInput(
            f"{where}: the input {files[0]} has no column(s) {', '.join(missing)} "
            f"(it has {', '.join(columns[:20])}{'...' if len(columns) > 20 else ''})"
        )
    return InputInfo(len(files), columns, kinds)


def _files(path: Path, fmt: str, where: str) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise BadInput(f"{where}: the input {path} does not exist")
    found: list[Path] = []
    with os.scandir(path) as entries:
        for n, entry in enumerate(entries):
            if n >= MAX_FILES:
                raise BadInput(f"{where}: the input {path} holds more than {MAX_FILES} entries")
            if entry.is_file() and entry.name.endswith(SUFFIXES[fmt]):
                found.append(Path(entry.path))
    if not found:
        raise BadInput(f"{where}: the input {path} holds no {fmt} file")
    return sorted(found)


def head_schema(path: Path, fmt: str, where: str) -> tuple[list[str], dict[str, str]]:
    """The columns of one input file and the kinds the head shows, from at most
    MAX_HEAD_BYTES of it."""
    if fmt == "parquet":
        return _parquet_schema(path, where)
    try:
        with path.open("rb") as f:
            head = f.read(MAX_HEAD_BYTES)
    except OSError as err:
        raise BadInput(f"{where}: cannot read the input {path}: {err.strerror or err}") from None
    line, newline, rest = head.partition(b"\n")
    if not newline and len(head) == MAX_HEAD_BYTES:
        raise BadInput(f"{where}: the first line of {path} is longer than {MAX_HEAD_BYTES} bytes")
    text = line.decode("utf-8", "replace").strip()
    if fmt == "csv":
        import csv

        try:
            return _csv_schema(text, rest, complete=len(head) < MAX_HEAD_BYTES)
        except csv.Error as err:  # a field over csv's limit, a NUL byte
            raise BadInput(f"{where}: cannot read {path} as CSV: {err}") from None
    try:
        row = json.loads(text)
    except (ValueError, RecursionError):
        raise BadInput(f"{where}: the first line of {path} is not a JSON object") from None
    if not isinstance(row, dict):
        raise BadInput(f"{where}: the first line of {path} is not a JSON object")
    kinds = {str(k): kind for k, v in row.items() if (kind := _json_kind(v)) is not None}
    return [str(k) for k in row], kinds


def _json_kind(value: object) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "text" if isinstance(value, str) else None


def _csv_schema(header: str, rest: bytes, complete: bool) -> tuple[list[str], dict[str, str]]:
    """The header's columns, and each column's kind over the first MAX_SAMPLE_ROWS rows (the
    last line is left out when the head cut it; empty cells say nothing)."""
    import csv

    columns = next(csv.reader([header]), [])
    lines = rest.decode("utf-8", "replace").splitlines()
    if not complete and lines:
        lines.pop()
    seen: dict[str, set[str]] = {c: set() for c in columns}
    for row in csv.reader(lines[:MAX_SAMPLE_ROWS]):
        for name, cell in zip(columns, row, strict=False):
            if cell.strip():
                seen[name].add(_cell_kind(cell.strip()))
    # Numbers mixed with anything else: pandas reads the column as text.
    return columns, {c: k.pop() if len(k) == 1 else "text" for c, k in seen.items() if k}


def _cell_kind(cell: str) -> str:
    if cell in ("True", "False", "true", "false"):
        return "boolean"
    try:
        float(cell)
    except ValueError:
        return "text"
    return "number"


def _parquet_schema(path: Path, where: str) -> tuple[list[str], dict[str, str]]:
    import pyarrow.parquet as pq

    size = path.stat().st_size
    with path.open("rb") as raw:
        if size < 12:
            raise BadInput(f"{where}: {path} is not a Parquet file")
        raw.seek(size - 8)
        tail = raw.read(8)
    if tail[4:] != b"PAR1":
        raise BadInput(f"{where}: {path} is not a Parquet file")
    footer = int.from_bytes(tail[:4], "little")
    if footer > MAX_HEAD_BYTES:
        raise BadInput(
            f"{where}: the Parquet footer of {path} is {footer:,} bytes, more than {MAX_HEAD_BYTES:,}"
        )
    import pyarrow.types as pt

    try:
        schema = pq.read_schema(path)
    except Exception as err:  # pyarrow raises its own kinds for a broken file
        raise BadInput(f"{where}: cannot read the Parquet schema of {path}: {err}") from None
    kinds = {}
    for f in schema:
        if pt.is_integer(f.type) or pt.is_floating(f.type) or pt.is_decimal(f.type):
            kinds[f.name] = "number"
        elif pt.is_string(f.type) or pt.is_large_string(f.type):
            kinds[f.name] = "text"
        elif pt.is_boolean(f.type):
            kinds[f.name] = "boolean"
    return list(schema.names), kinds


def check_signature(
    spec: BatchSpec,
    info: InputInfo,
    model: str,
    inputs: Mapping[str, str] | list[str] | None,
    where: str,
) -> None:
    """Raise BadInput naming `where` when the columns a run hands the model (the spec's
    `columns`, else every input column but the id) are not the model signature's `inputs`, or
    one holds values of another kind than the signature's type (`inputs` as name -> MLflow
    type; a list: names only). Nothing to check when the input was not read or the model
    logged no named inputs."""
    if info.columns is None or not inputs:
        return
    given = list(spec.input.columns or [c for c in info.columns if c != spec.output.id_column])
    missing = [c for c in inputs if c not in given]
    extra = [c for c in given if c not in inputs]
    if not missing and not extra:
        if isinstance(inputs, Mapping):
            _check_kinds(info, model, inputs, where)
        return
    parts = []
    if missing:
        parts.append(f"lacks {_names(missing)}")
    if extra:
        parts.append(f"has {_names(extra)} the model does not take (name them in input.columns)")
    raise BadInput(
        f"{where}: the input does not match {model}'s signature: it {'; it '.join(parts)}"
    )


def _check_kinds(info: InputInfo, model: str, types: Mapping[str, str], where: str) -> None:
    wrong = []
    for name, mlflow_type in types.items():
        want, have = SIGNATURE_KINDS.get(mlflow_type), info.kinds.get(name)
        if want is not None and have is not None and have != want:
            wrong.append(f"{name!r} holds {have} values, the model takes {mlflow_type}")
    if wrong:
        shown = "; ".join(wrong[:5]) + (f" and {len(wrong) - 5} more" if len(wrong) > 5 else "")
        raise BadInput(f"{where}: the input does not match {model}'s signature: {shown}")


def check_before_run(
    spec: BatchSpec,
    model: str,
    input_schema: Callable[[str], Mapping[str, str] | list[str] | None] | None,
    where: str,
) -> None:
    """The controller's check before it claims a run: when the input is on this machine too,
    that it has the named columns and matches `model`'s signature (BadInput naming `where`
    otherwise: nothing is run). An input this machine cannot see is the job's to read."""
    path = local_path(spec.input.uri)
    if path is None or not path.exists():
        return
    info = check_input(spec, where)
    if input_schema is not None:
        check_signature(spec, info, model, input_schema(model), where)


def _names(columns: list[str]) -> str:
    shown = ", ".join(repr(c) for c in columns[:10])
    return shown + (f" and {len(columns) - 10} more" if len(columns) > 10 else "")

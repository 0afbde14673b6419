"""Plan-time checks of a batch deployment's input on this machine: that it exists, that the
columns the spec names are in it, and that the model's signature finds the columns it reads,
of kinds it takes (`check_signature`: a column of text handed to a model that takes numbers
fails every row). Local paths (and `file://`) are always checked; an object store only when
asked (`batch plan --remote-inputs`: this machine's credentials, within REMOTE_DEADLINE_S),
else it is the job's to read, with the cluster's credentials.

The reader is bounded: at most MAX_FILES entries of a folder are listed, and at most
MAX_HEAD_BYTES of one file are read (a CSV header and its first rows, a JSON line, a Parquet
footer), so a hostile or enormous input costs the controller next to nothing. A column's kind
comes from the Parquet schema, the first JSON line's values, or the first MAX_SAMPLE_ROWS CSV
rows (a column mixing numbers and text is text, as pandas reads it).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.batch import storage
from controller.errors import BadInput
from controller.spec.batch import BatchSpec

MAX_FILES = 10_000
MAX_HEAD_BYTES = 256 * 1024
MAX_SAMPLE_ROWS = 200  # CSV rows read for the columns' kinds
REMOTE_DEADLINE_S = 30.0  # for listing an object-store input and reading its first file's head
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


def check_input(
    spec: BatchSpec, where: str, *, remote: bool = False, deadline_s: float = REMOTE_DEADLINE_S
) -> InputInfo:
    """Raise BadInput naming `where` (file:line: field) when the input is missing or lacks a
    column the spec names; the columns found otherwise. An object-store input is read only
    with `remote` (this machine's credentials, within `deadline_s`); else it is not checked
    (columns None)."""
    path = local_path(spec.input.uri)
    if path is None:
        return _remote_input(spec, where, deadline_s) if remote else InputInfo(0, None)
    files = _files(path, spec.input.format, where)
    columns, kinds = head_schema(files[0], spec.input.format, where)
    return _named_columns(spec, where, str(files[0]), len(files), columns, kinds)


def _named_columns(
    spec: BatchSpec, where: str, first: str, files: int, columns: list[str], kinds: dict[str, str]
) -> InputInfo:
    wanted = list(spec.input.columns or [])
    if spec.output.id_column:
        wanted.append(spec.output.id_column)
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise BadInput(
            f"{where}: the input {first} has no column(s) {', '.join(missing)} "
            f"(it has {', '.join(columns[:20])}{'...' if len(columns) > 20 else ''})"
        )
    return InputInfo(files, columns, kinds)


def _remote_input(spec: BatchSpec, where: str, deadline_s: float) -> InputInfo:
    """An object-store input read through pyarrow's filesystems, in a daemon thread given
    `deadline_s`: a store that does not answer is an error, not a hung plan (nor a process
    that cannot exit: a pool's threads are joined at exit, a daemon thread is not)."""
    done: list[InputInfo | BaseException] = []

    def read() -> None:
        try:
            done.append(_read_remote(spec, where))
        except BaseException as err:  # handed to the caller's thread
            done.append(err)

    worker = threading.Thread(target=read, name="serveops-input", daemon=True)
    worker.start()
    worker.join(deadline_s)
    if not done:
        raise BadInput(f"{where}: the input {spec.input.uri} did not answer within {deadline_s:g}s")
    if isinstance(done[0], BaseException):
        raise done[0]
    return done[0]


def _read_remote(spec: BatchSpec, where: str) -> InputInfo:
    import pyarrow.fs as pafs

    uri, fmt = spec.input.uri, spec.input.format
    try:
        fs, root = storage.filesystem(uri)
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.NotFound:
            raise BadInput(f"{where}: the input {uri} does not exist")
        files = [root] if info.type == pafs.FileType.File else _listed(fs, root, uri, fmt, where)
        with fs.open_input_file(files[0]) as f:
            columns, kinds = read_schema(f, f.size(), fmt, f"{uri} ({files[0]})", where)
    except (OSError, ValueError) as err:  # pyarrow's: no credentials, access denied, bad URI
        raise BadInput(f"{where}: cannot read the input {uri}: {err}"[:500]) from None
    return _named_columns(spec, where, files[0], len(files), columns, kinds)


def _listed(fs: Any, root: str, uri: str, fmt: str, where: str) -> list[str]:
    import pyarrow.fs as pafs

    entries = fs.get_file_info(pafs.FileSelector(root))
    if len(entries) > MAX_FILES:
        raise BadInput(f"{where}: the input {uri} holds more than {MAX_FILES} entries")
    files = sorted(
        e.path
        for e in entries
        if e.type == pafs.FileType.File
        and e.base_name.endswith(SUFFIXES[fmt])
        and not e.base_name.startswith(("_", "."))
    )
    if not files:
        raise BadInput(f"{where}: the input {uri} holds no {fmt} file")
    return files


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
    """The columns of one local input file and the kinds the head shows."""
    try:
        with path.open("rb") as f:
            return read_schema(f, path.stat().st_size, fmt, str(path), where)
    except OSError as err:
        raise BadInput(f"{where}: cannot read the input {path}: {err.strerror or err}") from None


def read_schema(
    f: Any, size: int, fmt: str, path: str, where: str
) -> tuple[list[str], dict[str, str]]:
    """The columns of an open input file (`path` names it in errors) and the kinds its head
    shows, from at most MAX_HEAD_BYTES of it (a Parquet file: its footer)."""
    if fmt == "parquet":
        return _parquet_schema(f, size, path, where)
    head = f.read(MAX_HEAD_BYTES)
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


def _parquet_schema(f: Any, size: int, path: str, where: str) -> tuple[list[str], dict[str, str]]:
    import pyarrow.parquet as pq

    if size < 12:
        raise BadInput(f"{where}: {path} is not a Parquet file")
    f.seek(size - 8)
    tail = f.read(8)
    f.seek(0)
    if tail[4:] != b"PAR1":
        raise BadInput(f"{where}: {path} is not a Parquet file")
    footer = int.from_bytes(tail[:4], "little")
    if footer > MAX_HEAD_BYTES:
        raise BadInput(
            f"{where}: the Parquet footer of {path} is {footer:,} bytes, more than {MAX_HEAD_BYTES:,}"
        )
    import pyarrow.types as pt

    try:
        schema = pq.read_schema(f)
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

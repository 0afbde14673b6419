"""Plan-time checks of a batch deployment's input on this machine: that it exists, that the
columns the spec names are in it, and that the model's signature finds the columns it reads
(`check_signature`). Only local paths (and `file://`) are checked here: object
stores are the job's to read, with the cluster's credentials.

The reader is bounded: at most MAX_FILES entries of a folder are listed, and at most
MAX_HEAD_BYTES of one file are read (a CSV header line, a JSON line, a Parquet footer), so a
hostile or enormous input costs the controller next to nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from controller.errors import BadInput
from controller.spec.batch import BatchSpec

MAX_FILES = 10_000
MAX_HEAD_BYTES = 256 * 1024
SUFFIXES = {"csv": (".csv",), "jsonl": (".json", ".jsonl"), "parquet": (".parquet", ".pq")}


@dataclass(frozen=True)
class InputInfo:
    files: int
    columns: list[str] | None  # None: not a local input, not read


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
    columns = head_columns(files[0], spec.input.format, where)
    wanted = list(spec.input.columns or [])
    if spec.output.id_column:
        wanted.append(spec.output.id_column)
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise BadInput(
            f"{where}: the input {files[0]} has no column(s) {', '.join(missing)} "
            f"(it has {', '.join(columns[:20])}{'...' if len(columns) > 20 else ''})"
        )
    return InputInfo(len(files), columns)


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


def head_columns(path: Path, fmt: str, where: str) -> list[str]:
    """The columns of one input file, from at most MAX_HEAD_BYTES of it."""
    if fmt == "parquet":
        return _parquet_columns(path, where)
    try:
        with path.open("rb") as f:
            head = f.read(MAX_HEAD_BYTES)
    except OSError as err:
        raise BadInput(f"{where}: cannot read the input {path}: {err.strerror or err}") from None
    line, newline, _ = head.partition(b"\n")
    if not newline and len(head) == MAX_HEAD_BYTES:
        raise BadInput(f"{where}: the first line of {path} is longer than {MAX_HEAD_BYTES} bytes")
    text = line.decode("utf-8", "replace").strip()
    if fmt == "csv":
        import csv

        return next(csv.reader([text]), [])
    try:
        row = json.loads(text)
    except (ValueError, RecursionError):
        raise BadInput(f"{where}: the first line of {path} is not a JSON object") from None
    if not isinstance(row, dict):
        raise BadInput(f"{where}: the first line of {path} is not a JSON object")
    return [str(k) for k in row]


def _parquet_columns(path: Path, where: str) -> list[str]:
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
    try:
        return list(pq.read_schema(path).names)
    except Exception as err:  # pyarrow raises its own kinds for a broken file
        raise BadInput(f"{where}: cannot read the Parquet schema of {path}: {err}") from None


def check_signature(
    spec: BatchSpec, info: InputInfo, model: str, inputs: list[str] | None, where: str
) -> None:
    """Raise BadInput naming `where` when the columns a run hands the model (the spec's
    `columns`, else every input column but the id) are not the model signature's `inputs`.
    Nothing to check when the input was not read or the model logged no named inputs."""
    if info.columns is None or not inputs:
        return
    given = list(spec.input.columns or [c for c in info.columns if c != spec.output.id_column])
    missing = [c for c in inputs if c not in given]
    extra = [c for c in given if c not in inputs]
    if not missing and not extra:
        return
    parts = []
    if missing:
        parts.append(f"lacks {_names(missing)}")
    if extra:
        parts.append(f"has {_names(extra)} the model does not take (name them in input.columns)")
    raise BadInput(
        f"{where}: the input does not match {model}'s signature: it {'; it '.join(parts)}"
    )


def check_before_run(
    spec: BatchSpec, model: str, input_names: Callable[[str], list[str] | None] | None, where: str
) -> None:
    """The controller's check before it claims a run: when the input is on this machine too,
    that it has the named columns and matches `model`'s signature (BadInput naming `where`
    otherwise: nothing is run). An input this machine cannot see is the job's to read."""
    path = local_path(spec.input.uri)
    if path is None or not path.exists():
        return
    info = check_input(spec, where)
    if input_names is not None:
        check_signature(spec, info, model, input_names(model), where)


def _names(columns: list[str]) -> str:
    shown = ", ".join(repr(c) for c in columns[:10])
    return shown + (f" and {len(columns) - 10} more" if len(columns) > 10 else "")

"""Delayed ground truth: labels that arrive after the fact, joined by request id with the
recorded requests and their answers, give live quality per model version.

Labels are a CSV file (a header row with `request_id` and `label`), JSON Lines of objects with
those keys, or a directory of such files (`*.csv`, `*.jsonl`, `*.json`; not recursive). They
come from whoever can write that path, so they are read within limits (`LabelLimits`: bytes,
rows, line length, files) and a malformed row is an error naming file and line. A request id
seen twice keeps its last label (counted as `duplicates`).

A record is joined on its `request_id` (the client's `X-Request-Id`, recorded by the router)
or else its `id` (the recorder's own: older recordings). Only requests whose answer holds one
prediction are joined: a request of several rows has one id and cannot say which row a label
is for (counted as `multi_row`).

Classification or regression: `task`, or by default classification when every label is a
string (or boolean) or every label and prediction is a whole number, else regression.
Classification gives accuracy, and ROC AUC when the labels are binary (0/1, true/false) and
the answers carry a score (`probability`, `score`, or class probabilities); regression gives
the mean absolute error.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from controller.errors import BadInput
from controller.monitor.columns import FloatArray
from controller.monitor.predictions import MAX_LABEL, record_predictions
from controller.monitor.selection import ReadLimits
from controller.monitor.window import read_window

MIB = 1024 * 1024
Task = Literal["auto", "classification", "regression"]
Label = float | str
SUFFIXES = (".csv", ".jsonl", ".json")
_POSITIVE = {"1", "1.0", "true"}
_NEGATIVE = {"0", "0.0", "false"}


@dataclass(frozen=True)
class LabelLimits:
    max_bytes: int = 256 * MIB  # all files together
    max_rows: int = 1_000_000
    max_line_bytes: int = 64 * 1024
    max_files: int = 1000
    deadline_s: float = 60.0


@dataclass
class Labels:
    by_id: dict[str, Label] = field(default_factory=dict)
    files: int = 0
    duplicates: int = 0


def _label(value: Any, where: str) -> Label:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        if not np.isfinite(value):
            raise BadInput(f"{where}: label is not a finite number")
        return float(value)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            return text[:MAX_LABEL]
        if not np.isfinite(number):
            raise BadInput(f"{where}: label is not a finite number")
        return number
    raise BadInput(f"{where}: 'label' must be a number or a non-empty string")


def _request_id(value: Any, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or len(value) > 128:
        raise BadInput(
            f"{where}: 'request_id' must be a non-empty string of at most 128 characters"
        )
    return value.strip()


def label_files(path: Path, limits: LabelLimits) -> list[Path]:
    """`path` itself, or the label files of the directory it names (sorted by name)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise BadInput(f"{path}: no such labels file or directory")
    files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
    if len(files) > limits.max_files:
        raise BadInput(f"{path}: {len(files)} label files, more than {limits.max_files}")
    if not files:
        raise BadInput(f"{path}: no label files (*.csv, *.jsonl, *.json) in the directory")
    return files


def read_labels(path: Path, limits: LabelLimits = LabelLimits()) -> Labels:
    """Every label under `path`, within `limits`; BadInput at file:line for a malformed row."""
    files = label_files(path, limits)
    total = sum(p.stat().st_size for p in files)
    if total > limits.max_bytes:
        raise BadInput(f"{path}: {total:,} bytes of labels, more than {limits.max_bytes:,}")
    out = Labels(files=len(files))
    deadline = time.monotonic() + limits.deadline_s
    for file in files:
        rows = _jsonl(file, limits) if file.suffix != ".csv" else _csv(file, limits)
        for where, rid, label in rows:
            if rid in out.by_id:
                out.duplicates += 1
            elif len(out.by_id) >= limits.max_rows:
                raise BadInput(f"{where}: more than {limits.max_rows:,} labels")
            out.by_id[rid] = label
            if time.monotonic() > deadline:
                raise BadInput(f"{where}: labels not read within {limits.deadline_s:g}s")
    return out


def _lines(file: Path, limits: LabelLimits) -> Iterator[tuple[int, str]]:
    """The file's lines, numbered, none longer than the limit (never read whole)."""
    with file.open("rb") as f:
        for number, raw in enumerate(iter(lambda: f.readline(limits.max_line_bytes + 1), b""), 1):
            if len(raw) > limits.max_line_bytes and not raw.endswith(b"\n"):
                raise BadInput(f"{file}:{number}: line longer than {limits.max_line_bytes:,} bytes")
            yield number, raw.decode("utf-8", errors="replace")


def _jsonl(file: Path, limits: LabelLimits) -> Iterator[tuple[str, str, Label]]:
    for number, line in _lines(file, limits):
        where = f"{file}:{number}"
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            raise BadInput(f"{where}: not JSON ({err})"[:300]) from None
        except RecursionError:
            raise BadInput(f"{where}: JSON nested too deep") from None
        if not isinstance(row, dict) or "request_id" not in row or "label" not in row:
            raise BadInput(f"{where}: not an object with 'request_id' and 'label'")
        yield where, _request_id(row["request_id"], where), _label(row["label"], where)


def _csv(file: Path, limits: LabelLimits) -> Iterator[tuple[str, str, Label]]:
    header: list[str] | None = None
    for number, line in _lines(file, limits):
        where = f"{file}:{number}"
        try:
            fields = next(csv.reader(io.StringIO(line)), [])
        except csv.Error as err:  # a quoted field across lines, ...
            raise BadInput(f"{where}: {err}") from None
        if not fields:
            continue
        if header is None:
            header = [f.strip().lstrip("\ufeff") for f in fields]
            if "request_id" not in header or "label" not in header:
                raise BadInput(f"{where}: the header row needs 'request_id' and 'label' columns")
            continue
        if len(fields) != len(header):
            raise BadInput(f"{where}: {len(fields)} fields, the header has {len(header)}")
        row = dict(zip(header, fields, strict=True))
        yield where, _request_id(row["request_id"], where), _label(row["label"], where)
    if header is None:
        raise BadInput(f"{file}: empty (a CSV labels file needs a header row)")


@dataclass
class _Version:
    predictions: list[Label] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)


@dataclass
class QualityJoin:
    """Joins each recorded record it is handed with its label (a record hook)."""

    labels: Labels
    versions: dict[str, _Version] = field(default_factory=dict)
    joined_ids: set[str] = field(default_factory=set)
    requests: int = 0  # answered requests read
    multi_row: int = 0  # labelled, but their answer held several predictions
    unanswered: int = 0  # labelled, but no readable prediction

    def __call__(self, record: dict[str, Any]) -> None:
        self.requests += 1
        rid = record.get("request_id")
        rid = rid if isinstance(rid, str) else record.get("id")
        if not isinstance(rid, str) or rid not in self.labels.by_id or rid in self.joined_ids:
            return
        got = record_predictions(record)
        if got is None or not got[0]:
            self.unanswered += 1
            return
        if len(got[0]) != 1:
            self.multi_row += 1
            return
        self.joined_ids.add(rid)
        prediction = got[0][0]
        response = record.get("response")
        version = response.get("version") if isinstance(response, dict) else None
        v = self.versions.setdefault(str(version) if version is not None else "?", _Version())
        v.predictions.append(prediction.value)
        v.labels.append(self.labels.by_id[rid])
        v.scores.append(prediction.score)

    def report(self, task: Task = "auto") -> dict[str, Any]:
        """Quality per version, and the counts of what was and was not joined."""
        per_version = {name: quality(v, task) for name, v in sorted(self.versions.items())}
        return {
            "labels": len(self.labels.by_id),
            "label_files": self.labels.files,
            "duplicate_labels": self.labels.duplicates,
            "requests": self.requests,
            "joined": len(self.joined_ids),
            "unjoined_labels": len(self.labels.by_id) - len(self.joined_ids),
            "multi_row": self.multi_row,
            "unanswered": self.unanswered,
            "versions": per_version,
        }


class _Discard:
    """The join needs whole records, not input columns: their values are dropped."""

    def add(self, name: str, values: FloatArray) -> None:
        pass


def join_labels(
    directory: Path,
    deployment: str,
    start: float,
    end: float,
    labels: Labels,
    limits: ReadLimits | None = None,
) -> QualityJoin:
    """The deployment's requests recorded in [start, end), every version, joined with
    `labels` (the recordings are read as the monitor reads them, within `limits`)."""
    join = QualityJoin(labels)
    read_window(
        directory,
        deployment,
        start,
        end,
        limits=limits or ReadLimits(),
        sink=_Discard(),
        outputs=join,
    )
    return join


def _whole(values: list[Label]) -> bool:
    return all(isinstance(x, float) and x.is_integer() for x in values)


def _key(x: Label) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x).lower()


def quality(v: _Version, task: Task = "auto") -> dict[str, Any]:
    """Accuracy (and ROC AUC) for a classifier, MAE for a regressor, over `v`'s joined rows."""
    n = len(v.labels)
    if task == "auto":
        text = all(isinstance(x, str) for x in v.labels)
        task = (
            "classification"
            if text or (_whole(v.labels) and _whole(v.predictions))
            else "regression"
        )
    if task == "regression":
        pairs = [
            (p, y)
            for p, y in zip(v.predictions, v.labels, strict=True)
            if isinstance(p, float) and isinstance(y, float)
        ]
        mae = float(np.mean([abs(p - y) for p, y in pairs])) if pairs else None
        return {"task": task, "joined": n, "scored": len(pairs), "mae": mae}
    right = sum(_key(p) == _key(y) for p, y in zip(v.predictions, v.labels, strict=True))
    out: dict[str, Any] = {"task": task, "joined": n, "accuracy": right / n if n else None}
    out["roc_auc"] = roc_auc(v.labels, v.scores)
    return out


def roc_auc(labels: list[Label], scores: list[float | None]) -> float | None:
    """ROC AUC (the Mann-Whitney U, ties counted half) when the labels are binary and every
    joined answer carried a score; None otherwise."""
    keys = [_key(y) for y in labels]
    if not keys or any(s is None for s in scores) or not set(keys) <= _POSITIVE | _NEGATIVE:
        return None
    from scipy.stats import rankdata

    positive = np.array([k in _POSITIVE for k in keys])
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    u = float(ranks[positive].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)

"""Reading the router's recordings for one monitoring window, within limits.

Recordings are written by the router from what users sent, so they are untrusted input: a line
longer than `max_line_bytes` is skipped without being held in memory, a line that is not a JSON
object is skipped, and both are counted with the first few named at file:line. The read stops
at `max_rows` input rows, `max_bytes` bytes, `max_files` files or `deadline_s` seconds,
whichever comes first, and says which (`WindowRows.truncated`): a window is then judged on
what was read, never waited for.

Files are `<dir>/<deployment>--*.jsonl` (controller/serving/recorder.py), read oldest first;
files last written before the window began are not opened.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from controller.monitor.features import MAX_COLUMNS, body_rows

MIB = 1024 * 1024
MAX_PROBLEMS = 5  # problems named; the rest only counted
_CHECK_EVERY = 512  # lines between deadline checks
# The start of a line as controller/serving/recorder.py writes it (the id is `<tag>-<n>`).
_TS = re.compile(rb'\{"id":"[A-Za-z0-9_-]{1,64}","ts":(-?[0-9]{1,15}(?:\.[0-9]{1,9})?),')

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ReadLimits:
    max_line_bytes: int = 1 * MIB
    max_rows: int = 200_000
    max_bytes: int = 2048 * MIB
    max_files: int = 1000
    deadline_s: float = 30.0


@dataclass
class WindowRows:
    """Input columns read from recordings, and what the read met on the way."""

    columns: dict[str, FloatArray] = field(default_factory=dict)
    rows: int = 0  # input rows (a request may carry several)
    requests: int = 0  # recorded requests in the window
    missing: dict[str, int] = field(default_factory=dict)  # rows without a number, per column
    skipped_lines: int = 0
    problems: list[str] = field(default_factory=list)
    truncated: str | None = None  # which limit stopped the read
    files: int = 0
    bytes_read: int = 0


RecordFilter = Callable[[dict[str, Any]], bool]


class RowReader:
    """Collects input rows into columns, within limits."""

    def __init__(self, features: Sequence[str] | None, limits: ReadLimits) -> None:
        self.features = set(features) if features else None
        self.limits = limits
        self.out = WindowRows()
        self._values: dict[str, list[float]] = {}
        # dataframe_split columns -> (index and column list of each watched feature, absent ones)
        self._plans: dict[tuple[str, ...], tuple[list[tuple[int, list[float]]], list[str]]] = {}
        self._deadline = time.monotonic() + limits.deadline_s
        self.window: tuple[float, float] | None = None  # [start, end) epoch seconds, if any

    def problem(self, where: str, why: str) -> None:
        self.out.skipped_lines += 1
        if len(self.out.problems) < MAX_PROBLEMS:
            self.out.problems.append(f"{where}: {why}")

    def stop(self, why: str) -> None:
        if self.out.truncated is None:
            self.out.truncated = why

    def read(self, paths: Iterable[Path], accept: RecordFilter) -> WindowRows:
        for path in paths:
            if self.out.truncated is not None:
                break
            if self.out.files >= self.limits.max_files:
                self.stop(f"stopped after {self.limits.max_files} files (max_files)")
                break
            self.out.files += 1
            try:
                self._file(path, accept)
            except OSError as err:
                self.problem(str(path), f"cannot read: {err.strerror or err}")
        return self.finish()

    def finish(self) -> WindowRows:
        out = self.out
        out.columns = {k: np.asarray(v, dtype=np.float64) for k, v in self._values.items()}
        return out

    def _file(self, path: Path, accept: RecordFilter) -> None:
        lim = self.limits
        with path.open("rb") as f:
            number = 0
            while True:
                line = f.readline(lim.max_line_bytes + 1)
                if not line:
                    return
                number += 1
                self.out.bytes_read += len(line)
                if len(line) > lim.max_line_bytes and not line.endswith(b"\n"):
                    self.problem(
                        f"{path}:{number}",
                        f"line longer than {lim.max_line_bytes:,} bytes, skipped",
                    )
                    self._skip_rest(f)
                elif line.strip():
                    self._line(line, f"{path}:{number}", accept)
                if self.out.bytes_read > lim.max_bytes:
                    self.stop(f"stopped after {lim.max_bytes:,} bytes (max_bytes)")
                if number % _CHECK_EVERY == 0 and time.monotonic() > self._deadline:
                    self.stop(f"stopped after {lim.deadline_s:g}s (deadline)")
                if self.out.truncated is not None:
                    return

    def _skip_rest(self, f: Any) -> None:
        """Read past the rest of an over-long line, a chunk at a time (never holding it)."""
        while self.out.bytes_read <= self.limits.max_bytes:
            chunk = f.readline(MIB)
            self.out.bytes_read += len(chunk)
            if not chunk or chunk.endswith(b"\n"):
                return

    def _line(self, line: bytes, where: str, accept: RecordFilter) -> None:
        if self.window is not None:
            # The recorder writes `{"id":"...","ts":<number>,` first: a line outside the
            # window is passed over without decoding it (files span several windows).
            ts = _TS.match(line)
            if ts is not None and not self.window[0] <= float(ts[1]) < self.window[1]:
                return
        try:
            record = json.loads(line)
        except ValueError as err:
            self.problem(where, f"not JSON ({err})"[:200])
            return
        except RecursionError:  # nesting deeper than the decoder's stack
            self.problem(where, "JSON nested too deep")
            return
        if not isinstance(record, dict):
            self.problem(where, "not a JSON object")
            return
        if record.get("kind") == "header" or not accept(record):
            return
        self.out.requests += 1
        body = record.get("body")
        split = body.get("dataframe_split") if isinstance(body, dict) and len(body) == 1 else None
        if self.features is not None and isinstance(split, dict):
            columns, data = split.get("columns"), split.get("data")
            if isinstance(columns, list) and isinstance(data, list):
                self._split(columns, data)
                return
        for row in body_rows(body):
            if not self.add_row(row):
                return

    def _split(self, columns: list[Any], data: list[Any]) -> None:
        """The fast path for `dataframe_split` bodies with watched features: values go straight
        into their columns, no row dictionaries (what `add_row` does, 4x faster)."""
        key = tuple(str(c) for c in columns)
        plan = self._plans.get(key)
        if plan is None:
            assert self.features is not None
            where = {name: i for i, name in enumerate(key)}
            plan = (
                [
                    (where[n], self._values.setdefault(n, []))
                    for n in sorted(self.features)
                    if n in where
                ],
                [n for n in sorted(self.features) if n not in where],
            )
            if len(self._plans) < 64:
                self._plans[key] = plan
        picks, absent = plan
        width, missing, limit = len(key), self.out.missing, self.limits.max_rows
        for row in data:
            if not isinstance(row, list) or len(row) != width:
                continue  # not a row of these columns: as body_rows would, skip it
            if self.out.rows >= limit:
                self.stop(f"stopped at {limit:,} rows (max_rows)")
                return
            self.out.rows += 1
            for i, column in picks:
                v = row[i]
                t = type(v)
                if t is float or t is int:
                    column.append(v)
                else:
                    name = key[i]
                    missing[name] = missing.get(name, 0) + 1
            for name in absent:
                missing[name] = missing.get(name, 0) + 1

    def add_row(self, row: dict[str, float | None]) -> bool:
        """Add one input row; False (and the read marked truncated) at `max_rows`."""
        if self.out.rows >= self.limits.max_rows:
            self.stop(f"stopped at {self.limits.max_rows:,} rows (max_rows)")
            return False
        self.out.rows += 1
        values, missing = self._values, self.out.missing
        for name, v in row.items():
            if self.features is not None and name not in self.features:
                continue
            if v is None:
                missing[name] = missing.get(name, 0) + 1
                continue
            column = values.get(name)
            if column is None:
                if len(values) >= MAX_COLUMNS:
                    continue
                column = values[name] = []
            column.append(v)
        if self.features is not None:
            for name in self.features - row.keys():
                missing[name] = missing.get(name, 0) + 1
        return True


def recording_files(directory: Path, deployment: str, since: float | None = None) -> list[Path]:
    """The deployment's recording files, oldest first; those last written before `since`
    (epoch seconds) are left out: they cannot hold a later record."""
    found: list[tuple[float, str, Path]] = []
    if not directory.is_dir():
        return []
    for p in directory.glob(f"{deployment}--*.jsonl"):
        try:
            st = p.stat()
        except OSError:
            continue
        if since is not None and st.st_mtime < since:
            continue
        found.append((st.st_mtime, p.name, p))
    return [p for _, _, p in sorted(found)]


def read_window(
    directory: Path,
    deployment: str,
    start: float,
    end: float,
    *,
    version: str | None = None,
    features: Sequence[str] | None = None,
    limits: ReadLimits = ReadLimits(),
) -> WindowRows:
    """Input rows of the requests recorded in [start, end) (epoch seconds), answered by
    `version` when given."""

    def accept(record: dict[str, Any]) -> bool:
        ts = record.get("ts")
        if not isinstance(ts, int | float) or not start <= ts < end:
            return False
        if version is None:
            return True
        response = record.get("response")
        answered = response.get("version") if isinstance(response, dict) else None
        return answered is not None and str(answered) == version

    paths = recording_files(directory, deployment, since=start)
    reader = RowReader(features, limits)
    reader.window = (start, end)
    return reader.read(paths, accept)


def read_traffic_file(
    path: Path, *, features: Sequence[str] | None = None, limits: ReadLimits = ReadLimits()
) -> WindowRows:
    """Every input row of one recorded traffic file (a reference)."""
    return RowReader(features, limits).read([path], lambda record: True)

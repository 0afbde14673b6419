"""Feature columns beside each recording file, so the monitor reads numbers, not JSON.

A monitoring window is histograms of input features (controller/monitor/drift.py); read from the
JSON lines, decoding them is most of the monitor's cost. The recorder's writer thread has each
body decoded already, so it also appends the numeric grids of `dataframe_split` bodies to a
sidecar, `<recording>.cols`: segments, each covering a run of consecutive lines of the recording
(their byte range and line numbers) with the run's timestamps, versions, row counts and values
as float64 arrays. The JSON lines stay the record. A line no segment covers is read from the JSON
lines; a sidecar that is missing, cut short or inconsistent is ignored from that point on
(controller/monitor/sidecar.py reads it). A failed sidecar write never fails the recording.

A segment on disk: `MAGIC`, the header's length (uint32, little-endian), the header (JSON:
`offset` and `length` in the recording, first `line`, `requests`, `rows`, `columns`, `versions`,
`ts` [min, max]), then the payload: ts float64[requests], version index
int32[requests] (-1: none), rows uint32[requests], values float64[rows x columns], row-major.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("ray.serve")

MAGIC = b"SOC1"
SUFFIX = ".cols"  # the recording's `.jsonl` replaced
MAX_HEADER = 64 * 1024  # a longer header (long column names) is not written; the reader refuses
MAX_COLUMNS = 4096  # as controller/monitor/features.py: wider is not a tabular model's input
RUN_RECORDS = 4096  # records a segment holds at most
RUN_VALUES = 4 * 1024 * 1024  # and values (32 MiB); a record with more is left to the JSON lines
RUN_AGE_S = 10.0  # a run is written once its first record is this old (the sidecar's lag)
PREFIX = struct.Struct("<4sI")


def sidecar_of(recording: Path) -> Path:
    return recording.with_suffix(SUFFIX)


@dataclass(slots=True)
class Grid:
    """One record's part of the sidecar: a `dataframe_split` grid of numbers, or no body."""

    ts: float
    version: str | None
    columns: tuple[str, ...] | None  # None: the record has no body (no rows, any columns)
    rows: list[list[Any]]


def grid_of(record: dict[str, Any]) -> Grid | None:
    """The record's grid when its body is one the monitor reads as a grid of numbers (ints and
    floats, booleans and nulls not, every row as long as the columns); None otherwise: the
    record is then read from the JSON lines."""
    ts, response = record.get("ts"), record.get("response")
    if type(ts) is not float and type(ts) is not int:
        return None
    answered = response.get("version") if type(response) is dict else None
    version = None if answered is None else str(answered)
    body = record.get("body")
    if body is None:
        return Grid(float(ts), version, None, [])
    if type(body) is not dict or len(body) != 1:
        return None
    split = body.get("dataframe_split")
    if type(split) is not dict:
        return None
    columns, data = split.get("columns"), split.get("data")
    if type(columns) is not list or type(data) is not list or len(columns) > MAX_COLUMNS:
        return None
    for name in columns:
        if type(name) is not str:
            return None
    width = len(columns)
    for row in data:
        if type(row) is not list or len(row) != width:
            return None
        for v in row:
            kind = type(v)  # type(), not isinstance: a bool is an int to isinstance
            if kind is not float and kind is not int:
                return None
    return Grid(float(ts), version, tuple(columns), data)


class ColumnsWriter:
    """Appends the segments of one recording file's sidecar, at most `max_bytes` of them."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._fd: int | None = None
        self._size = 0
        self._broken = False  # a write failed, or the sidecar is full: stop writing it
        self._run: list[Grid] = []
        self._columns: tuple[str, ...] | None = None
        self._values = 0  # values in the run
        self._offset = 0  # the run's first byte in the recording
        self._line = 0  # the run's first line number (1-based)
        self._end = 0  # the byte after the run
        self._started = 0.0  # when the run's first record came (monotonic)

    def add(
        self, offset: int, line: int, lines: Sequence[bytes], grids: Sequence[Grid | None]
    ) -> None:
        """`lines`, appended to the recording at byte `offset` from line number `line` on, with
        each line's grid (None: not covered)."""
        if self._broken:
            return
        if self._run and offset != self._end:  # something in between was not given: end the run
            self._write_run()
        for text, grid in zip(lines, grids, strict=True):
            values = (
                0 if grid is None or grid.columns is None else len(grid.rows) * len(grid.columns)
            )
            if grid is None or values > RUN_VALUES:
                self._write_run()
            else:
                if self._values + values > RUN_VALUES:
                    self._write_run()
                if grid.columns is not None:
                    if self._columns is None:
                        self._columns = grid.columns
                    elif grid.columns != self._columns:
                        self._write_run()
                        self._columns = grid.columns
                if not self._run:
                    self._offset, self._line, self._started = offset, line, time.monotonic()
                    self._end = offset
                self._run.append(grid)
                self._values += values
                self._end += len(text)
                if len(self._run) >= RUN_RECORDS:
                    self._write_run()
            offset += len(text)
            line += 1
        if self._run and time.monotonic() - self._started >= RUN_AGE_S:
            self._write_run()

    def close(self) -> None:
        self._write_run()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _write_run(self) -> None:
        run, columns = self._run, self._columns
        self._run, self._columns, self._values = [], None, 0
        if not run or self._broken:
            return
        try:
            segment = _segment(run, columns or (), self._offset, self._end, self._line)
        except (ValueError, OverflowError):  # a number float64 cannot hold: not covered
            return
        if segment is None or self._size + len(segment) > self.max_bytes:
            self._broken = self._broken or segment is not None  # full: the rest is JSON only
            return
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            view = memoryview(segment)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            self._broken = True
            logger.warning("recorder: feature columns beside %s stopped (write failed)", self.path)
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._size)  # never half a segment
            return
        self._size += len(segment)


def _segment(
    run: list[Grid], columns: tuple[str, ...], offset: int, end: int, line: int
) -> bytes | None:
    versions: dict[str, int] = {}
    ts = np.fromiter((g.ts for g in run), "<f8", len(run))
    index = np.fromiter(
        (-1 if g.version is None else versions.setdefault(g.version, len(versions)) for g in run),
        "<i4",
        len(run),
    )
    counts = np.fromiter((len(g.rows) for g in run), "<u4", len(run))
    total = int(counts.sum())
    values = np.array([row for g in run for row in g.rows], dtype="<f8")
    values = values.reshape(total, len(columns))
    header = json.dumps(
        {
            "offset": offset,
            "length": end - offset,
            "line": line,
            "requests": len(run),
            "rows": total,
            "columns": list(columns),
            "versions": list(versions),
            "ts": [float(ts.min()), float(ts.max())],
        },
        separators=(",", ":"),
    ).encode()
    if len(header) > MAX_HEADER:
        return None
    parts = (ts.tobytes(), index.tobytes(), counts.tobytes(), values.tobytes())
    return b"".join((PREFIX.pack(MAGIC, len(header)), header, *parts))

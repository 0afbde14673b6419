"""Reading a recording's feature-column sidecar (written by controller/serving/columnar.py).

The sidecar is a shortcut, never the record: each segment is checked against the recording
before it is used (it starts and ends on line boundaries inside the file, after the segment
before it; its header and arrays have the sizes it claims, within limits; its indices are in
range). The first segment that fails a check ends the sidecar's use for that file, with the
reason; the reader then takes the rest from the JSON lines (controller/monitor/recordings.py).
The checks catch a torn, cut or corrupt file and bound what a read can cost; they do not stop a
forger, who would need to write the recordings' directory, where the JSON lines are too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import msgspec
import numpy as np
import numpy.typing as npt

from controller.monitor.selection import Selection
from controller.serving.columnar import MAGIC, MAX_COLUMNS, MAX_HEADER, PREFIX, RUN_VALUES

MAX_SEGMENT_REQUESTS = 1_000_000  # the writer's segments hold at most RUN_RECORDS
MAX_SEGMENT_VALUES = 2 * RUN_VALUES  # rows x columns of one segment (64 MiB of float64)


class _Header(msgspec.Struct, forbid_unknown_fields=True):
    offset: int
    length: int
    line: int
    requests: int
    rows: int
    columns: list[str]
    versions: list[str]
    ts: tuple[float, float]


_HEADER = msgspec.json.Decoder(_Header)


class Unusable(Exception):
    """The sidecar cannot be used from here on; the message says why."""


@dataclass(frozen=True)
class Segment:
    """A run of recording lines, checked: bytes [offset, end), lines [line, line + requests)."""

    offset: int
    end: int
    line: int
    requests: int
    rows: int
    columns: tuple[str, ...]
    versions: tuple[str, ...]
    ts_min: float
    ts_max: float
    payload_at: int  # where the arrays start in the sidecar

    @property
    def payload_bytes(self) -> int:
        return self.requests * 16 + self.rows * len(self.columns) * 8


@dataclass(frozen=True)
class Arrays:
    ts: npt.NDArray[np.float64]
    version: npt.NDArray[np.int32]  # index into Segment.versions; -1: none
    rows: npt.NDArray[np.uint32]
    values: npt.NDArray[np.float64]  # rows x columns


def segments(sidecar: BinaryIO, recording: BinaryIO) -> Iterator[Segment]:
    """The sidecar's whole segments in order, each checked against `recording`; raises
    `Unusable` at the first that fails (the ones before it stand). A last segment cut short
    ends the sidecar without a word: a live router may be writing it, or was killed while it
    did; its lines are in the recording."""
    size = os.fstat(sidecar.fileno()).st_size
    recorded = os.fstat(recording.fileno()).st_size
    at, after, next_line = 0, 0, 1  # sidecar position; recording byte and line the last ended at
    while at < size:
        prefix = _read_at(sidecar, at, PREFIX.size)
        if len(prefix) < PREFIX.size:
            return
        magic, length = PREFIX.unpack(prefix)
        if magic != MAGIC:
            raise Unusable(f"no segment at byte {at}")
        if length > MAX_HEADER:
            raise Unusable(f"segment header at byte {at} is {length:,} bytes (> {MAX_HEADER:,})")
        if at + PREFIX.size + length > size:
            return
        try:
            h = _HEADER.decode(_read_at(sidecar, at + PREFIX.size, length))
        except msgspec.DecodeError as err:
            raise Unusable(f"segment header at byte {at}: {err}") from None
        segment = Segment(
            h.offset,
            h.offset + h.length,
            h.line,
            h.requests,
            h.rows,
            tuple(h.columns),
            tuple(h.versions),
            h.ts[0],
            h.ts[1],
            at + PREFIX.size + length,
        )
        if segment.end > recorded:  # the router appended lines since this read began
            recorded = os.fstat(recording.fileno()).st_size
        why = _wrong(segment, after, next_line, recorded)
        if why is None and segment.payload_at + segment.payload_bytes > size:
            return
        if why is None and not _on_line_boundaries(recording, segment):
            why = "not on the recording's line boundaries"
        if why is not None:
            raise Unusable(f"segment at byte {at}: {why}")
        yield segment
        at = segment.payload_at + segment.payload_bytes
        after, next_line = segment.end, segment.line + segment.requests


def _wrong(s: Segment, after: int, next_line: int, recorded: int) -> str | None:
    if s.offset < after or s.line < next_line:
        return "overlaps the segment before it"
    if s.end > recorded or s.end - s.offset < s.requests:
        return "outside the recording"
    if not 0 < s.requests <= MAX_SEGMENT_REQUESTS or s.rows < 0:
        return f"{s.requests} requests, {s.rows} rows"
    if len(s.columns) > MAX_COLUMNS or s.rows * len(s.columns) > MAX_SEGMENT_VALUES:
        return f"{s.rows:,} rows x {len(s.columns):,} columns (too many)"
    if len(s.versions) > s.requests:
        return "more versions than requests"
    return None


def _on_line_boundaries(recording: BinaryIO, s: Segment) -> bool:
    """The byte before the segment and its last byte are newlines (its lines are whole)."""
    if s.offset == 0:
        return False  # the recording's first line is its header, never a record
    return _read_at(recording, s.offset - 1, 1) == b"\n" and _read_at(recording, s.end - 1, 1) == (
        b"\n"
    )


def arrays(sidecar: BinaryIO, s: Segment) -> Arrays:
    """The segment's arrays, checked (rows adding up, version indices in range)."""
    raw = _read_at(sidecar, s.payload_at, s.payload_bytes)
    if len(raw) != s.payload_bytes:
        raise Unusable("cut short")
    n = s.requests
    ts = np.frombuffer(raw, "<f8", n, 0)
    version = np.frombuffer(raw, "<i4", n, 8 * n)
    rows = np.frombuffer(raw, "<u4", n, 12 * n)
    values = np.frombuffer(raw, "<f8", s.rows * len(s.columns), 16 * n)
    if int(rows.sum(dtype=np.uint64)) != s.rows:
        raise Unusable(f"segment at line {s.line}: row counts do not add up to {s.rows}")
    if n and (int(version.min()) < -1 or int(version.max()) >= len(s.versions)):
        raise Unusable(f"segment at line {s.line}: a version index out of range")
    return Arrays(ts, version, rows, values.reshape(s.rows, len(s.columns)))


@dataclass(frozen=True)
class Taken:
    requests: int  # records kept
    values: npt.NDArray[np.float64]  # their rows x the segment's columns


def take(sidecar: BinaryIO, s: Segment, selection: Selection, room: int) -> Taken | None:
    """The records of `s` that `selection` keeps, up to `room` rows (as a line-by-line read
    stops: at the record that fills the room, cut to it); None when none can be (read
    nothing)."""
    window = selection.window
    if window is not None and (s.ts_max < window[0] or s.ts_min >= window[1]):
        return None
    if selection.version is not None and selection.version not in s.versions:
        return None
    got = arrays(sidecar, s)
    keep = None
    if window is not None and not (window[0] <= s.ts_min and s.ts_max < window[1]):
        keep = (got.ts >= window[0]) & (got.ts < window[1])
    if selection.version is not None:
        mine = got.version == s.versions.index(selection.version)
        keep = mine if keep is None else keep & mine
    counts, values = got.rows, got.values
    if keep is not None:
        counts = counts[keep]
        values = values[np.repeat(keep, got.rows)]
    if len(values) > room:
        counts = counts[: int(np.searchsorted(np.cumsum(counts), room)) + 1]
        values = values[: max(room, 0)]
    return Taken(len(counts), values)


def _read_at(f: BinaryIO, at: int, n: int) -> bytes:
    f.seek(at)
    return f.read(n)

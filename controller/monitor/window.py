"""Which recorded requests make a monitoring window: the deployment's recording files that can
hold it, and the records of [start, end) answered by a version, read by `RowReader`
(controller/monitor/recordings.py) within its limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from controller.monitor.columns import ColumnSink, WindowRows
from controller.monitor.recordings import RecordHook, RowReader
from controller.monitor.selection import ReadLimits, Selection

DEFAULT_LIMITS = ReadLimits()


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
    limits: ReadLimits = DEFAULT_LIMITS,
    sink: ColumnSink | None = None,
    outputs: RecordHook | None = None,
) -> WindowRows:
    """Input rows of the requests recorded in [start, end) (epoch seconds), answered by
    `version` when given: as columns, or with a `sink` streamed into it chunk by chunk (the
    columns are then empty); `outputs` sees each of those records whole."""

    paths = recording_files(directory, deployment, since=start)
    reader = RowReader(features, limits, sink, outputs)
    return reader.read(paths, Selection(start, end, version))


def read_traffic_file(
    path: Path,
    *,
    features: Sequence[str] | None = None,
    limits: ReadLimits = DEFAULT_LIMITS,
    outputs: RecordHook | None = None,
) -> WindowRows:
    """Every input row of one recorded traffic file (a reference); `outputs` sees each
    record whole."""
    return RowReader(features, limits, outputs=outputs).read([path])

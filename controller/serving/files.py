"""Recording files: JSON Lines rotated by size, with their feature-column sidecars, and the
deployment's files capped in number and total size across every replica and restart (the
oldest go first). What goes into them is controller/serving/recorder.py's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from controller.serving.columnar import SUFFIX, ColumnsWriter, Grid, sidecar_of

TRAFFIC_FORMAT = "serveops-traffic/v1"  # simulator.traffic.FORMAT


class RotatingFileSink:
    """JSON Lines files that rotate once they reach `max_bytes`. The files matching `family`
    (this deployment's, from every replica and every earlier process) are capped at `keep_files`
    and `max_total_bytes` together: the oldest are deleted when a file is opened. The directory
    is made 0700 and each file 0600; a write that fails (a full disk) is cut back out of the
    file, so a file never holds half a line. With `columns`, each file has a feature-column
    sidecar (controller/serving/columnar.py) of at most `max_bytes`, counted in the total and
    deleted with its file."""

    def __init__(
        self,
        directory: Path,
        prefix: str,
        max_bytes: int,
        keep_files: int,
        *,
        max_total_bytes: int | None = None,
        family: str | None = None,
        columns: bool = False,
    ) -> None:
        self.directory = directory
        self.keeps_columns = columns
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.keep_files = keep_files
        self.max_total_bytes = max_total_bytes
        self.family = family or f"{prefix}-*.jsonl"
        self.header: dict[str, Any] = {"kind": "header", "format": TRAFFIC_FORMAT}
        self._written: list[Path] = []  # this sink's files, oldest first
        self._opened = 0
        self._fd: int | None = None  # the open file, written unbuffered
        self._size = 0
        self._lines = 0  # lines in the open file
        self._columns: ColumnsWriter | None = None

    @property
    def files(self) -> list[str]:
        return [str(p) for p in self._written if p.exists()]

    def _open(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.directory.stat().st_mode & 0o077:  # made by someone else, or before: tighten
            self.directory.chmod(0o700)
        self._opened += 1
        path = self.directory / f"{self.prefix}-{self._opened:04d}.jsonl"
        # Never appends to another's file; never readable by others, whatever the umask.
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._written.append(path)
        self._size = self._lines = 0
        if self.keeps_columns:
            self._columns = ColumnsWriter(sidecar_of(path), self.max_bytes)
        self._append((json.dumps(self.header) + "\n").encode())
        self._lines = 1
        self._trim(path)

    def _trim(self, current: Path) -> None:
        """Delete the family's oldest files beyond `keep_files` or the total size (leaving room
        for the file just opened to fill)."""
        family = []
        for p in self.directory.glob(self.family):
            try:
                st = p.stat()
            except FileNotFoundError:  # another replica deleted it meanwhile
                continue
            try:
                size = st.st_size + sidecar_of(p).stat().st_size
            except FileNotFoundError:  # no sidecar
                size = st.st_size
            family.append((st.st_mtime, p.name, p, size))
        family.sort()
        count, total = len(family), sum(entry[3] for entry in family)
        # Room for the file just opened to fill, and its sidecar.
        room = self.max_bytes * (2 if self.keeps_columns else 1)
        budget = None if self.max_total_bytes is None else self.max_total_bytes - room
        for _, _, path, size in family:
            over = count > self.keep_files or (budget is not None and total > budget)
            if over and path != current:
                path.unlink(missing_ok=True)
                sidecar_of(path).unlink(missing_ok=True)
                count, total = count - 1, total - size
        # Sidecars whose recording is gone (deleted by a router from before sidecars).
        for side in self.directory.glob(self.family.removesuffix(".jsonl") + SUFFIX):
            if not side.with_suffix(".jsonl").exists():
                side.unlink(missing_ok=True)
        self._written = [p for p in self._written if p.exists()]

    def _append(self, data: bytes) -> None:
        """Write `data` whole, or cut the file back to where it was, close it and raise."""
        assert self._fd is not None
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            try:
                os.ftruncate(self._fd, self._size)
            finally:
                self._close_file()
            raise
        self._size += len(data)

    def write(self, lines: list[bytes], grids: Sequence[Grid | None] | None = None) -> None:
        start, pending = 0, 0
        for i, line in enumerate(lines):
            if self._fd is None:
                self._open()
            pending += len(line)
            if self._size + pending >= self.max_bytes:  # the line that crosses the size ends it
                self._append_lines(lines[start : i + 1], grids and grids[start : i + 1])
                start, pending = i + 1, 0
                self._close_file()
        if start < len(lines):
            if self._fd is None:
                self._open()
            self._append_lines(lines[start:], grids and grids[start:])

    def _append_lines(self, lines: list[bytes], grids: Sequence[Grid | None] | None) -> None:
        offset, first = self._size, self._lines + 1
        self._append(b"".join(lines))
        self._lines += len(lines)
        if self._columns is not None and grids:
            self._columns.add(offset, first, lines, grids)

    def _close_file(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        if self._columns is not None:
            columns, self._columns = self._columns, None
            columns.close()

    def close(self) -> None:
        self._close_file()

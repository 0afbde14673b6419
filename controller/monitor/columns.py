"""Input rows into feature columns, within a row limit: what a monitoring read builds.

`ColumnBuilder` takes rows as the router recorded them (a `dataframe_split` body's data, or one
row dictionary at a time) and keeps only the watched features, as float columns. The common
shape, a grid of numbers under a known column list, is kept as decoded and converted to one
array per chunk; anything else (nulls, strings, ragged rows) goes value by value. With a `sink`
the columns are handed over a chunk at a time and forgotten, so memory stays a chunk. Reading
the files those rows come from is `RowReader`'s (controller/monitor/recordings.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from controller.monitor.features import MAX_COLUMNS

MAX_PROBLEMS = 5  # problems named; the rest only counted

FloatArray = npt.NDArray[np.float64]


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


class ColumnSink(Protocol):
    """Where a streaming read puts each chunk of a column's values (drift.WindowCounts)."""

    def add(self, name: str, values: FloatArray) -> None: ...


class ColumnBuilder:
    """Collects input rows into columns, up to `max_rows`."""

    def __init__(
        self, features: Sequence[str] | None, max_rows: int, sink: ColumnSink | None = None
    ) -> None:
        self.features = set(features) if features else None
        self.max_rows = max_rows
        self.out = WindowRows()
        self.sink = sink
        self._values: dict[str, list[float]] = {}
        # dataframe_split columns -> (index and column list of each watched feature, absent ones)
        self._plans: dict[tuple[str, ...], tuple[list[tuple[int, list[float]]], list[str]]] = {}
        # dataframe_split columns -> rows not yet converted (the block path, `_flush_block`)
        self._blocks: dict[tuple[str, ...], list[Any]] = {}
        self._pending = 0  # rows buffered since the last flush

    def problem(self, where: str, why: str) -> None:
        """A line skipped, and why."""
        self.out.skipped_lines += 1
        self.note(where, why)

    def note(self, where: str, why: str) -> None:
        """Something the read met that cost no line (a sidecar it stopped using)."""
        if len(self.out.problems) < MAX_PROBLEMS:
            self.out.problems.append(f"{where}: {why}")

    def grid(self, columns: Sequence[str], values: FloatArray) -> None:
        """Rows already in a float array (rows x `columns`, a recording's feature-column
        sidecar): up to `max_rows`, each watched feature's column straight to the sink."""
        room = self.max_rows - self.out.rows
        if room <= 0 or len(values) > room:
            values = values[: max(room, 0)]
            self.stop(f"stopped at {self.max_rows:,} rows (max_rows)")
        if len(values):
            self.out.rows += len(values)
            self._hand_over(columns, values)

    def _hand_over(self, columns: Sequence[Any], values: FloatArray) -> None:
        """Each watched feature's column of a float grid (rows x `columns`): to the sink, else
        kept; a feature the grid lacks counts its rows as missing."""
        assert self.features is not None
        where = {str(name): i for i, name in enumerate(columns)}
        missing = self.out.missing
        for name in sorted(self.features):
            i = where.get(name)
            if i is None:
                missing[name] = missing.get(name, 0) + values.shape[0]
            elif self.sink is not None:
                self.sink.add(name, values[:, i].copy())  # the sink may keep it
            else:
                self._values.setdefault(name, []).extend(values[:, i].tolist())

    def stop(self, why: str) -> None:
        if self.out.truncated is None:
            self.out.truncated = why

    def finish(self) -> WindowRows:
        self.flush()
        out = self.out
        if self.sink is None:
            out.columns = {k: np.asarray(v, dtype=np.float64) for k, v in self._values.items()}
        return out

    def flush(self) -> None:
        """Convert the buffered rows; with a sink, hand them over and forget them."""
        for key in list(self._blocks):
            self._flush_block(key)
        if self.sink is not None:
            for name, values in self._values.items():
                if values:
                    self.sink.add(name, np.asarray(values, dtype=np.float64))
                    values.clear()
        self._pending = 0

    def _block(self, columns: list[Any], data: list[Any]) -> None:
        """The fast path: rows are kept as the decoder gave them and converted to one array
        per chunk (`_flush_block`), not value by value."""
        limit = self.max_rows
        room = limit - self.out.rows
        if room <= 0:
            self.stop(f"stopped at {limit:,} rows (max_rows)")
            return
        if len(data) > room:
            data = data[:room]
        try:
            key = tuple(columns)
            block = self._blocks.get(key)
        except TypeError:  # a column name that is a list or an object: not hashable
            self._split(columns, data)
            return
        if block is None:
            if len(self._blocks) >= 64:
                self._split(columns, data)
                return
            block = self._blocks[key] = []
        block.extend(data)
        self.out.rows += len(data)
        self._pending += len(data)

    def _flush_block(self, key: tuple[str, ...]) -> None:
        data = self._blocks.pop(key)
        try:
            array = np.array(data)
        except (ValueError, TypeError):  # ragged rows
            array = None
        if (
            array is None
            or array.ndim != 2
            or array.shape[1] != len(key)
            or (array.dtype.kind not in "fiu")
        ):
            # Not a grid of numbers (nulls, strings, short rows): row by row, as body_rows.
            self.out.rows -= len(data)
            self._split(list(key), data)
            return
        self._hand_over(key, array.astype(np.float64, copy=False))

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
        width, missing, limit = len(key), self.out.missing, self.max_rows
        for row in data:
            if not isinstance(row, list) or len(row) != width:
                continue  # not a row of these columns: as body_rows would, skip it
            if self.out.rows >= limit:
                self.stop(f"stopped at {limit:,} rows (max_rows)")
                return
            self.out.rows += 1
            self._pending += 1
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
        if self.out.rows >= self.max_rows:
            self.stop(f"stopped at {self.max_rows:,} rows (max_rows)")
            return False
        self.out.rows += 1
        self._pending += 1
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

"""Reading the router's recordings for one monitoring window, within limits.

Recordings are written by the router from what users sent, so they are untrusted input: a line
longer than `max_line_bytes` is skipped without being held in memory, a line that is not a JSON
object is skipped, and both are counted with the first few named at file:line. The read stops
at `max_rows` input rows, `max_bytes` bytes, `max_files` files or `deadline_s` seconds,
whichever comes first, and says which (`WindowRows.truncated`): a window is then judged on
what was read, never waited for.

Files are `<dir>/<deployment>--*.jsonl` (controller/serving/recorder.py), read oldest first;
files last written before the window began are not opened (which files and records make a
window: controller/monitor/window.py). A streaming read takes what a file's feature-column
sidecar covers from there (controller/monitor/sidecar.py: arrays, no JSON) and the lines it
does not cover from the file. Files are read a block at a time.
A streaming block is first decoded whole against the router's record shape (msgspec, typed:
only `kind`, `ts`, the response's version and a `dataframe_split` body are built, the rest is
skipped), one call per block instead of one per line: the monitor's common case. A block that
does not fit that shape (another body format, nulls, a bad line) is read again line by line,
untyped, where each problem is named at file:line; `json` is the last resort for what msgspec
refuses but Python's decoder takes (NaN). With a `sink`, values are handed over in chunks of
`CHUNK_ROWS` rows and not kept: the reader's memory is a chunk, whatever the window's size.
"""

from __future__ import annotations

import gc
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from controller.monitor import sidecar
from controller.monitor.columns import ColumnBuilder, ColumnSink, WindowRows
from controller.monitor.features import body_rows
from controller.monitor.selection import MIB, ReadLimits, Selection
from controller.serving.columnar import sidecar_of

BLOCK = MIB  # bytes read at a time
_CHECK_EVERY = 512  # lines between deadline checks
CHUNK_ROWS = 16_384  # rows buffered before they go to the sink
# The start of a line as controller/serving/recorder.py writes it (the id is `<tag>-<n>`).
_TS = re.compile(rb'\{"id":"[A-Za-z0-9_-]{1,64}","ts":(-?[0-9]{1,15}(?:\.[0-9]{1,9})?),')


# The router's record, as much of it as a streaming read needs (controller/serving/recorder.py
# writes it); a block whose lines do not all fit is read line by line instead.
class _Split(msgspec.Struct):
    columns: list[str]
    data: list[list[float]]  # ints are taken as floats; booleans, nulls and NaN do not fit


class _Body(msgspec.Struct, forbid_unknown_fields=True):  # the only key, as body_rows reads it
    dataframe_split: _Split


class _Response(msgspec.Struct):
    version: str | int | None = None


class _Record(msgspec.Struct):
    kind: str | None = None
    ts: float | None = None
    body: _Body | None = None
    response: _Response | None = None


_RECORDS = msgspec.json.Decoder(_Record)
_ANY = msgspec.json.Decoder()


# Sees each accepted record whole (the predictions' reader, the labels' join).
RecordHook = Callable[[dict[str, Any]], None]


class RowReader(ColumnBuilder):
    """Reads recording files into columns, within limits."""

    def __init__(
        self,
        features: Sequence[str] | None,
        limits: ReadLimits,
        sink: ColumnSink | None = None,
        outputs: RecordHook | None = None,
    ) -> None:
        super().__init__(features, limits.max_rows, sink)
        self.outputs = outputs
        self.limits = limits
        self._deadline = time.monotonic() + limits.deadline_s
        self.selection = Selection()

    def read(self, paths: Iterable[Path], selection: Selection | None = None) -> WindowRows:
        """The rows of the records `selection` keeps (all records by default)."""
        self.selection = selection or Selection()
        # The cyclic collector is paused while decoding: records are trees (no cycles to find),
        # and a pass per 700 new containers cost a fifth of the read. Bounded by the deadline.
        paused = gc.isenabled()
        gc.disable()
        try:
            self._read(paths)
        finally:
            if paused:
                gc.enable()
        return self.finish()

    def _read(self, paths: Iterable[Path]) -> None:
        for path in paths:
            if self.out.truncated is not None:
                break
            if self.out.files >= self.limits.max_files:
                self.stop(f"stopped after {self.limits.max_files} files (max_files)")
                break
            self.out.files += 1
            try:
                self._file(path)
            except OSError as err:
                self.problem(str(path), f"cannot read: {err.strerror or err}")

    def _file(self, path: Path) -> None:
        with path.open("rb") as f:
            at, number = 0, 0  # where the lines not read yet start: byte, lines before
            if self._columns_only:
                at, number = self._columnar(f, path)
            if self.out.truncated is None:
                self._lines(f, path, at, number, None)

    @property
    def _columns_only(self) -> bool:
        """Streaming feature columns, no record needed whole: what the typed block decode and
        the feature-column sidecar can give."""
        return self.sink is not None and self.features is not None and self.outputs is None

    def _lines(self, f: BinaryIO, path: Path, at: int, number: int, end: int | None) -> None:
        """Read the recording's lines from byte `at` (after line `number`) to byte `end`."""
        f.seek(at)
        for first, lines in self._blocks_of(f, path, number, end):
            self._batch(first, lines, path)
            if self.sink is not None and self._pending >= CHUNK_ROWS:
                self.flush()
            self._check_limits()
            if self.out.truncated is not None:
                return

    def _check_limits(self) -> None:
        lim = self.limits
        if self.out.bytes_read > lim.max_bytes:
            self.stop(f"stopped after {lim.max_bytes:,} bytes (max_bytes)")
        if time.monotonic() > self._deadline:
            self.stop(f"stopped after {lim.deadline_s:g}s (deadline)")

    def _columnar(self, f: BinaryIO, path: Path) -> tuple[int, int]:
        """Read what the recording's feature-column sidecar covers, and the lines between its
        segments; where the lines not read yet start (the sidecar's end, or where it stopped
        being usable)."""
        at, number = 0, 0
        try:
            side = sidecar_of(path).open("rb")
        except OSError:  # none (an older router, another writer): the JSON lines
            return at, number
        with side:
            try:
                for segment in sidecar.segments(side, f):
                    if segment.offset > at:  # lines no segment covers
                        self._lines(f, path, at, number, segment.offset)
                        at, number = segment.offset, segment.line - 1
                        if self.out.truncated is not None:
                            break
                    self._segment(side, segment)
                    at, number = segment.end, segment.line + segment.requests - 1
                    self._check_limits()
                    if self.out.truncated is not None:
                        break
            except sidecar.Unusable as err:
                self.note(f"{side.name}", f"{err}; read from the JSON lines from line {number + 1}")
        return at, number

    def _segment(self, side: BinaryIO, s: sidecar.Segment) -> None:
        """The rows of a segment's records that the selection keeps, within `max_rows`."""
        taken = sidecar.take(side, s, self.selection, self.limits.max_rows - self.out.rows)
        if taken is not None:
            self.out.bytes_read += s.payload_bytes
            self.out.requests += taken.requests
            self.grid(s.columns, taken.values)

    def _blocks_of(
        self, f: BinaryIO, path: Path, number: int = 0, end: int | None = None
    ) -> Iterator[tuple[int, list[bytes]]]:
        """The file's lines from where `f` is (after line `number`) to byte `end` (the end of
        the file by default), without their newline, a block (`BLOCK` bytes) at a time, with
        the number of the block's first line. A line longer than `max_line_bytes` is counted as
        a problem, dropped as it is read (never held) and left as b"" so numbers stay right:
        the memory is a block and at most one line."""
        lim = self.limits.max_line_bytes
        tail, skipping = b"", False  # `number`: lines before the next one
        left = -1 if end is None else end - f.tell()  # bytes to read, when bounded
        while True:
            # Never past max_bytes (and one byte, to know it was passed).
            size = max(min(BLOCK, self.limits.max_bytes + 1 - self.out.bytes_read), 0)
            if left >= 0:
                size = min(size, left)
            block = f.read(size) if size else b""
            if not block:
                break
            if left >= 0:
                left -= len(block)
            self.out.bytes_read += len(block)
            pieces = block.split(b"\n")
            last = pieces.pop()  # the start of a line a later block ends
            if pieces:
                if skipping:  # the end of an over-long line, already counted
                    pieces[0], skipping = b"", False
                    number -= 1
                else:
                    pieces[0], tail = tail + pieces[0], b""
                if len(block) + len(pieces[0]) > lim:  # else no line here can be over the limit
                    for i, piece in enumerate(pieces):
                        if len(piece) > lim:
                            self.problem(
                                f"{path}:{number + i + 1}",
                                f"line longer than {lim:,} bytes, skipped",
                            )
                            pieces[i] = b""
                yield number + 1, pieces
                number += len(pieces)
            if skipping:  # the whole block is inside an over-long line
                continue
            tail += last
            if len(tail) > lim:
                number += 1
                self.problem(f"{path}:{number}", f"line longer than {lim:,} bytes, skipped")
                tail, skipping = b"", True
        if tail and not skipping and self.out.bytes_read <= self.limits.max_bytes:
            yield number + 1, [tail]

    def _batch(self, first: int, lines: list[bytes], path: Path) -> None:
        """The records of a block's lines: the whole block at once when it has the router's
        shape (`_typed`), else one loop with the per-line work inline."""
        window, ts_match, outputs = self.selection.window, _TS.match, self.outputs
        accept = self.selection.accepts
        streaming = self.sink is not None and self.features is not None
        blocks, max_rows = self._blocks, self.limits.max_rows
        # Lines are written in time order, give or take a request's latency: when the block's
        # first and last lines are both inside the window, its lines are decoded without
        # looking at `ts` first (`accept` still checks each record's).
        sift = window is not None and not self._inside(lines)
        if self._columns_only and self._typed(lines, sift):
            return
        # Booleans are not numbers, and an array would take them for 1 and 0: one search per
        # block says whether any line needs looking at for them.
        clean = not any(b"true" in line or b"false" in line for line in lines)
        for i, line in enumerate(lines):
            number = first + i
            if number % _CHECK_EVERY == 1 and number > 1 and time.monotonic() > self._deadline:
                self.stop(f"stopped after {self.limits.deadline_s:g}s (deadline)")
                return
            if not line:
                continue
            if sift:
                assert window is not None
                # The recorder writes `{"id":"...","ts":<number>,` first: a line outside the
                # window is passed over without decoding it (files span several windows).
                ts = ts_match(line)
                if ts is not None and not window[0] <= float(ts[1]) < window[1]:
                    continue
            try:
                record = _ANY.decode(line)
            except (msgspec.DecodeError, RecursionError):
                record = self._decode_slowly(line, f"{path}:{number}")
                if record is None:
                    continue
            if type(record) is not dict:
                self.problem(f"{path}:{number}", "not a JSON object")
                continue
            if record.get("kind") == "header" or not accept(record):
                continue
            self.out.requests += 1
            if outputs is not None:
                outputs(record)
            body = record.get("body")
            split = body.get("dataframe_split") if type(body) is dict and len(body) == 1 else None
            if self.features is not None and type(split) is dict:
                columns, data = split.get("columns"), split.get("data")
                if type(columns) is list and type(data) is list:
                    # Streaming, rows go to the sink a block at a time; booleans are not
                    # numbers, and an array would take them for 1 and 0: row by row.
                    if streaming and (clean or (b"true" not in line and b"false" not in line)):
                        # `_block`'s common case inline: a known column list, room for the rows
                        try:
                            block = blocks.get(tuple(columns))
                        except TypeError:  # a column name that is a list or an object
                            block = None
                        if block is not None and self.out.rows + len(data) <= max_rows:
                            block.extend(data)
                            self.out.rows += len(data)
                            self._pending += len(data)
                        else:
                            self._block(columns, data)
                    else:
                        self._split(columns, data)
                    if self.out.truncated is not None:
                        return
                    continue
            for row in body_rows(body):
                if not self.add_row(row):
                    return

    def _typed(self, lines: list[bytes], sift: bool) -> bool:
        """Decode the block in one call against the router's record shape and stream its rows;
        False, having taken nothing, when any line does not fit (the caller then reads it line
        by line and names each problem)."""
        window = self.selection.window
        if sift:
            assert window is not None
            start, end, ts_match = window[0], window[1], _TS.match
            kept = []
            for line in lines:
                stamp = ts_match(line)
                if stamp is None or start <= float(stamp[1]) < end:
                    kept.append(line)
            lines = kept
        try:
            records = _RECORDS.decode_lines(b"\n".join(lines))
        except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
            return False
        version, max_rows, out, blocks = (
            self.selection.version,
            self.limits.max_rows,
            self.out,
            self._blocks,
        )
        start, end = window if window is not None else (0.0, 0.0)
        for record in records:
            if record.kind == "header":
                continue
            if window is not None:
                ts = record.ts
                if ts is None or not start <= ts < end:
                    continue
            if version is not None:
                response = record.response
                answered = None if response is None else response.version
                if answered != version and (answered is None or str(answered) != version):
                    continue
            out.requests += 1
            body = record.body
            if body is None:
                continue
            split = body.dataframe_split
            data = split.data
            block = blocks.get(tuple(split.columns))
            if block is not None and out.rows + len(data) <= max_rows:
                block.extend(data)
                out.rows += len(data)
                self._pending += len(data)
            else:
                self._block(split.columns, data)
                if out.truncated is not None:
                    break
        return True

    def _inside(self, lines: list[bytes]) -> bool:
        window = self.selection.window
        assert window is not None
        start, end = window
        ends = [line for line in (lines[0], lines[-1]) if line]
        for line in ends:
            ts = _TS.match(line)
            if ts is None or not start <= float(ts[1]) < end:
                return False
        return len(ends) == 2

    def _decode_slowly(self, line: bytes, where: str) -> Any:
        """What msgspec refused: NaN and Infinity (Python's json, which may have written the
        line, takes them), blank lines, or a problem; None when there is no record."""
        if not line.strip():
            return None
        try:
            return json.loads(line)
        except ValueError as err:
            self.problem(where, f"not JSON ({err})"[:200])
        except RecursionError:  # nesting deeper than the decoder's stack
            self.problem(where, "JSON nested too deep")
        return None

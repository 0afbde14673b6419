"""The feature-column sidecar: what the router's writer thread appends beside each recording
(controller/serving/columnar.py), and the monitor's read of it (controller/monitor/sidecar.py).
A window read through the sidecar must give what the JSON lines give; a sidecar that lies, is
cut short or is garbage must be named and the JSON lines read instead. Real files in a temp
dir, the real sink and reader; no Ray."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from controller.monitor import sidecar
from controller.monitor.drift import ReferenceProfile, WindowCounts
from controller.monitor.selection import ReadLimits
from controller.monitor.window import read_window
from controller.serving import columnar
from controller.serving.columnar import MAGIC, PREFIX, SUFFIX, grid_of, sidecar_of
from controller.serving.recorder import Exchange, Recorder, RotatingFileSink
from tests.monitor_support import FEATURES, sample

T0 = 1_772_366_400.0
NAMES = list(FEATURES)


def record(i: int, body: Any, version: str | int | None = "1") -> dict[str, Any]:
    response: dict[str, Any] = {"status": 200, "latency_ms": 1.0}
    if version is not None:
        response["version"] = version
    return {"id": f"t-{i}", "ts": T0 + i, "route": "/fraud", "method": "POST", "headers": {},
            "body": body, "response": response}  # fmt: skip


def split(columns: list[Any], data: list[Any]) -> dict[str, Any]:
    return {"dataframe_split": {"columns": columns, "data": data}}


def mixed_records(n: int = 3000) -> list[dict[str, Any]]:
    """The router's records with every shape the sidecar must either hold or leave out: grids
    of 1 to 3 rows, two versions (one written as a number), another column list, bodies with
    nulls, booleans, strings, short rows, another format, no body, no version."""
    rows = sample(3 * n, 7).tolist()
    out = []
    for i in range(n):
        body: Any = split(NAMES, rows[3 * i : 3 * i + 1 + i % 3])
        version: str | int | None = "1" if i % 2 else 2
        if i % 53 == 0:
            body = split(NAMES, [[None, 1.0, 2.0, 3.0, 4.0]])
        elif i % 59 == 0:
            body = split(NAMES, [[True, 1.0, 2.0, 3.0, 4.0]])
        elif i % 61 == 0:
            body = split(NAMES, [["7", 1.0, 2.0, 3.0, 4.0], [1.0]])
        elif i % 67 == 0:
            body = {"inputs": [[1.0, 2.0]]}
        elif i % 71 == 0:
            body = None
        elif i % 73 == 0:
            version = None
        elif 1000 <= i < 1200:
            body = split(["f0", "f1", "other"], [[1.0, 2, 3.5]])
        out.append(record(i, body, version))
    return out


def write(directory: Path, records: list[dict[str, Any]], *, max_bytes: int = 150_000) -> None:
    """Through the router's sink, in the writer thread's batches, rotating files."""
    sink = RotatingFileSink(
        directory, "fraud--x-t", max_bytes=max_bytes, keep_files=1000, columns=True
    )
    for at in range(0, len(records), 97):
        batch = records[at : at + 97]
        lines = [(json.dumps(r, separators=(",", ":")) + "\n").encode() for r in batch]
        sink.write(lines, [grid_of(r) for r in batch])
    sink.close()


def profile() -> ReferenceProfile:
    ref = sample(4000, 0)
    return ReferenceProfile.build(
        {name: ref[:, i] for i, name in enumerate(FEATURES)}, features=None, bins=10, source="t"
    )


def window(directory: Path, *, version: str | None = None, start: float = T0,
           end: float = T0 + 10**6, max_rows: int = 10**6) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """A streamed read: what it counted, and each feature's histograms."""
    counts = WindowCounts(profile())
    got = read_window(directory, "fraud", start, end, version=version, features=NAMES,
                      limits=ReadLimits(max_rows=max_rows), sink=counts)  # fmt: skip
    hist = {
        name: (c.bins.tolist(), c.grid.tolist(), c.rows, c.low, c.high, round(c.total, 6))
        for name, c in counts.features.items()
    }
    return got, hist


def without_sidecars(directory: Path) -> None:
    for p in directory.glob(f"*{SUFFIX}"):
        p.rename(p.with_suffix(".off"))


def same_read(a: tuple[Any, dict[str, Any]], b: tuple[Any, dict[str, Any]]) -> None:
    (got_a, hist_a), (got_b, hist_b) = a, b
    assert (got_a.rows, got_a.requests, got_a.missing, got_a.truncated) == (
        got_b.rows,
        got_b.requests,
        got_b.missing,
        got_b.truncated,
    )
    assert hist_a == hist_b


@pytest.mark.parametrize(
    ("version", "start", "end"),
    [
        (None, T0, T0 + 10**6),
        ("1", T0, T0 + 10**6),
        ("2", T0 + 500.5, T0 + 2500),
        ("9", T0, T0 + 1e6),
    ],
)
def test_a_window_read_through_the_feature_columns_gives_what_the_json_lines_give(
    tmp_path: Path, version: str | None, start: float, end: float
) -> None:
    write(tmp_path, mixed_records())
    assert len(list(tmp_path.glob(f"*{SUFFIX}"))) > 3  # rotated: several files, each a sidecar
    columnar_read = window(tmp_path, version=version, start=start, end=end)
    without_sidecars(tmp_path)
    lines_read = window(tmp_path, version=version, start=start, end=end)
    same_read(columnar_read, lines_read)
    assert columnar_read[0].problems == lines_read[0].problems == []
    if version != "9":
        assert columnar_read[0].rows > 1000
        # Most records came from the sidecar: far fewer bytes than the JSON lines.
        assert columnar_read[0].bytes_read < lines_read[0].bytes_read / 2


def test_max_rows_stops_a_columnar_read_where_a_line_read_stops(tmp_path: Path) -> None:
    write(tmp_path, mixed_records(600))
    columnar_read = window(tmp_path, max_rows=333)
    without_sidecars(tmp_path)
    lines_read = window(tmp_path, max_rows=333)
    # 333 taken; a short row among them is dropped when its block turns out not to be a grid.
    assert 320 < columnar_read[0].rows <= 333
    assert columnar_read[0].truncated == "stopped at 333 rows (max_rows)"
    same_read(columnar_read, lines_read)


def test_records_the_monitor_reads_otherwise_are_left_out_of_the_grid() -> None:
    assert grid_of(record(1, split(NAMES, [[1, 2.5, 3, 4, 5]]))) is not None
    assert grid_of(record(1, None)) is not None  # no body: a record of no rows
    for body in (
        split(NAMES, [[True, 2.5, 3, 4, 5]]),  # a boolean is not a number here
        split(NAMES, [[None, 2.5, 3, 4, 5]]),
        split(NAMES, [["1", 2.5, 3, 4, 5]]),
        split(NAMES, [[1, 2]]),  # short
        split([1, 2], [[1, 2]]),  # a column name that is not a string
        {"dataframe_split": {"columns": NAMES, "data": [[1, 2, 3, 4, 5]]}, "params": {}},
        {"instances": [[1, 2]]},
        "text",
    ):
        assert grid_of(record(1, body)) is None, body


def first_segment(data: bytes) -> tuple[dict[str, Any], int, int]:
    """A sidecar's first segment, read by the format's own rules: its header, where its arrays
    start, where the second segment starts."""
    length = PREFIX.unpack_from(data)[1]
    header = json.loads(bytes(data[PREFIX.size : PREFIX.size + length]))
    payload = PREFIX.size + length
    second = payload + header["requests"] * 16 + header["rows"] * len(header["columns"]) * 8
    return header, payload, second


def corrupt_first_sidecar(directory: Path, how: str) -> Path:
    path = sorted(directory.glob(f"*{SUFFIX}"))[0]
    data = bytearray(path.read_bytes())
    header, payload, second = first_segment(data)

    def with_header(**changes: Any) -> bytearray:
        new = json.dumps({**header, **changes}).encode()
        return bytearray(PREFIX.pack(MAGIC, len(new)) + new) + data[payload:]

    if how == "garbage":
        data[second : second + 8] = b"\x00garbage"
    elif how == "huge header":
        data[second : second + PREFIX.size] = PREFIX.pack(MAGIC, 2**31)
    elif how == "beyond the file":
        data = with_header(length=header["length"] + 10**9)
    elif how == "off a line boundary":
        data = with_header(offset=header["offset"] + 3, length=header["length"] - 3)
    elif how == "rows a billion":
        data = with_header(rows=10**9)
    elif how == "unknown field":
        data = with_header(extra=1)
    elif how == "version index":
        n = header["requests"]
        data[payload + 8 * n : payload + 8 * n + 4] = struct.pack("<i", 99)
    elif how == "row counts":
        n = header["requests"]
        data[payload + 12 * n : payload + 12 * n + 4] = struct.pack("<I", 7)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    "how",
    [
        "garbage",
        "huge header",
        "beyond the file",
        "off a line boundary",
        "rows a billion",
        "unknown field",
        "version index",
        "row counts",
    ],
)
def test_a_broken_sidecar_is_named_and_its_recording_read_from_the_json_lines(
    tmp_path: Path, how: str
) -> None:
    write(tmp_path, mixed_records(1500))
    broken = corrupt_first_sidecar(tmp_path, how)
    got, hist = window(tmp_path)
    assert any(p.startswith(str(broken)) for p in got.problems), got.problems
    assert got.skipped_lines == 0  # no line was lost: the sidecar is only a shortcut
    without_sidecars(tmp_path)
    same_read((got, hist), window(tmp_path))


@pytest.mark.parametrize("keep", [3, 40, 300])
def test_a_sidecar_cut_short_in_its_last_segment_ends_there_without_a_problem(
    tmp_path: Path, keep: int
) -> None:
    """A live router writing its next segment, or one killed while it did: the segments before
    stand, the rest of the file is read from the JSON lines, and nothing is wrong."""
    write(tmp_path, mixed_records(1500))
    path = sorted(tmp_path.glob(f"*{SUFFIX}"))[0]
    data = path.read_bytes()
    second = first_segment(data)[2]
    path.write_bytes(data[: second + keep])  # into the second segment's prefix, header, arrays
    got, hist = window(tmp_path)
    assert got.problems == []
    without_sidecars(tmp_path)
    same_read((got, hist), window(tmp_path))


def test_the_sidecar_goes_with_its_recording_and_counts_in_the_total(tmp_path: Path) -> None:
    records = mixed_records(2000)
    sink = RotatingFileSink(
        tmp_path, "fraud--x-t", max_bytes=60_000, keep_files=100, max_total_bytes=400_000,
        family="fraud--*.jsonl", columns=True,
    )  # fmt: skip
    for at in range(0, len(records), 50):
        batch = records[at : at + 50]
        sink.write([(json.dumps(r) + "\n").encode() for r in batch], [grid_of(r) for r in batch])
    sink.close()
    orphan = tmp_path / f"fraud--old-router-0001{SUFFIX}"  # its recording deleted elsewhere
    orphan.write_bytes(b"x")
    for record_ in records[:60]:  # a file opened after it: the trim runs
        sink.write([(json.dumps(record_) + "\n").encode()] * 20, [grid_of(record_)] * 20)
    sink.close()
    assert not orphan.exists()
    recordings = sorted(tmp_path.glob("*.jsonl"))
    sidecars = sorted(tmp_path.glob(f"*{SUFFIX}"))
    assert [sidecar_of(p) for p in recordings] == sidecars  # none left without its recording
    assert sum(p.stat().st_size for p in recordings + sidecars) <= 400_000
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in sidecars)


def test_a_failed_sidecar_write_leaves_the_recording_whole_and_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write, calls = os.write, {"n": 0}

    def failing(fd: int, data: Any) -> int:
        if bytes(data[:4]) == MAGIC:  # a segment: the third one fails half-way
            calls["n"] += 1
            if calls["n"] == 3:
                real_write(fd, bytes(data[:100]))
                raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(columnar.os, "write", failing)
    write(tmp_path, mixed_records(2000), max_bytes=10**7)
    monkeypatch.undo()
    assert calls["n"] == 3  # the sidecar stopped at the failure
    got = window(tmp_path)
    assert got[0].problems == []  # cut back to whole segments: nothing to name
    without_sidecars(tmp_path)
    same_read(got, window(tmp_path))


def test_a_sidecar_is_never_read_where_records_are_needed_whole(tmp_path: Path) -> None:
    """The predictions' and labels' readers see each record: the JSON lines."""
    write(tmp_path, mixed_records(400))
    seen: list[str] = []
    read_window(tmp_path, "fraud", T0, T0 + 10**6, features=NAMES, sink=WindowCounts(profile()),
                outputs=lambda rec: seen.append(rec["id"]))  # fmt: skip
    assert len(seen) == 400


def test_the_router_s_recorder_writes_lines_and_columns_the_monitor_reads_alike(
    tmp_path: Path,
) -> None:
    """Through `Recorder.write_batch`, what the writer thread does: UTF-8 column names (the
    sidecar's byte offsets must count bytes), NaN (written by json, which reads it back), a body
    nested past any decoder's stack (kept as text: the batch is not lost)."""
    sink = RotatingFileSink(tmp_path, "fraud--x-r", max_bytes=40_000, keep_files=100, columns=True)
    recorder = Recorder(sink, tag="r")
    columns = ["f0", "f1", "f2", "f3", "f4", "prix €"]
    rows = sample(900, 3).tolist()

    def ex(i: int) -> Exchange:
        data: Any = [[*rows[i], float(i % 5)]]
        if i % 41 == 0:
            data = [[float("nan"), *rows[i][1:], 1.0]]
        body = json.dumps({"dataframe_split": {"columns": columns, "data": data}}).encode()
        if i % 97 == 0:
            body = b"[" * 100_000 + b"]" * 100_000
        return Exchange(T0 + i, "POST", "/fraud", [], body, 200, b"[0]", 1.0, "1")

    try:
        for at in range(0, 900, 64):
            recorder.write_batch([ex(i) for i in range(at, min(at + 64, 900))])
    finally:
        recorder.close()
    sink.close()
    assert recorder.stats().recorded == 900
    lines = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("*.jsonl")))
    assert "prix €".encode() in lines  # UTF-8, not escaped
    assert b'"data":[[NaN,' in lines
    assert len(list(tmp_path.glob(f"*{SUFFIX}"))) > 1
    columnar_read = window(tmp_path)
    without_sidecars(tmp_path)
    lines_read = window(tmp_path)
    same_read(columnar_read, lines_read)
    assert columnar_read[0].requests == 900
    assert columnar_read[0].rows == 900 - 10  # ten bodies kept as text: no rows
    rows_f0, rows_f1 = columnar_read[1]["f0"][2], columnar_read[1]["f1"][2]
    assert rows_f1 - rows_f0 == 21  # NaN is no number for a histogram (i = 0 is text)


def test_segments_are_bounded_in_values_and_a_larger_record_is_left_to_the_json_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(columnar, "RUN_VALUES", 10)  # two rows of five a segment; three: none
    write(tmp_path, mixed_records(600))
    segments = []
    for path in tmp_path.glob(f"*{SUFFIX}"):
        with path.open("rb") as side, path.with_suffix(".jsonl").open("rb") as rec:
            segments += list(sidecar.segments(side, rec))
    assert segments
    assert max(s.rows * len(s.columns) for s in segments) <= 10
    columnar_read = window(tmp_path)
    without_sidecars(tmp_path)
    same_read(columnar_read, window(tmp_path))

"""The streaming window: histograms on the reference's fixed bins, filled chunk by chunk by the
block reader, judged like the columns they stand for; memory that does not grow with the rows;
KS from binned CDFs against SciPy's; JS, missing and out-of-range shares."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from controller.monitor import recordings
from controller.monitor.drift import KS_GRID, ReferenceProfile, WindowCounts, judge_window
from controller.monitor.selection import ReadLimits
from controller.monitor.window import read_window
from controller.spec.monitoring import DriftTests
from tests.monitor_support import FEATURES, sample, write_recording

T0 = 1_772_366_400.0


def profile(n: int = 5000) -> ReferenceProfile:
    ref = sample(n, 0)
    return ReferenceProfile.build(
        {name: ref[:, i] for i, name in enumerate(FEATURES)}, features=None, bins=10, source="t"
    )


def streamed(tmp_path: Path, prof: ReferenceProfile, **kw: object) -> tuple[WindowCounts, int]:
    counts = WindowCounts(prof)
    got = read_window(tmp_path, "fraud", T0 - 100, T0, features=list(FEATURES), sink=counts, **kw)  # type: ignore[arg-type]
    for name, n in got.missing.items():
        counts.add_missing(name, n)
    assert got.columns == {}  # nothing held: the values went to the histograms
    return counts, got.rows


def test_streamed_histograms_equal_those_of_the_columns_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recordings, "CHUNK_ROWS", 64)  # many chunks
    monkeypatch.setattr(recordings, "BLOCK", 4096)  # many blocks, lines cut across them
    path = write_recording(tmp_path, "fraud", sample(900, 1), T0 - 100, T0 - 10, per_request=3)
    odd = [
        {
            "id": "o-1",
            "ts": T0 - 5,
            "body": {
                "dataframe_split": {
                    "columns": ["f0", "f1", "zz"],
                    "data": [[1, "x", 3], [True, None, 2], [9]],
                }
            },
        },
        {
            "id": "o-2",
            "ts": T0 - 4,
            "body": {"dataframe_split": {"columns": list(FEATURES), "data": [[1, 2, 3, 4, None]]}},
        },
        {"id": "o-3", "ts": T0 - 3, "body": {"inputs": [{"f0": 0.5, "f3": 7}]}},
    ]
    path.write_text(path.read_text() + "".join(json.dumps(o) + "\n" for o in odd))
    prof = profile()
    counts, rows = streamed(tmp_path, prof)
    whole = read_window(tmp_path, "fraud", T0 - 100, T0, features=list(FEATURES))
    expected = WindowCounts.of(prof, whole.columns)
    assert rows == whole.rows == 900 + 2 + 1 + 1
    for name in FEATURES:
        got, want = counts.features[name], expected.features[name]
        assert got.bins.tolist() == want.bins.tolist()
        assert got.grid.tolist() == want.grid.tolist()
        assert got.missing == whole.missing.get(name, 0)
    assert counts.features["f0"].missing == 1  # true is not a number
    assert counts.features["f4"].missing == 4  # absent from 2 odd rows and 1 inputs row; null
    a = judge_window(prof, counts, rows, DriftTests(), 200)
    b = judge_window(prof, whole.columns, rows, DriftTests(), 200)
    assert [f.psi for f in a[2]] == [f.psi for f in b[2]]
    assert [f.ks_p_value for f in a[2]] == [f.ks_p_value for f in b[2]]


def test_a_window_ten_times_larger_needs_no_more_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recordings, "CHUNK_ROWS", 256)
    monkeypatch.setattr(recordings, "BLOCK", 64 * 1024)
    prof = profile()
    peaks = []
    for n, where in ((2_000, "small"), (20_000, "large")):
        directory = tmp_path / where
        write_recording(directory, "fraud", sample(n, 2), T0 - 100, T0)
        tracemalloc.start()
        counts = WindowCounts(prof)
        got = read_window(directory, "fraud", T0 - 100, T0, features=list(FEATURES), sink=counts)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert got.rows == n
        assert sum(fc.rows for fc in counts.features.values()) == n * len(FEATURES)
    small, large = peaks
    assert large < 1.5 * small, peaks  # columns held whole would take 10x


def test_binned_ks_agrees_with_scipy_on_the_samples() -> None:
    rng = np.random.default_rng(7)
    ref = rng.standard_normal(20_000)
    prof = ReferenceProfile.build({"x": ref}, features=None, bins=10, source="t")
    for shift in (0.0, 0.05, 0.2):
        live = rng.standard_normal(3000) + shift
        [f] = judge_window(prof, {"x": live}, live.size, DriftTests(), 10)[2]
        exact = stats.ks_2samp(live, ref, method="asymp")
        # Evaluated on the grid only: never above the exact statistic, short by at most the
        # mass of one grid cell on either side.
        assert f.ks_statistic <= exact.statistic + 1e-12
        assert exact.statistic - f.ks_statistic < 3 / KS_GRID + 2 / live.size
        assert f.ks_p_value == pytest.approx(exact.pvalue, rel=0.35, abs=1e-3)


def test_js_missing_and_out_of_range_flag_a_feature_on_their_own() -> None:
    prof = profile()
    rows = sample(1000, 3)
    columns = {name: rows[:, i] for i, name in enumerate(FEATURES)}
    columns["f1"] = columns["f1"][:600]  # 400 rows without f1
    columns["f2"] = np.concatenate([columns["f2"][:970], np.full(30, 50.0)])  # 3% beyond max
    tests = DriftTests(max_missing_share=0.2, max_out_of_range_share=0.02)
    status, _message, features = judge_window(prof, columns, 1000, tests, 200)
    by = {f.name: f for f in features}
    assert by["f1"].missing_share == pytest.approx(0.4)
    assert by["f1"].flags == ("missing",)
    assert by["f2"].out_of_range_share == pytest.approx(0.03)
    assert by["f2"].flags == ("out_of_range",)
    assert by["f0"].flags == ()
    assert not by["f0"].drifted
    assert 0 <= by["f0"].js_distance < 0.1
    assert status == "drift"
    # Without the quality thresholds the same window is healthy: they are reported only.
    assert judge_window(prof, columns, 1000, DriftTests(), 200)[0] == "ok"


def test_js_alone_can_judge_a_shift() -> None:
    prof = profile()
    shifted = sample(1000, 4, shift=0.5, shifted=1)
    columns = {name: shifted[:, i] for i, name in enumerate(FEATURES)}
    tests = DriftTests(max_psi=None, ks_p_value=None, max_js=0.1)
    status, _, features = judge_window(prof, columns, 1000, tests, 200)
    assert status == "drift"
    assert [f.name for f in features if f.drifted] == ["f0"]
    assert features[0].flags == ("js",)


def test_a_line_longer_than_the_limit_across_blocks_is_skipped_and_numbered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recordings, "BLOCK", 1000)
    path = write_recording(tmp_path, "fraud", sample(10, 1), T0 - 10, T0)
    lines = path.read_text().splitlines()
    huge = json.dumps({"ts": T0 - 5, "body": {"inputs": [[1.0] * 5000]}})  # 5 blocks long
    path.write_text("\n".join([*lines[:5], huge, *lines[5:], huge]) + "\n")
    prof = profile()
    _counts, rows = streamed(tmp_path, prof, limits=ReadLimits(max_line_bytes=2000))
    assert rows == 10
    got = read_window(tmp_path, "fraud", T0 - 10, T0, limits=ReadLimits(max_line_bytes=2000))
    assert got.problems == [
        f"{path}:6: line longer than 2,000 bytes, skipped",
        f"{path}:13: line longer than 2,000 bytes, skipped",
    ]


def test_hostile_lines_in_a_streamed_window_are_counted_not_taken(tmp_path: Path) -> None:
    path = write_recording(tmp_path, "fraud", sample(10, 1), T0 - 10, T0)
    deep = f'{{"id":"h-1","ts":{T0 - 5:.1f},"body":' + "[" * 100_000 + "1" + "]" * 100_000 + "}"
    nan = '{"id":"h-2","ts":%.1f,"body":{"inputs":[{"f0":NaN,"f1":1.5}]}}' % (T0 - 4)
    unhashable = json.dumps(
        {
            "id": "h-3",
            "ts": T0 - 3,
            "body": {"dataframe_split": {"columns": [["f0"]], "data": [[1]]}},
        }
    )
    no_newline = "x" * 3_000_000  # the file ends inside a 3 MB line
    path.write_text(path.read_text() + "\n".join([deep, nan, unhashable, "   ", no_newline]))
    prof = profile()
    counts = WindowCounts(prof)
    got = read_window(
        tmp_path,
        "fraud",
        T0 - 10,
        T0,
        features=list(FEATURES),
        sink=counts,
        limits=ReadLimits(max_line_bytes=1_000_000),
    )
    assert got.rows == 10 + 1 + 1  # the ten, the NaN row (json's fallback), the odd columns' row
    for name, n in got.missing.items():
        counts.add_missing(name, n)
    assert counts.features["f0"].missing == 2  # NaN is not a finite number; [["f0"]] is no name
    assert counts.features["f1"].rows == 11
    assert got.problems == [
        f"{path}:12: JSON nested too deep",
        f"{path}:16: line longer than 1,000,000 bytes, skipped",
    ]


def test_a_block_read_whole_gives_what_reading_it_line_by_line_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The typed block decoder (one call a block) is a shortcut, never a different answer:
    versions, the window's edges, headers, bodies of another shape and lines that do not fit
    give the same rows, counts and problems as the line-by-line reader."""
    monkeypatch.setattr(recordings, "BLOCK", 2048)  # many blocks, some clean, some not
    path = write_recording(tmp_path, "fraud", sample(300, 3), T0 - 120, T0 + 20, version="1")
    write_recording(tmp_path, "fraud", sample(50, 4), T0 - 50, T0, version="2", name="0002")
    odd = [
        {
            "kind": "header",
            "ts": T0 - 2,
            "body": {"dataframe_split": {"columns": ["f0"], "data": [[1]]}},
        },
        {
            "id": "a",
            "ts": T0 - 2,
            "response": {"version": 1},
            "body": {"dataframe_split": {"columns": list(FEATURES), "data": [[1, 2, 3, 4, 5]]}},
        },
        {"id": "b", "ts": T0 - 100, "response": {"version": "1"}, "body": None},
        {"id": "c", "ts": T0 - 1, "response": {"version": "1"}, "body": {"inputs": [{"f0": 0.25}]}},
        {
            "id": "d",
            "ts": T0 - 1,
            "response": {"version": "1"},
            "body": {
                "dataframe_split": {
                    "columns": list(FEATURES),
                    "data": [[None, 1, 2, 3, 4]],
                    "index": [0],
                }
            },
        },
    ]
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:40], *(json.dumps(o) for o in odd), *lines[40:]]) + "\n")
    prof = profile()

    def read() -> tuple[object, ...]:
        counts = WindowCounts(prof)
        got = read_window(
            tmp_path, "fraud", T0 - 100, T0, version="1", features=list(FEATURES), sink=counts
        )
        bins = {n: (c.bins.tolist(), c.grid.tolist()) for n, c in counts.features.items()}
        return got.rows, got.requests, got.missing, got.problems, bins

    typed_calls = []
    real = recordings.RowReader._typed

    def spy(self: recordings.RowReader, lines: list[bytes], sift: bool) -> bool:
        typed_calls.append(real(self, lines, sift))
        return typed_calls[-1]

    monkeypatch.setattr(recordings.RowReader, "_typed", spy)
    whole = read()
    assert True in typed_calls
    assert False in typed_calls
    monkeypatch.setattr(recordings.RowReader, "_typed", lambda self, lines, sift: False)
    assert read() == whole
    rows, requests, missing, _problems, _bins = whole
    assert rows > 200
    assert requests > 200
    assert missing.get("f0", 0) >= 1  # the null in "d", read line by line

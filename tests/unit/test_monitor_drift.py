"""Drift figures and verdicts on known distributions (fixed seeds), and the bounded reader of the
router's recordings against hostile files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from controller.errors import BadInput
from controller.monitor.drift import ReferenceProfile, judge_window
from controller.monitor.drift_report import DriftReport
from controller.monitor.features import body_rows
from controller.monitor.reference import inside, read_dataset
from controller.monitor.selection import ReadLimits
from controller.monitor.window import read_window
from controller.spec.monitoring import DriftTests
from tests.monitor_support import FEATURES, sample, write_recording, write_reference

T0 = 1_772_366_400.0  # 2026-03-01 12:00 UTC


def profile(seed: int = 0, n: int = 5000) -> ReferenceProfile:
    ref = sample(n, seed)
    columns = {name: ref[:, i] for i, name in enumerate(FEATURES)}
    return ReferenceProfile.build(columns, features=None, bins=10, source="test")


def judge(rows: np.ndarray, tests: DriftTests | None = None) -> tuple[str, list[str]]:
    columns = {name: rows[:, i] for i, name in enumerate(FEATURES)}
    status, _, features = judge_window(profile(), columns, len(rows), tests or DriftTests(), 200)
    return status, [f.name for f in features if f.drifted]


def test_a_half_sigma_shift_in_three_features_is_drift() -> None:
    status, drifted = judge(sample(1000, seed=1, shift=0.5, shifted=3))
    assert status == "drift"
    assert drifted == ["f0", "f1", "f2"]


def test_the_same_distribution_is_not_drift() -> None:
    for seed in range(1, 21):
        status, drifted = judge(sample(1000, seed=seed))
        assert status == "ok", (seed, drifted)


def test_too_few_rows_is_insufficient_not_healthy() -> None:
    status, _, features = judge_window(profile(), {}, 10, DriftTests(), 200)
    assert status == "insufficient"
    assert features == ()


def test_min_drifted_features_raises_the_bar() -> None:
    rows = sample(1000, seed=2, shift=0.5, shifted=1)
    assert judge(rows)[0] == "drift"
    assert judge(rows, DriftTests(min_drifted_features=2))[0] == "ok"


def test_report_round_trips_through_json_worst_first() -> None:
    rows = sample(1000, seed=3, shift=1.0, shifted=1)
    columns = {name: rows[:, i] for i, name in enumerate(FEATURES)}
    status, message, features = judge_window(profile(), columns, 1000, DriftTests(), 200)
    import datetime as dt

    start = dt.datetime.fromtimestamp(T0, dt.UTC)
    report = DriftReport(
        "staging", "fraud", "1", "c" * 40, start, start, status, message, 1000, features
    )
    again = DriftReport.from_json(report.to_json())
    assert again.status == "drift"
    assert again.features[0].name == "f0"
    assert again.worst(1)[0].psi == pytest.approx(report.worst(1)[0].psi)


def test_every_scoring_format_gives_rows() -> None:
    split = {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3, "x"]]}}
    assert list(body_rows(split)) == [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": None}]
    assert list(body_rows({"dataframe_records": [{"a": 1}]})) == [{"a": 1.0}]
    assert list(body_rows({"inputs": {"a": [1, 2]}})) == [{"a": 1.0}, {"a": 2.0}]
    assert list(body_rows({"instances": [[5, True]]})) == [{"0": 5.0, "1": None}]
    assert list(body_rows("not a body")) == []


# --- the reader ---------------------------------------------------------------------------------


def test_window_keeps_only_its_time_and_version(tmp_path: Path) -> None:
    write_recording(tmp_path, "fraud", sample(100, 1), T0 - 100, T0, name="a")
    write_recording(tmp_path, "fraud", sample(100, 2), T0, T0 + 100, name="b")  # the next window
    write_recording(tmp_path, "fraud", sample(50, 3), T0 - 100, T0, version="2", name="c")
    write_recording(tmp_path, "fraudster", sample(70, 4), T0 - 100, T0, name="d")  # not ours
    got = read_window(tmp_path, "fraud", T0 - 100, T0, version="1")
    assert got.rows == 100
    assert got.columns["f0"].size == 100
    assert got.truncated is None
    assert read_window(tmp_path, "fraud", T0 - 100, T0).rows == 150


def test_huge_lines_and_bad_json_are_skipped_and_named(tmp_path: Path) -> None:
    path = write_recording(tmp_path, "fraud", sample(10, 1), T0 - 10, T0)
    good = path.read_text()
    huge = json.dumps({"ts": T0 - 5, "body": {"inputs": [[1.0] * 400_000]}})
    path.write_text(good + huge + "\n{not json\n[1, 2]\n" + good.splitlines()[1] + "\n")
    got = read_window(tmp_path, "fraud", T0 - 10, T0, limits=ReadLimits(max_line_bytes=64_000))
    assert got.rows == 11  # the ten, and the good line after the bad ones
    assert got.skipped_lines == 3
    assert got.problems[0] == f"{path}:12: line longer than 64,000 bytes, skipped"
    assert got.problems[1].startswith(f"{path}:13: not JSON")
    assert got.problems[2] == f"{path}:14: not a JSON object"


def test_too_many_rows_stop_the_read_and_say_so(tmp_path: Path) -> None:
    write_recording(tmp_path, "fraud", sample(5000, 1), T0 - 100, T0, per_request=10)
    got = read_window(tmp_path, "fraud", T0 - 100, T0, limits=ReadLimits(max_rows=1000))
    assert got.rows == 1000
    assert got.truncated == "stopped at 1,000 rows (max_rows)"


def test_too_many_bytes_and_files_stop_the_read(tmp_path: Path) -> None:
    for i in range(3):
        write_recording(tmp_path, "fraud", sample(100, i), T0 - 100, T0, name=str(i))
    files = read_window(tmp_path, "fraud", T0 - 100, T0, limits=ReadLimits(max_files=2))
    assert files.truncated == "stopped after 2 files (max_files)"
    assert files.rows == 200
    size = read_window(tmp_path, "fraud", T0 - 100, T0, limits=ReadLimits(max_bytes=10_000))
    assert size.truncated == "stopped after 10,000 bytes (max_bytes)"
    assert size.rows < 100


def test_a_read_past_its_deadline_stops(tmp_path: Path) -> None:
    write_recording(tmp_path, "fraud", sample(3000, 1), T0 - 100, T0)
    began = time.monotonic()
    got = read_window(tmp_path, "fraud", T0 - 100, T0, limits=ReadLimits(deadline_s=0))
    assert got.truncated == "stopped after 0s (deadline)"
    assert got.rows == 511  # the first check, after 512 lines (the header is one)
    assert time.monotonic() - began < 5


def test_a_dataset_reference_is_read_within_limits(tmp_path: Path) -> None:
    path = write_reference(tmp_path / "ref.csv", sample(300, 1))
    got = read_dataset(path, limits=ReadLimits(max_rows=100))
    assert got.rows == 100
    assert set(got.columns) == set(FEATURES)
    with pytest.raises(BadInput, match="more than a reference may have"):
        read_dataset(path, limits=ReadLimits(max_bytes=100))
    bad = tmp_path / "ref.jsonl"
    bad.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(BadInput, match=r"ref.jsonl:2: not JSON"):
        read_dataset(bad)


def test_a_reference_path_cannot_leave_its_directory_through_a_link(tmp_path: Path) -> None:
    root = tmp_path / "refs"
    root.mkdir()
    (tmp_path / "secret.csv").write_text("a\n1\n")
    (root / "link.csv").symlink_to(tmp_path / "secret.csv")
    with pytest.raises(BadInput, match="leaves the reference directory"):
        inside(root, "link.csv")
    assert inside(root, "sub/ok.csv") == (root / "sub" / "ok.csv").resolve()


def test_the_dataframe_split_fast_path_reads_what_the_general_path_reads(tmp_path: Path) -> None:
    path = write_recording(tmp_path, "fraud", sample(20, 1), T0 - 20, T0, per_request=4)
    lines = path.read_text().splitlines()
    odd = {
        "ts": T0 - 1,
        "body": {
            "dataframe_split": {
                "columns": ["f0", "f1", "zz"],
                "data": [[1, "x", 3], [True, None, 2], [9]],
            }
        },
    }
    path.write_text("\n".join([*lines, json.dumps(odd)]) + "\n")
    fast = read_window(tmp_path, "fraud", T0 - 20, T0, features=list(FEATURES))
    general = read_window(tmp_path, "fraud", T0 - 20, T0)
    for name in FEATURES:
        assert fast.columns[name].tolist() == general.columns[name].tolist()
    assert fast.missing["f1"] == 2  # "x" and null
    assert fast.missing["f0"] == 1  # true is not a number
    assert fast.missing["f2"] == 2  # a column the odd request does not have
    assert fast.rows == 22  # the short row [9] is not a row of these columns


def test_lines_outside_the_window_are_passed_over_undecoded(tmp_path: Path) -> None:
    path = write_recording(tmp_path, "fraud", sample(10, 1), T0 - 10, T0)
    # Outside the window and broken: never decoded, so neither read nor counted as a problem.
    early = '{"id":"x-1","ts":%.1f,"body":{oops\n' % (T0 - 3600)
    inside = '{"id":"x-2","ts":%.1f,"body":{oops\n' % (T0 - 5)
    path.write_text(path.read_text() + early + inside)
    got = read_window(tmp_path, "fraud", T0 - 10, T0)
    assert got.rows == 10
    assert got.skipped_lines == 1
    assert got.problems[0].startswith(f"{path}:13: not JSON")


def test_a_csv_reference_with_a_huge_line_is_refused_at_its_line(tmp_path: Path) -> None:
    import csv

    path = tmp_path / "ref.csv"
    path.write_text("a,b\n1,2\n" + "3," + "9" * 200_000 + "\n")
    before = csv.field_size_limit()
    with pytest.raises(BadInput, match=r"ref.csv:3: line longer than 65,536 bytes"):
        read_dataset(path, limits=ReadLimits(max_line_bytes=65_536))
    assert csv.field_size_limit() == before  # the process-wide limit is put back
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(BadInput, match="empty"):
        read_dataset(empty)


def test_the_monitor_reads_what_the_real_recorder_writes(tmp_path: Path) -> None:
    """The router's own recorder (files rotated, as in production) and the monitor's reader
    agree on the format: rows by time and version, features by column, and the recorder's
    lines start the way the reader's undecoded time filter expects."""
    from controller.cluster.render import recording_config
    from controller.monitor import recordings
    from controller.serving.recorder import Exchange, start
    from controller.spec.models import Recording

    config = recording_config(Recording(sample_rate=1, dir=str(tmp_path), max_file_mb=0.01))
    assert config is not None
    recorder = start(config, "fraud")
    rows = sample(300, seed=1)
    for i, row in enumerate(rows.tolist()):
        body = {"dataframe_split": {"columns": list(FEATURES), "data": [row]}}
        accepted = recorder.offer(
            Exchange(
                arrived=T0 - 300 + i,
                method="POST",
                path="/fraud",
                headers=[(b"content-type", b"application/json")],
                body=json.dumps(body).encode(),
                status=200,
                response_body=b'{"predictions": [0]}',
                latency_ms=2.0,
                version="1" if i % 3 else "2",
            )
        )
        assert accepted
    recorder.close(timeout_s=30)
    files = sorted(tmp_path.glob("fraud--*.jsonl"))
    assert len(files) > 1  # rotated
    first_record = files[0].read_bytes().splitlines()[1]
    assert recordings._TS.match(first_record) is not None
    got = read_window(tmp_path, "fraud", T0 - 300, T0 - 150, version="1", features=list(FEATURES))
    assert got.rows == 100  # 150 seconds, one request a second, two in three answered by v1
    want = [r[0] for i, r in enumerate(rows.tolist()[:150]) if i % 3]
    assert got.columns["f0"].tolist() == want

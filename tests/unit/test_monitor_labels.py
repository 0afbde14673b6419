"""Delayed ground truth: labels read within limits (file:line errors for a malformed row),
joined by request id with the recorded answers into accuracy, ROC AUC and MAE per model
version; the recorder keeps the client's X-Request-Id; `serveops monitor --check --labels`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.cli.main import app
from controller.errors import BadInput
from controller.monitor.labels import LabelLimits, join_labels, read_labels, roc_auc
from controller.serving.recorder import Exchange, Recorder, client_request_id
from simulator.traffic import TrafficRecord
from tests.monitor_support import sample, write_recording, write_reference
from tests.support import deployment_yaml, make_repo

T0 = 1_772_366_400.0


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_csv_jsonl_and_a_directory_of_them_are_read(tmp_path: Path) -> None:
    write(tmp_path / "l" / "a.csv", "\ufeffrequest_id,label\nr1,1\nr2,cat\n")
    write(
        tmp_path / "l" / "b.jsonl",
        '{"request_id": "r3", "label": true}\n\n{"request_id": "r1", "label": 0}\n',
    )
    write(tmp_path / "l" / "notes.txt", "ignored")
    labels = read_labels(tmp_path / "l")
    assert labels.by_id == {"r1": 0.0, "r2": "cat", "r3": "true"}
    assert labels.files == 2
    assert labels.duplicates == 1  # r1: the later label wins


@pytest.mark.parametrize(
    ("name", "text", "error"),
    [
        ("a.csv", "id,label\nr1,1\n", r"a.csv:1: the header row needs 'request_id' and 'label'"),
        ("a.csv", "request_id,label\nr1,1\nr2\n", r"a.csv:3: 1 fields, the header has 2"),
        ("a.csv", "request_id,label\n,1\n", r"a.csv:2: 'request_id' must be a non-empty"),
        ("a.csv", "request_id,label\nr1,nan\n", r"a.csv:2: label is not a finite number"),
        ("a.csv", "request_id,label\nr1,\n", r"a.csv:2: 'label' must be a number or a non-empty"),
        ("a.csv", "", r"a.csv: empty"),
        ("a.jsonl", '{"request_id": "r1", "label": 1}\n{oops\n', r"a.jsonl:2: not JSON"),
        ("a.jsonl", '{"request_id": "r1"}\n', r"a.jsonl:1: not an object with 'request_id' and"),
        ("a.jsonl", "[" * 100_000 + "\n", r"a.jsonl:1: (JSON nested too deep|not JSON)"),
        ("a.jsonl", '{"request_id": {"x": 1}, "label": 1}\n', r"a.jsonl:1: 'request_id' must be"),
    ],
)
def test_a_malformed_row_is_named_at_its_file_and_line(
    tmp_path: Path, name: str, text: str, error: str
) -> None:
    with pytest.raises(BadInput, match=error):
        read_labels(write(tmp_path / name, text), LabelLimits(max_line_bytes=200_000))


def test_limits_stop_a_hostile_labels_file(tmp_path: Path) -> None:
    rows = "request_id,label\n" + "".join(f"r{i},1\n" for i in range(100))
    path = write(tmp_path / "a.csv", rows)
    with pytest.raises(BadInput, match=r"a.csv:12: more than 10 labels"):
        read_labels(path, LabelLimits(max_rows=10))
    with pytest.raises(BadInput, match=r"bytes of labels, more than 100"):
        read_labels(path, LabelLimits(max_bytes=100))
    long = write(tmp_path / "long.csv", "request_id,label\nr1," + "x" * 5000 + "\n")
    with pytest.raises(BadInput, match=r"long.csv:2: line longer than 1,000 bytes"):
        read_labels(long, LabelLimits(max_line_bytes=1000))
    for i in range(3):
        write(tmp_path / "many" / f"{i}.csv", "request_id,label\n")
    with pytest.raises(BadInput, match=r"3 label files, more than 2"):
        read_labels(tmp_path / "many", LabelLimits(max_files=2))
    with pytest.raises(BadInput, match="no such labels file or directory"):
        read_labels(tmp_path / "nowhere")


def recorded(tmp_path: Path) -> None:
    """Version 1 answers a class with a probability; version 2 a plain class; one request has
    two rows; one old record has no request_id (joined by its `id`)."""
    outputs = [[{"label": i % 2, "probability": 0.9 if i % 2 else 0.2}] for i in range(6)]
    ids = [f"q{i}" for i in range(6)]
    write_recording(
        tmp_path, "fraud", sample(6, 0), T0 - 90, T0 - 60, outputs=outputs, request_ids=ids
    )
    write_recording(
        tmp_path, "fraud", sample(4, 1), T0 - 50, T0 - 20, version="2", name="0002",
        outputs=[[1], [1], [0], [1, 0]], request_ids=["p0", "p1", "p2", "p3"],
    )  # fmt: skip
    write_recording(
        tmp_path,
        "fraud",
        sample(1, 2),
        T0 - 10,
        T0 - 5,
        name="0003",
        outputs=[[{"label": 0, "probability": 0.4}]],
    )


def test_labels_join_by_request_id_into_quality_per_version(tmp_path: Path) -> None:
    recorded(tmp_path)
    labels = write(
        tmp_path / "labels.csv",
        "request_id,label\n"
        + "".join(f"q{i},{i % 2}\n" for i in range(5))  # q5 unlabelled
        + "q0,1\n"  # now wrong: v1 said 0 with score 0.2
        + "p0,1\np1,0\np2,0\np3,1\nt-0,1\nnever-sent,1\n",
    )
    join = join_labels(tmp_path, "fraud", T0 - 100, T0, read_labels(labels))
    report = join.report()
    assert report["joined"] == 9  # q0..q4, p0..p2, t-0 (old record, by its id)
    assert report["multi_row"] == 1  # p3: two predictions, one label
    assert report["unjoined_labels"] == 2  # p3 and never-sent
    assert report["duplicate_labels"] == 1
    v1 = report["versions"]["1"]
    assert v1 == {"task": "classification", "joined": 6, "accuracy": 4 / 6, "roc_auc": 0.875}
    v2 = report["versions"]["2"]
    assert v2["accuracy"] == 2 / 3
    assert v2["roc_auc"] is None  # no scores recorded


def test_numeric_answers_and_labels_give_mae(tmp_path: Path) -> None:
    write_recording(
        tmp_path, "fraud", sample(3, 0), T0 - 90, T0 - 60,
        outputs=[[1.5], [2.5], [10.0]], request_ids=["a", "b", "c"],
    )  # fmt: skip
    labels = write(
        tmp_path / "l.jsonl",
        "".join(
            json.dumps({"request_id": k, "label": v}) + "\n"
            for k, v in (("a", 1.0), ("b", 3.5), ("c", 10.0))
        ),
    )
    report = join_labels(tmp_path, "fraud", T0 - 100, T0, read_labels(labels)).report()
    assert report["versions"]["1"] == {"task": "regression", "joined": 3, "scored": 3, "mae": 0.5}
    forced = join_labels(tmp_path, "fraud", T0 - 100, T0, read_labels(labels)).report(
        "classification"
    )
    assert forced["versions"]["1"]["accuracy"] == 1 / 3


def test_roc_auc_counts_ties_half_and_needs_both_classes_and_scores() -> None:
    assert roc_auc([1.0, 0.0, 1.0, 0.0], [0.9, 0.1, 0.5, 0.5]) == 0.875
    assert roc_auc([1.0, 1.0], [0.9, 0.1]) is None
    assert roc_auc(["true", "false"], [0.9, None]) is None
    assert roc_auc(["cat", "dog"], [0.9, 0.1]) is None


def test_the_recorder_keeps_a_plain_client_request_id_and_replay_reads_it() -> None:
    assert client_request_id([(b"X-Request-ID", b"abc-123")]) == "abc-123"
    assert client_request_id([(b"x-request-id", b"<script>")]) is None
    assert client_request_id([(b"x-request-id", b"a" * 200)]) is None
    assert client_request_id([]) is None

    class Nothing:  # a sink that keeps nothing: only `record` is under test
        @property
        def files(self) -> list[str]:
            return []

        def write(self, lines: list[bytes], grids: object = None) -> None:
            pass

        def close(self) -> None:
            pass

    recorder = Recorder(Nothing(), tag="t")
    try:
        ex = Exchange(
            T0, "POST", "/fraud", [(b"x-request-id", b"req-7")], b"{}", 200, b"[1]", 1.0, "1"
        )
        record = recorder.record(ex)
    finally:
        recorder.close()
    assert record["request_id"] == "req-7"
    assert list(record)[:2] == ["id", "ts"]  # the monitor's undecoded pass reads these first
    assert TrafficRecord.model_validate(record).request_id == "req-7"


def test_monitor_check_with_labels_prints_quality_and_json(tmp_path: Path) -> None:
    recordings, refs = tmp_path / "rec", tmp_path / "refs"
    write_reference(refs / "fraud.csv", sample(2000, seed=0))
    repo = tmp_path / "repo"
    extra = (
        f"recording: {{sample_rate: 1, dir: {recordings}}}\n"
        "monitoring:\n  reference: {kind: dataset, path: fraud.csv}\n  window: 1h\n"
        "  min_rows: 10\n"
    )
    make_repo(repo, {"deployments/staging/fraud.yaml": deployment_yaml(extra_spec=extra)})
    now = time.time()
    write_recording(
        recordings, "fraud", sample(40, 1), now - 3000, now - 60,
        outputs=[[i % 2] for i in range(40)], request_ids=[f"r{i}" for i in range(40)],
    )  # fmt: skip
    labels = write(
        tmp_path / "labels.csv",
        "request_id,label\n"
        + "".join(f"r{i},{i % 2 if i < 30 else 1 - i % 2}\n" for i in range(40)),
    )
    args = [
        "monitor",
        "--check",
        "--env",
        "staging",
        "--repo",
        str(repo),
        "--monitor-reference-dir",
        str(refs),
        "--labels",
        str(labels),
    ]
    result = CliRunner().invoke(app, args)
    assert "labels: 40 of 40 joined (0 unjoined" in result.output, result.output
    assert "v1: classification, 40 labelled rows: accuracy 0.750" in result.output
    result = CliRunner().invoke(app, [*args, "-o", "json"])
    body = json.loads(result.output)
    assert body["quality"]["fraud"]["versions"]["1"]["accuracy"] == 0.75
    result = CliRunner().invoke(app, ["monitor", "--env", "staging", "--labels", str(labels)])
    assert result.exit_code == 2
    assert "pass --check too" in result.output

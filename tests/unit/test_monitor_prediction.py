"""Prediction drift: the model's recorded outputs profiled from a recorded reference and
compared with the window's (numbers binned like a feature, labels as class shares), judged by
`tests.prediction`, in the report, the verdict, the HTML page and the gauges; skipped, with the
reason, when the reference holds no predictions."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry

from controller.errors import BadInput
from controller.gitops.telemetry import ControllerMetrics
from controller.monitor.drift_report import DriftReport
from controller.monitor.predictions import (
    MAX_CLASSES,
    OTHER,
    PREDICTION,
    PredictionColumn,
    record_predictions,
)
from controller.monitor.reference import load_reference
from controller.monitor.report_html import render_report
from controller.monitor.step import judge_recordings
from controller.spec.models import ModelDeployment
from tests.monitor_support import FEATURES, sample, write_recording, write_reference
from tests.support import deployment_yaml

T0 = 1_772_366_400.0


def deployment(tmp_path: Path, reference: str, tests: str = "") -> ModelDeployment:
    doc = deployment_yaml(
        extra_spec=f"""\
        recording: {{sample_rate: 1, dir: {tmp_path / "rec"}}}
        monitoring:
          reference: {reference}
          min_rows: 50
          tests: {{{tests}}}
        """
    )
    return ModelDeployment.model_validate(yaml.safe_load(doc))


def judge(tmp_path: Path, dep: ModelDeployment) -> DriftReport:
    mon = dep.spec.monitoring
    assert mon is not None
    profile = load_reference(
        mon, reference_dir=tmp_path / "refs", registry=None, model_name="fraud", version="1"
    )
    window = (dt.datetime.fromtimestamp(T0 - 100, dt.UTC), dt.datetime.fromtimestamp(T0, dt.UTC))
    return judge_recordings("prod", dep, profile, window, version="1", commit="c")


def record(body: Any, status: int = 200) -> dict[str, Any]:
    return {"response": {"status": status, "body": body}}


def test_every_response_shape_gives_its_predictions_and_counts_the_rest() -> None:
    got = record_predictions(
        record(
            {
                "predictions": [
                    0.5,
                    "cat",
                    True,
                    {"label": "dog", "probability": 0.8},
                    [0.1, 0.9],
                    {"x": 1},
                    None,
                ]
            }
        )
    )
    assert got is not None
    predictions, bad = got
    assert [p.value for p in predictions] == [0.5, "cat", "true", "dog", 1.0]
    assert [p.score for p in predictions] == [None, None, None, 0.8, 0.9]
    assert bad == 2
    assert record_predictions(record([1, 2]))[0][1].value == 2.0  # type: ignore[index]
    assert record_predictions(record({"predictions": [1]}, status=500)) is None
    assert record_predictions({"response": {"status": 200}}) is None


def test_a_model_answering_unique_strings_cannot_grow_the_label_counts() -> None:
    column = PredictionColumn()
    for i in range(500):
        column(record({"predictions": [f"label-{i}" * 100]}))
    assert len(column.labels) == MAX_CLASSES + 1
    assert column.labels[OTHER] == 500 - MAX_CLASSES
    assert max(len(k) for k in column.labels) <= 64


def test_without_a_sink_kept_numbers_are_capped() -> None:
    column = PredictionColumn(max_kept=10)
    column(record({"predictions": list(range(25))}))
    assert len(column.numbers) == 10
    assert column.dropped == 15


def numeric_traffic(tmp_path: Path, shift: float) -> None:
    rng = np.random.default_rng(3)
    ref_out = [[float(v)] for v in rng.normal(0, 1, 2000)]
    write_recording(
        tmp_path / "refs", "ref", sample(2000, 0), T0 - 9000, T0 - 8000, outputs=ref_out
    )
    live_out = [[float(v) + shift] for v in rng.normal(0, 1, 500)]
    write_recording(tmp_path / "rec", "fraud", sample(500, 1), T0 - 90, T0 - 10, outputs=live_out)


REF = "{kind: recording, path: ref--20260301T000000Z-test-0001.jsonl}"


def test_shifted_numeric_predictions_drift_the_window_when_judged(tmp_path: Path) -> None:
    numeric_traffic(tmp_path, shift=1.0)
    report = judge(tmp_path, deployment(tmp_path, REF, "prediction: {max_psi: 0.2}"))
    assert report.status == "drift"
    assert report.message.startswith("predictions drifted")
    pred = next(f for f in report.features if f.name == PREDICTION)
    assert pred.rows == 500
    assert pred.psi > 0.2
    assert pred.flags == ("psi",)
    assert all(not f.drifted for f in report.features if f.name != PREDICTION)
    assert report.extra["prediction_unreadable"] == 0


def test_unjudged_predictions_are_reported_but_do_not_drift_the_window(tmp_path: Path) -> None:
    numeric_traffic(tmp_path, shift=1.0)
    report = judge(tmp_path, deployment(tmp_path, REF))
    assert report.status == "ok"
    pred = next(f for f in report.features if f.name == PREDICTION)
    assert pred.psi > 0.2
    assert not pred.drifted
    assert "predictions PSI" in report.message


def test_unshifted_predictions_do_not_drift(tmp_path: Path) -> None:
    numeric_traffic(tmp_path, shift=0.0)
    report = judge(tmp_path, deployment(tmp_path, REF, "prediction: {max_psi: 0.2}"))
    assert report.status == "ok"


def test_class_shares_drift_and_show_in_json_html_and_gauges(tmp_path: Path) -> None:
    write_recording(
        tmp_path / "refs",
        "ref",
        sample(1000, 0),
        T0 - 9000,
        T0 - 8000,
        outputs=[["fraud" if i % 10 == 0 else "ok"] for i in range(1000)],
    )
    write_recording(
        tmp_path / "rec",
        "fraud",
        sample(400, 1),
        T0 - 90,
        T0 - 10,
        outputs=[["fraud" if i % 2 == 0 else "ok"] for i in range(400)],
    )
    report = judge(tmp_path, deployment(tmp_path, REF, "prediction: {max_psi: 0.2, max_js: 0.1}"))
    assert report.status == "drift"
    pred = next(f for f in report.features if f.name == PREDICTION)
    assert pred.categories == ("ok", "fraud")
    assert pred.window_counts == (200, 200)
    assert pred.reference_shares == (0.9, 0.1)
    assert set(pred.flags) == {"psi", "js"}
    again = DriftReport.from_json(report.to_json())
    assert next(f for f in again.features if f.name == PREDICTION).categories == ("ok", "fraud")
    assert "<title>fraud: win 50.0%</title>" in render_report(report)
    metrics = ControllerMetrics(CollectorRegistry())
    metrics.record_drift(report)
    psi = metrics.feature_psi.labels("prod", "fraud", PREDICTION)._value.get()
    assert psi == pred.psi


def test_a_dataset_reference_skips_prediction_drift_and_says_why(tmp_path: Path) -> None:
    write_reference(tmp_path / "refs" / "ref.csv", sample(1000, 0))
    numeric_traffic(tmp_path, shift=1.0)
    report = judge(tmp_path, deployment(tmp_path, "{kind: dataset, path: ref.csv}"))
    assert all(f.name != PREDICTION for f in report.features)
    assert "holds no predictions (kind 'recording' has them" in report.extra["prediction_skipped"]
    assert "holds no predictions (kind &#x27;recording&#x27; has them" in render_report(report)
    assert json.loads(report.to_json())["extra"]["prediction_skipped"]


def reference_with_predictions(path: Path, predictions: list[str]) -> None:
    """A training pipeline's validation file: the features and the model's answer on each row."""
    rows = sample(len(predictions), 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join([*FEATURES, "predicted"])]
    for row, p in zip(rows, predictions, strict=True):
        lines.append(",".join([*(repr(float(v)) for v in row), p]))
    path.write_text("\n".join(lines) + "\n")


def test_a_dataset_references_prediction_column_is_the_reference_of_prediction_drift(
    tmp_path: Path,
) -> None:
    reference_with_predictions(
        tmp_path / "refs" / "val.csv", ["fraud" if i % 10 == 0 else "ok" for i in range(1000)]
    )
    write_recording(
        tmp_path / "rec", "fraud", sample(400, 1), T0 - 90, T0 - 10,
        outputs=[["fraud" if i % 2 == 0 else "ok"] for i in range(400)],
    )  # fmt: skip
    ref = "{kind: dataset, path: val.csv, prediction_column: predicted}"
    report = judge(tmp_path, deployment(tmp_path, ref, "prediction: {max_psi: 0.2}"))
    assert report.status == "drift"
    pred = next(f for f in report.features if f.name == PREDICTION)
    assert (pred.categories, pred.reference_shares) == (("ok", "fraud"), (0.9, 0.1))
    assert "predicted" not in {f.name for f in report.features}  # never a watched feature
    assert "prediction_skipped" not in report.extra


def test_a_prediction_column_the_file_lacks_is_named_at_its_header(tmp_path: Path) -> None:
    write_reference(tmp_path / "refs" / "ref.csv", sample(100, 0))
    dep = deployment(tmp_path, "{kind: dataset, path: ref.csv, prediction_column: predicted}")
    with pytest.raises(BadInput) as err:
        judge(tmp_path, dep)
    assert err.value.message == (
        f"{tmp_path / 'refs' / 'ref.csv'}:1: no column 'predicted' (prediction_column) in the "
        "header"
    )

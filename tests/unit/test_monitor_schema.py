"""Schema violations against the model's signature: rows missing a declared column, with an
undeclared one, or a value of the wrong type; counted per window, judged by
`tests.schema_violations`, in the report, the HTML page and a gauge; skipped with the reason
when the reference has no signature."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, Schema, TensorSpec
from prometheus_client import CollectorRegistry

from controller.gitops.telemetry import ControllerMetrics
from controller.monitor.drift_report import DriftReport
from controller.monitor.reference import _from_mlflow, load_reference
from controller.monitor.report_html import render_report
from controller.monitor.schema import MAX_NAMED, SchemaCheck, Signature, signature_of
from controller.monitor.step import judge_recordings
from controller.spec.models import ModelDeployment
from tests.monitor_support import FEATURES, sample, write_recording, write_reference
from tests.support import deployment_yaml

T0 = 1_772_366_400.0
SIG = Signature(dict.fromkeys(FEATURES, "double"))


def test_named_column_specs_make_a_signature_and_tensors_are_refused() -> None:
    named = ModelSignature(Schema([ColSpec("double", "a"), ColSpec("string", "b", required=False)]))
    sig, why = _from_mlflow(named)
    assert sig == Signature({"a": "double", "b": "string"}, frozenset({"b"}))
    assert why == ""
    tensor = ModelSignature(Schema([TensorSpec(np.dtype("float32"), (-1, 4))]))
    sig, why = _from_mlflow(tensor)
    assert sig is None
    assert "tensor" in why
    assert signature_of(None) == (None, "the model logged no input signature")


def test_each_kind_of_violation_is_counted_once_per_row() -> None:
    check = SchemaCheck(
        Signature({"a": "double", "n": "long", "s": "string", "o": "double"}, frozenset({"o"}))
    )
    rows = [
        {"a": 1.0, "n": 2, "s": "x"},  # fine: `o` is optional
        {"a": None, "n": 2, "s": "x"},  # fine: a null is missing, not a type error
        {"a": 1.0, "s": "x"},  # missing n
        {"a": 1.0, "n": 2, "s": "x", "zz": 1},  # extra zz
        {"a": "1.0", "n": True, "s": 3},  # three wrong types: one row
        {"n": 2, "s": "x", "yy": 0},  # missing a and extra yy: one row
    ]
    for row in rows:
        check.row(row)
    assert (check.rows, check.violating) == (6, 4)
    assert (check.missing_column, check.extra_column, check.wrong_type) == (2, 2, 1)
    assert check.named == {
        "missing_column": ["n", "a"],
        "extra_column": ["zz", "yy"],
        "wrong_type": ["a", "n", "s"],
    }
    assert check.share == 4 / 6


def test_a_flood_of_odd_column_names_is_counted_not_kept() -> None:
    check = SchemaCheck(SIG)
    for i in range(1000):
        check.row({**dict.fromkeys(FEATURES, 1.0), f"c{i}" * 100: 1})
    assert check.extra_column == 1000
    assert len(check.named["extra_column"]) == MAX_NAMED
    assert max(len(n) for n in check.named["extra_column"]) <= 128


def deployment(tmp_path: Path, tests: str = "") -> ModelDeployment:
    doc = deployment_yaml(
        extra_spec=f"""\
        recording: {{sample_rate: 1, dir: {tmp_path / "rec"}}}
        monitoring:
          reference: {{kind: dataset, path: ref.csv}}
          min_rows: 50
          tests: {{{tests}}}
        """
    )
    return ModelDeployment.model_validate(yaml.safe_load(doc))


def judge(tmp_path: Path, dep: ModelDeployment, signature: Signature | None) -> DriftReport:
    mon = dep.spec.monitoring
    assert mon is not None
    write_reference(tmp_path / "refs" / "ref.csv", sample(1000, 0))
    profile = load_reference(
        mon, reference_dir=tmp_path / "refs", registry=None, model_name="fraud", version="1"
    )
    if signature is not None:
        profile = replace(profile, signature=signature, signature_note="")
    window = (dt.datetime.fromtimestamp(T0 - 100, dt.UTC), dt.datetime.fromtimestamp(T0, dt.UTC))
    return judge_recordings("prod", dep, profile, window, version="1", commit="c")


def traffic(tmp_path: Path, bad: int) -> None:
    """180 good rows, then `bad` rows with a string where f0 wants a number and a `<b>` column."""
    path = write_recording(tmp_path / "rec", "fraud", sample(180, 1), T0 - 90, T0 - 20)
    with path.open("a") as f:
        for i, values in enumerate(sample(bad, 2).tolist()):
            row = {**dict(zip(FEATURES, values, strict=True)), "f0": "high", "<b>": 1}
            record = {
                "id": f"b-{i}",
                "ts": T0 - 10,
                "body": {"dataframe_records": [row]},
                "response": {"status": 200, "version": "1"},
            }
            f.write(json.dumps(record) + "\n")


def test_rows_breaking_the_signature_drift_the_window_over_the_limit(tmp_path: Path) -> None:
    traffic(tmp_path, bad=20)
    report = judge(tmp_path, deployment(tmp_path, "schema_violations: {max_share: 0.05}"), SIG)
    assert report.status == "drift"
    assert report.deployment == "fraud"  # not the last feature with missing values (a bug)
    assert report.message.startswith("10.0% of rows break the signature")
    schema = report.extra["schema"]
    assert (schema["rows"], schema["violating_rows"]) == (200, 20)
    assert schema["columns"] == {"extra_column": ["<b>"], "wrong_type": ["f0"]}
    page = render_report(report)
    assert "&lt;b&gt;" in page
    assert "<b>" not in page.split("<h2>Schema</h2>")[1].split("</table>")[0]
    metrics = ControllerMetrics(CollectorRegistry())
    metrics.record_drift(report)
    assert metrics.schema_violations.labels("prod", "fraud")._value.get() == 0.1


def test_unjudged_violations_are_reported_and_leave_the_verdict(tmp_path: Path) -> None:
    traffic(tmp_path, bad=20)
    report = judge(tmp_path, deployment(tmp_path), SIG)
    assert report.status == "ok"
    assert "10.0% of rows break the signature" in report.message
    assert report.extra["schema"]["violating_rows"] == 20


def test_without_a_signature_the_schema_is_skipped_with_the_reason(tmp_path: Path) -> None:
    traffic(tmp_path, bad=20)
    report = judge(tmp_path, deployment(tmp_path, "schema_violations: {max_share: 0.05}"), None)
    assert report.status == "ok"
    assert "schema" not in report.extra
    assert "no model signature" in report.extra["schema_skipped"]
    assert "no model signature" in render_report(report)

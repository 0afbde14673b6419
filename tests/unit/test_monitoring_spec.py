"""spec.monitoring: declared in the deployment file, validated at file:line:field (no cluster)."""

from __future__ import annotations

import pytest

from controller.errors import ValidationFailed
from controller.spec.manifest import load_manifests
from tests.support import deployment_yaml

PATH = "deployments/staging/fraud.yaml"
RECORDING = "recording: {sample_rate: 1}\n"


def problems(extra: str) -> list[str]:
    with pytest.raises(ValidationFailed) as info:
        load_manifests({PATH: deployment_yaml(extra_spec=extra)})
    return [str(p) for p in info.value.problems]


def test_monitoring_loads_with_defaults() -> None:
    text = deployment_yaml(
        extra_spec=RECORDING
        + "monitoring:\n  reference: {kind: dataset, path: fraud/train.csv}\n"
        + "  features: [amount, age]\n"
    )
    [m] = load_manifests({PATH: text})
    mon = m.deployment.spec.monitoring
    assert mon is not None
    assert mon.features == ["amount", "age"]
    assert mon.tests.max_psi == 0.1
    assert mon.tests.ks_p_value == 0.01
    assert mon.window_s == 3600
    assert mon.alert_targets == ["default"]


def test_monitoring_without_recording_is_located() -> None:
    extra = "monitoring:\n  reference: {kind: dataset, path: train.csv}\n"
    assert problems(extra) == [
        f"{PATH}:13: spec.monitoring: monitoring reads the router's recordings: set 'recording' too"
    ]


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "a/../../b", ".hidden", "a/.b"])
def test_reference_path_cannot_leave_the_reference_directory(path: str) -> None:
    extra = RECORDING + f"monitoring:\n  reference: {{kind: dataset, path: '{path}'}}\n"
    [p] = problems(extra)
    assert p.startswith(f"{PATH}:15: spec.monitoring.reference.path: String should match")


def test_bad_fields_name_their_lines() -> None:
    extra = RECORDING + (
        "monitoring:\n"
        "  reference: {kind: mlflow, path: x.csv}\n"
        "  window: 5s\n"
        "  tests: {max_psi: null, ks_p_value: null}\n"
        "  alert_targets: [https://evil.example/hook]\n"
    )
    found = problems(extra)
    assert (
        f"{PATH}:15: spec.monitoring.reference: reference kind 'mlflow' reads the run's "
        "artifact, not 'path'" in found
    )
    assert f"{PATH}:16: spec.monitoring.window: window must be at least 10s (got '5s')" in found
    assert any(p.startswith(f"{PATH}:17: spec.monitoring.tests: set 'max_psi'") for p in found)
    assert any(p.startswith(f"{PATH}:18: spec.monitoring.alert_targets: ") for p in found)


def test_more_drifted_features_than_watched_is_refused() -> None:
    extra = RECORDING + (
        "monitoring:\n"
        "  reference: {kind: dataset, path: t.csv}\n"
        "  features: [a]\n"
        "  tests: {min_drifted_features: 2}\n"
    )
    [p] = problems(extra)
    assert p.startswith(f"{PATH}:14: spec.monitoring: tests.min_drifted_features (2) exceeds")


@pytest.mark.parametrize(
    ("feature", "ok"),
    [("mean radius", True), ("worst area", True), (" lead", False), ("trail ", False),
     ("a\tb", False), ("x" * 129, False)],
)  # fmt: skip
def test_feature_names_as_data_frames_have_them(feature: str, ok: bool) -> None:
    extra = (
        RECORDING
        + "monitoring:\n  reference: {kind: dataset, path: fraud/train.csv}\n"
        + f"  features: [{feature!r}]\n"
    )
    if ok:
        [m] = load_manifests({PATH: deployment_yaml(extra_spec=extra)})
        assert m.deployment.spec.monitoring.features == [feature]  # type: ignore[union-attr]
    else:
        assert any("must match" in p for p in problems(extra))


def test_labels_name_a_place_in_the_labels_directory_with_a_delay_and_a_task() -> None:
    base = RECORDING + "monitoring:\n  reference: {kind: dataset, path: train.csv}\n"
    [m] = load_manifests({PATH: deployment_yaml(extra_spec=base + "  labels: {path: fraud}\n")})
    labels = m.deployment.spec.monitoring.labels  # type: ignore[union-attr]
    assert labels is not None
    assert (labels.path, labels.delay_s, labels.task) == ("fraud", 86400.0, "auto")
    found = problems(base + "  labels: {path: ../fraud, delay: soon, task: ranking}\n")
    assert any(
        p.startswith(f"{PATH}:16: spec.monitoring.labels.path: String should") for p in found
    )
    assert any(
        p.startswith(f"{PATH}:16: spec.monitoring.labels.delay: String should") for p in found
    )
    assert any(p.startswith(f"{PATH}:16: spec.monitoring.labels.task: Input should") for p in found)


def test_a_prediction_column_reads_a_data_file_only() -> None:
    ref = "{kind: recording, path: r.jsonl, prediction_column: score}"
    [p] = problems(RECORDING + f"monitoring:\n  reference: {ref}\n")
    assert p.startswith(f"{PATH}:15: spec.monitoring.reference: 'prediction_column' reads a data")
    ref = "{kind: mlflow, prediction_column: score}"  # the input example: no predictions
    [p] = problems(RECORDING + f"monitoring:\n  reference: {ref}\n")
    assert "kind 'dataset', or 'mlflow' with 'artifact'" in p


def test_quality_thresholds_are_bounded() -> None:
    base = RECORDING + "monitoring:\n  reference: {kind: dataset, path: train.csv}\n"
    found = problems(
        base + "  labels: {path: fraud, min_accuracy: 1.5, max_mae: -1, min_labelled: 0}\n"
    )
    assert any(p.startswith(f"{PATH}:16: spec.monitoring.labels.min_accuracy: ") for p in found)
    assert any(p.startswith(f"{PATH}:16: spec.monitoring.labels.max_mae: ") for p in found)
    assert any(p.startswith(f"{PATH}:16: spec.monitoring.labels.min_labelled: ") for p in found)

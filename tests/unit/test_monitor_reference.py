"""References from MLflow: the served version's training-data artifact, read from the run that
logged it (a real MLflow SQLite store and artifact directory), and what happens when it is not
there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlflow.pyfunc import PythonModel

from controller.errors import BadInput
from controller.monitor.reference import load_reference
from controller.monitor.schema import Signature
from controller.registry.mlflow import MlflowRegistry
from controller.spec.monitoring import Monitoring
from tests.monitor_support import FEATURES, sample, write_reference


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Model `fraud` v1 from a run with `training/reference.csv`; v2 from a run without."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("ref", artifact_location=str(root / "artifacts"))
    with_data = client.create_run(experiment)
    csv = write_reference(root / "src" / "reference.csv", sample(2000, seed=0))
    client.log_artifact(with_data.info.run_id, str(csv), "training")
    # The validation set with the model's scores on it: the reference of prediction drift.
    rows = sample(500, seed=2)
    scored = root / "src" / "validation.csv"
    scored.write_text(
        ",".join([*FEATURES, "score"])
        + "\n"
        + "".join(",".join([*map(str, r), str(r[0] / 10)]) + "\n" for r in rows.tolist())
    )
    client.log_artifact(with_data.info.run_id, str(scored), "training")
    without = client.create_run(experiment)
    client.create_registered_model("fraud")
    client.create_model_version("fraud", "file:///m/1", run_id=with_data.info.run_id)
    client.create_model_version("fraud", "file:///m/2", run_id=without.info.run_id)
    # v3: a real model directory whose MLmodel declares a signature (f0..f4 double, kind text)
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import infer_signature

    frame = pd.DataFrame({**{f: [0.5] for f in FEATURES}, "kind": ["a"]})
    model_dir = root / "model3"
    mlflow.pyfunc.save_model(
        model_dir,
        python_model=Constant(),
        signature=infer_signature(frame, [0.0]),
        pip_requirements=[],
    )
    client.create_model_version("fraud", model_dir.as_uri(), run_id=with_data.info.run_id)
    return uri


class Constant(PythonModel):
    def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
        return [0.0] * len(model_input)


def monitoring(**reference: str) -> Monitoring:
    return Monitoring.model_validate({"reference": {"kind": "mlflow", **reference}})


def test_the_training_artifact_of_the_served_version_is_the_reference(store: str) -> None:
    profile = load_reference(
        monitoring(artifact="training/reference.csv"),
        reference_dir=None,
        registry=MlflowRegistry(store),
        model_name="fraud",
        version="1",
    )
    assert sorted(profile.features) == list(FEATURES)
    assert profile.rows == 2000
    assert profile.source == "mlflow models:/fraud/1 run artifact training/reference.csv"


def test_a_version_whose_run_lacks_the_artifact_is_a_clear_error(store: str) -> None:
    with pytest.raises(BadInput, match=r"models:/fraud/2: cannot read run artifact"):
        load_reference(
            monitoring(artifact="training/reference.csv"),
            reference_dir=None,
            registry=MlflowRegistry(store),
            model_name="fraud",
            version="2",
        )


def test_watched_features_missing_from_the_reference_are_named(store: str) -> None:
    mon = Monitoring.model_validate(
        {
            "reference": {"kind": "mlflow", "artifact": "training/reference.csv"},
            "features": ["f0", "amount"],
        }
    )
    with pytest.raises(BadInput, match=r"no numeric values for feature\(s\) amount"):
        load_reference(
            mon, reference_dir=None, registry=MlflowRegistry(store), model_name="fraud", version="1"
        )


def test_file_references_need_the_operators_directory(tmp_path: Path) -> None:
    mon = Monitoring.model_validate({"reference": {"kind": "dataset", "path": "ref.csv"}})
    with pytest.raises(BadInput, match="--monitor-reference-dir"):
        load_reference(mon, reference_dir=None, registry=None, model_name="fraud", version="1")
    write_reference(tmp_path / "ref.csv", sample(100, seed=1))
    profile = load_reference(
        mon, reference_dir=tmp_path, registry=None, model_name="fraud", version="1"
    )
    assert profile.source == "dataset ref.csv"


def test_the_model_signature_comes_with_an_mlflow_reference(store: str) -> None:
    profile = load_reference(
        monitoring(artifact="training/reference.csv"),
        reference_dir=None,
        registry=MlflowRegistry(store),
        model_name="fraud",
        version="3",
    )
    assert profile.signature == Signature({**dict.fromkeys(FEATURES, "double"), "kind": "string"})
    assert profile.signature_note == ""


def test_an_unreadable_signature_is_said_not_raised(store: str) -> None:
    profile = load_reference(
        monitoring(artifact="training/reference.csv"),
        reference_dir=None,
        registry=MlflowRegistry(store),
        model_name="fraud",
        version="1",  # its source, file:///m/1, holds no MLmodel
    )
    assert profile.signature is None
    assert profile.signature_note.startswith("schema not checked: cannot read the signature")


def test_a_run_artifacts_prediction_column_is_the_prediction_reference(store: str) -> None:
    profile = load_reference(
        monitoring(artifact="training/validation.csv", prediction_column="score"),
        reference_dir=None,
        registry=MlflowRegistry(store),
        model_name="fraud",
        version="1",
    )
    assert sorted(profile.features) == list(FEATURES)  # the scores are not a feature
    assert profile.prediction is not None
    assert profile.prediction.rows == 500
    assert profile.prediction_note == ""
    # Without the column named, the same file gives no prediction reference, and says so.
    plain = load_reference(
        monitoring(artifact="training/validation.csv"),
        reference_dir=None,
        registry=MlflowRegistry(store),
        model_name="fraud",
        version="1",
    )
    assert plain.prediction is None
    assert "score" in plain.features  # a numeric column like any other
    assert "prediction_column" in plain.prediction_note

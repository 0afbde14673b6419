"""A model replica's warm-up (controller/serving/warmup.py) on real MLflow pyfunc models saved in
a temp dir (no cluster): what it predicts on, and that nothing it meets stops a model loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow.models import ModelSignature, infer_signature
from mlflow.types import ColSpec, Schema

from controller.cluster.render import RenderSettings, render_version_app
from controller.registry.mlflow import ResolvedModel
from controller.serving.model import build
from controller.serving.warmup import DEFAULT_WARMUP_PREDICTIONS, warm, warmup_input
from controller.spec.manifest import load_manifests


class Recorder(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Remembers what it was asked (in a file: a loaded model is a copy) and can refuse."""

    def __init__(self, log: str, refuse: bool = False) -> None:
        self.log, self.refuse = log, refuse

    def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
        with open(self.log, "a") as f:
            f.write(
                f"{len(model_input)} {list(model_input.columns)} {model_input.iloc[0].tolist()}\n"
            )
        if self.refuse:
            raise ValueError("zeros are not a valid input")
        return np.zeros(len(model_input))


def saved(tmp_path: Path, signature: Any = None, example: Any = None, refuse: bool = False) -> Any:
    log = tmp_path / "asked.txt"
    log.touch()
    path = tmp_path / "model"
    mlflow.pyfunc.save_model(
        path,
        python_model=Recorder(str(log), refuse),
        signature=signature,
        input_example=example,
    )
    model = mlflow.pyfunc.load_model(str(path))
    log.write_text("")  # MLflow predicts on an input example once while saving it
    return model, log


FRAME = pd.DataFrame({"amount": [12.5, 3.0], "count": np.array([1, 2], dtype="int64")})


def test_a_model_with_a_signature_and_no_example_is_warmed_on_one_zero_row(
    tmp_path: Path,
) -> None:
    model, log = saved(tmp_path, signature=infer_signature(FRAME, np.zeros(2)))
    done = warm(model)
    assert (done.predictions, done.source, done.error) == (
        DEFAULT_WARMUP_PREDICTIONS,
        "signature zeros",
        "",
    )
    asked = log.read_text().splitlines()
    assert asked == ["1 ['amount', 'count'] [0.0, 0.0]"] * DEFAULT_WARMUP_PREDICTIONS
    assert "warmed with 3 predictions on the signature zeros" in done.line()


def test_the_logged_input_example_is_preferred_to_zeros(tmp_path: Path) -> None:
    model, log = saved(tmp_path, signature=infer_signature(FRAME, np.zeros(2)), example=FRAME)
    done = warm(model, 2)
    assert (done.predictions, done.source) == (2, "input example")
    assert log.read_text().splitlines() == ["2 ['amount', 'count'] [12.5, 1.0]"] * 2


def test_a_model_refusing_the_warmup_input_still_loads_and_says_why(tmp_path: Path) -> None:
    model, _ = saved(tmp_path, signature=infer_signature(FRAME, np.zeros(2)), refuse=True)
    done = warm(model)
    assert done.predictions == 0
    assert "ValueError: zeros are not a valid input" in done.error
    assert done.line().startswith("warm-up skipped after 0 predictions")


@pytest.mark.parametrize(
    ("signature", "why"),
    [
        (None, "no input example and no signature"),
        (
            ModelSignature(inputs=Schema([ColSpec("string", "name")])),
            "no input example; column name of type string has no zero",
        ),
    ],
)
def test_nothing_to_warm_with_is_said_not_guessed(tmp_path: Path, signature: Any, why: str) -> None:
    model, log = saved(tmp_path, signature=signature)
    assert warmup_input(model) == (None, why)
    done = warm(model)
    assert (done.predictions, done.source) == (0, why)
    assert log.read_text() == ""


def test_zero_turns_it_off(tmp_path: Path) -> None:
    model, log = saved(tmp_path, signature=infer_signature(FRAME, np.zeros(2)))
    assert warm(model, 0).line() == "no warm-up (turned off)"
    assert log.read_text() == ""


SPEC = """\
apiVersion: serveops.dev/v1alpha1
kind: ModelDeployment
metadata: {name: fraud, environment: staging, owner: risk}
spec:
  route: /fraud
  model: models:/fraud/7
"""


def rendered_args(server: str = "") -> dict[str, Any]:
    text = SPEC + (f"  server: {{{server}}}\n" if server else "")
    [manifest] = load_manifests({"deployments/staging/fraud.yaml": text}, "staging")
    model = ResolvedModel(uri="models:/fraud/7", name="fraud", version="7")
    return render_version_app(manifest.deployment, model, RenderSettings())["args"]


def test_the_rendered_args_carry_warmup_only_when_the_spec_sets_it() -> None:
    assert "warmup" not in rendered_args()  # configs rendered before it existed do not change
    assert rendered_args("warmup: 0")["warmup"] == 0
    assert rendered_args("warmup: 10")["warmup"] == 10


def test_the_server_builder_passes_the_warmup_on() -> None:
    bound = build({"model_uri": "models:/fraud/7", "version": "7", "warmup": 5})
    assert bound._bound_deployment.init_args == ("models:/fraud/7", "7", 5)
    default = build({"model_uri": "models:/fraud/7", "version": "7"})
    assert default._bound_deployment.init_args[2] == DEFAULT_WARMUP_PREDICTIONS

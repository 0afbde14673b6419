"""Scoring a batch with a model: what each of a run's actors does (the model loaded once per
actor), and what the promotion check does with both versions."""

from __future__ import annotations

from typing import Any

from controller.batch.request import RunRequest


class Scorer:
    """One per actor: loads the model once, then scores batches (pandas DataFrames)."""

    def __init__(self, request_json: str, model_uri: str) -> None:
        request = RunRequest.model_validate_json(request_json)
        self.model = load_model(model_uri, request.tracking_uri)
        self.input = request.input
        self.output = request.output

    def __call__(self, batch: Any) -> Any:
        return score(self.model, batch, self.input.columns, self.output)


def load_model(model_uri: str, tracking_uri: str | None) -> Any:
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    return mlflow.pyfunc.load_model(model_uri)


def features(batch: Any, columns: list[str] | None, id_column: str | None) -> Any:
    if columns is not None:
        missing = [c for c in columns if c not in batch.columns]
        if missing:
            raise KeyError(f"input has no column(s) {missing}")
        return batch[columns]
    return batch.drop(columns=[id_column]) if id_column else batch


def score(model: Any, batch: Any, columns: list[str] | None, output: Any) -> Any:
    """A batch of input rows -> the output rows: the id (when declared) and the prediction."""
    import numpy as np
    import pandas as pd

    predictions = model.predict(features(batch, columns, output.id_column))
    if isinstance(predictions, pd.DataFrame):
        predictions = predictions.iloc[:, 0]
    out = pd.DataFrame({output.prediction_column: np.asarray(predictions).reshape(len(batch))})
    if output.id_column:
        out.insert(0, output.id_column, batch[output.id_column].to_numpy())
    return out

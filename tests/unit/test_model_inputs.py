"""The model server's request parsing: the fast path builds the frame MLflow builds (no cluster)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from mlflow.pyfunc.scoring_server import infer_and_parse_data
from sklearn.datasets import load_breast_cancer

from controller.serving.inputs import InputParser

DATA = load_breast_cancer(as_frame=True).data
SCHEMA = infer_signature(DATA, np.zeros(len(DATA), dtype=int)).inputs  # 30 double columns
PARSER = InputParser(SCHEMA)


def split(rows: pd.DataFrame, **extra: Any) -> dict[str, Any]:
    return {"dataframe_split": {**rows.to_dict(orient="split"), **extra}}


@pytest.mark.parametrize(
    "payload",
    [
        split(DATA.iloc[[5, 7, 10]]),  # with an index, as clients send pandas' split
        {"dataframe_split": {"columns": list(DATA.columns), "data": DATA.iloc[:4].values.tolist()}},
        # Integers where the signature says double: cast, as MLflow casts them.
        {"dataframe_split": {"columns": list(DATA.columns), "data": [list(range(30))] * 2}},
        # Columns in another order than the signature's.
        split(DATA.iloc[:3][list(reversed(DATA.columns))]),
    ],
)
def test_fast_path_builds_the_frame_mlflow_builds(payload: dict[str, Any]) -> None:
    fast = PARSER.fast_frame(payload)
    assert fast is not None
    pd.testing.assert_frame_equal(fast, infer_and_parse_data(payload, SCHEMA))


def bad(change: str) -> dict[str, Any]:
    payload = split(DATA.iloc[:2])
    body = payload["dataframe_split"]
    if change == "string value":
        body["data"][0][3] = "12.5"
    elif change == "null value":
        body["data"][1][0] = None
    elif change == "bool value":
        body["data"] = [[True] * 30, [False] * 30]
    elif change == "missing column":
        body["columns"] = body["columns"][:-1]
        body["data"] = [row[:-1] for row in body["data"]]
    elif change == "unknown column":
        body["columns"][0] = "surprise"
    elif change == "ragged rows":
        body["data"][1] = body["data"][1][:5]
    elif change == "records format":
        return {"dataframe_records": DATA.iloc[:2].to_dict(orient="records")}
    return payload


@pytest.mark.parametrize(
    "change",
    [
        "string value",
        "null value",
        "bool value",
        "missing column",
        "unknown column",
        "ragged rows",
        "records format",
    ],
)
def test_anything_but_a_plain_numeric_matrix_goes_through_mlflow(change: str) -> None:
    payload = bad(change)
    assert PARSER.fast_frame(payload) is None
    try:
        expected = infer_and_parse_data(payload, SCHEMA)
    except Exception as err:  # MLflow's own error reaches the client, as before
        with pytest.raises(type(err)):
            PARSER.parse(payload)
    else:
        pd.testing.assert_frame_equal(PARSER.parse(payload), expected)


def test_no_fast_path_without_a_signature_or_with_mixed_types() -> None:
    payload = split(DATA.iloc[:2])
    assert InputParser(None).fast_frame(payload) is None
    mixed = DATA.iloc[:5].assign(
        **{"mean radius": DATA["mean radius"].iloc[:5].round().astype(int)}
    )
    mixed_schema = infer_signature(mixed, [0] * 5).inputs  # one long column among doubles
    assert InputParser(mixed_schema).fast_frame(split(mixed)) is None

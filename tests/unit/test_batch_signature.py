"""The batch input's columns against the model's logged signature (pure; the command on a
real MLflow store is in tests/e2e/test_batch.py)."""

from __future__ import annotations

import pytest

from controller.batch.inputs import InputInfo, check_signature
from controller.errors import BadInput
from controller.spec.batch import BatchSpec


def spec(columns: list[str] | None = None) -> BatchSpec:
    data: dict[str, object] = {"uri": "/in.csv", "format": "csv"}
    if columns is not None:
        data["columns"] = columns
    return BatchSpec.model_validate(
        {"model": "models:/m/1", "input": data, "output": {"uri": "/o", "id_column": "id"}}
    )


def test_columns_the_signature_takes_pass() -> None:
    check_signature(spec(), InputInfo(1, ["id", "a", "b"]), "models:/m/1", ["a", "b"], "f:3")
    # Named columns pick what the model takes out of a wider table.
    wide = InputInfo(1, ["id", "a", "b", "notes"])
    check_signature(spec(["a", "b"]), wide, "models:/m/1", ["a", "b"], "f:3")


def test_missing_and_extra_columns_are_named() -> None:
    with pytest.raises(BadInput) as err:
        check_signature(spec(), InputInfo(1, ["id", "a", "c"]), "models:/m/1", ["a", "b"], "f:3")
    assert err.value.message == (
        "f:3: the input does not match models:/m/1's signature: it lacks 'b'; it has 'c' the "
        "model does not take (name them in input.columns)"
    )


def test_nothing_to_check_without_a_read_input_or_named_inputs() -> None:
    check_signature(spec(), InputInfo(0, None), "models:/m/1", ["a"], "f:3")  # object store
    check_signature(spec(), InputInfo(1, ["id", "x"]), "models:/m/1", None, "f:3")  # no names

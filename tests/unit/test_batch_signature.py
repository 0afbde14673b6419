"""The batch input's columns against the model's logged signature (pure; the command on a
real MLflow store is in tests/e2e/test_batch.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.batch.inputs import MAX_HEAD_BYTES, InputInfo, check_input, check_signature
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


# --- kinds: the values a column holds against the signature's types ------------------------

TYPES = {"a": "double", "b": "long", "label": "string"}


def read(tmp_path: Path, fmt: str, text: str | bytes) -> InputInfo:
    path = tmp_path / f"in.{fmt}"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    s = BatchSpec.model_validate(
        {"model": "models:/m/1", "input": {"uri": str(path), "format": fmt},
         "output": {"uri": "/o", "id_column": "id"}}
    )  # fmt: skip
    return check_input(s, "f:5")


def test_csv_kinds_come_from_the_first_rows_and_text_in_a_number_column_is_refused(
    tmp_path: Path,
) -> None:
    info = read(tmp_path, "csv", "id,a,b,label\n1,0.5,3,yes\n2,,4,no\n3,1e-3,5,7\n")
    # An empty cell says nothing; a number among words is text (pandas reads it so).
    assert dict(info.kinds) == {"id": "number", "a": "number", "b": "number", "label": "text"}
    check_signature(spec(), info, "models:/m/1", TYPES, "f:5")  # all fit

    bad = read(tmp_path, "csv", "id,a,b,label\n1,0.5,3,x\n2,n/a,4,y\n")
    with pytest.raises(BadInput) as err:
        check_signature(spec(), bad, "models:/m/1", TYPES, "f:5")
    assert err.value.message == (
        "f:5: the input does not match models:/m/1's signature: 'a' holds text values, the "
        "model takes double"
    )


def test_jsonl_and_parquet_kinds_are_checked_too(tmp_path: Path) -> None:
    row = {"id": 1, "a": "0.5", "b": True, "label": "x"}
    info = read(tmp_path, "jsonl", json.dumps(row) + "\n")
    with pytest.raises(BadInput) as err:
        check_signature(spec(), info, "models:/m/1", TYPES, "f:5")
    assert "'a' holds text values, the model takes double" in err.value.message
    assert "'b' holds boolean values, the model takes long" in err.value.message

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": [1], "a": [0.5], "b": pa.array([3], pa.int32()), "label": [1.0]})
    pq.write_table(table, tmp_path / "in.parquet")
    info = check_input(
        BatchSpec.model_validate(
            {"model": "models:/m/1", "input": {"uri": str(tmp_path / "in.parquet"),
             "format": "parquet"}, "output": {"uri": "/o", "id_column": "id"}}
        ),
        "f:5",
    )  # fmt: skip
    assert dict(info.kinds) == {"id": "number", "a": "number", "b": "number", "label": "number"}
    with pytest.raises(BadInput) as err:
        check_signature(spec(), info, "models:/m/1", TYPES, "f:5")
    assert err.value.message.endswith("'label' holds number values, the model takes string")


def test_types_the_check_does_not_know_and_columns_of_nulls_pass(tmp_path: Path) -> None:
    info = read(tmp_path, "csv", "id,a,b,label\n1,,2020-01-01,\n")
    assert dict(info.kinds) == {"id": "number", "b": "text"}  # a and label: nothing seen
    types = {"a": "double", "b": "datetime", "label": "string"}
    check_signature(spec(["a", "b", "label"]), info, "models:/m/1", types, "f:5")


def test_a_head_cut_mid_row_reads_only_whole_rows(tmp_path: Path) -> None:
    """The bounded head ends inside a row, just after `1e` of `1e5`: that row is not judged
    (its cut cell would read as text, and the column with it)."""
    text = "id,label,a,b\n" + "".join(f"{i},{'w' * 1500},1e5,3\n" for i in range(170))
    first = f"170,{'w' * (MAX_HEAD_BYTES - len(text) - len('170,') - len(',1e'))},1e"
    text += first + "5,3\n" + "171,w,1e5,3\n"
    assert text.encode()[:MAX_HEAD_BYTES].endswith(b",1e")
    info = read(tmp_path, "csv", text)
    assert dict(info.kinds) == {"id": "number", "label": "text", "a": "number", "b": "number"}


def test_a_csv_field_over_the_readers_limit_is_a_clear_error(tmp_path: Path) -> None:
    """Python's csv refuses a field over 128 KiB: bad input naming the file, not a crash."""
    with pytest.raises(BadInput) as err:
        read(tmp_path, "csv", "id,a\n1," + "9" * 200_000 + "\n")
    assert err.value.message.startswith(f"f:5: cannot read {tmp_path / 'in.csv'} as CSV: field")

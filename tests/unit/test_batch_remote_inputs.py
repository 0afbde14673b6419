"""Object-store batch inputs read at plan time (`batch plan --remote-inputs`): through
pyarrow's filesystems, within a deadline. The store is a fake behind pyarrow's own interface
(a SubTreeFileSystem over a temporary folder stands in for `s3://bucket/`); the command and its
sample check run for real on a real MLflow store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from controller.batch import storage
from controller.batch.inputs import check_input
from controller.cli.main import app
from controller.errors import BadInput
from controller.spec.batch import BatchSpec
from tests.batch_support import FILE, batch_yaml, breast_cancer_csv
from tests.support import commit, git, make_repo

BUCKET = "s3://bucket"


@pytest.fixture
def bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`s3://bucket/...` served from a local folder through pyarrow's filesystem interface."""
    root = tmp_path / "bucket"
    root.mkdir()
    real = storage.filesystem

    def filesystem(uri: str) -> tuple[Any, str]:
        if uri.startswith(f"{BUCKET}/"):
            return pafs.SubTreeFileSystem(str(root), pafs.LocalFileSystem()), uri[len(BUCKET) + 1 :]
        return real(uri)

    monkeypatch.setattr(storage, "filesystem", filesystem)
    return root


def spec(uri: str, fmt: str = "parquet", columns: list[str] | None = None) -> BatchSpec:
    data: dict[str, Any] = {"uri": uri, "format": fmt}
    if columns:
        data["columns"] = columns
    return BatchSpec.model_validate(
        {"model": "models:/m/1", "input": data, "output": {"uri": "/o", "id_column": "id"}}
    )


def test_a_remote_folder_is_listed_and_its_first_files_schema_read(bucket: Path) -> None:
    (bucket / "in").mkdir()
    table = pa.table({"id": [1, 2], "a": [0.5, 1.5], "label": ["x", "y"]})
    for name in ("part-1.parquet", "part-0.parquet", ".hidden.parquet"):
        pq.write_table(table, bucket / "in" / name)
    (bucket / "in" / "_SUCCESS").write_text("")
    info = check_input(spec(f"{BUCKET}/in"), "f:6", remote=True)
    assert (info.files, info.columns) == (2, ["id", "a", "label"])  # `_`, `.` files left out
    assert dict(info.kinds) == {"id": "number", "a": "number", "label": "text"}
    # Without `remote` nothing is read: the job's to check.
    assert check_input(spec(f"{BUCKET}/in"), "f:6").columns is None
    with pytest.raises(BadInput) as err:
        check_input(spec(f"{BUCKET}/in", columns=["a", "amount"]), "f:6", remote=True)
    assert err.value.message.startswith("f:6: the input in/part-0.parquet has no column(s) amount")


def test_a_missing_or_empty_remote_input_is_a_clear_error(bucket: Path) -> None:
    with pytest.raises(BadInput) as err:
        check_input(spec(f"{BUCKET}/nowhere"), "f:6", remote=True)
    assert err.value.message == f"f:6: the input {BUCKET}/nowhere does not exist"
    (bucket / "empty").mkdir()
    (bucket / "empty" / "notes.txt").write_text("")
    with pytest.raises(BadInput) as err:
        check_input(spec(f"{BUCKET}/empty"), "f:6", remote=True)
    assert err.value.message == f"f:6: the input {BUCKET}/empty holds no parquet file"


def test_a_store_that_does_not_answer_is_an_error_within_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Hanging:
        def get_file_info(self, path: str) -> Any:
            time.sleep(5)

    monkeypatch.setattr(storage, "filesystem", lambda uri: (Hanging(), "in"))
    began = time.monotonic()
    with pytest.raises(BadInput) as err:
        check_input(spec(f"{BUCKET}/in"), "f:6", remote=True, deadline_s=0.3)
    assert err.value.message == f"f:6: the input {BUCKET}/in did not answer within 0.3s"
    assert time.monotonic() - began < 4  # the plan went on; the hung call was left behind


def test_pyarrows_errors_name_the_input(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(uri: str) -> Any:
        raise OSError("AWS Error ACCESS_DENIED during HeadObject operation")

    monkeypatch.setattr(storage, "filesystem", refuse)
    with pytest.raises(BadInput) as err:
        check_input(spec(f"{BUCKET}/in"), "f:6", remote=True)
    assert err.value.message == (
        f"f:6: cannot read the input {BUCKET}/in: AWS Error ACCESS_DENIED during HeadObject "
        "operation"
    )


def test_batch_plan_with_remote_inputs_runs_the_sample_check_on_the_store(
    tmp_path: Path, bucket: Path, batch_versions: tuple[str, list[str]]
) -> None:
    """Without --remote-inputs the comparison is `not-run`; with it, the same real scoring
    as for a local input, on rows read through the store's filesystem."""
    uri, (v1, _, v3) = batch_versions
    breast_cancer_csv(bucket)  # s3://bucket/scores-in.csv
    repo = tmp_path / "repo"
    make_repo(repo, {FILE: batch_yaml(v1, f"{BUCKET}/scores-in.csv")})
    base = git(repo, "rev-parse", "HEAD")
    commit(repo, {FILE: batch_yaml(v3, f"{BUCKET}/scores-in.csv")}, "v3")
    args = ["batch", "plan", "--env", "production", "--repo", str(repo), "--base", base]
    args += ["--registry-uri", uri, "--state", str(tmp_path / "none.db")]
    without = CliRunner().invoke(app, args)
    assert without.exit_code == 0, without.output
    assert "nightly: sample check: not-run: " in without.output
    with_remote = CliRunner().invoke(app, [*args, "--remote-inputs"])
    assert with_remote.exit_code == 0, with_remote.output
    assert "nightly: sample check: pass: agreement 100.0%" in with_remote.output

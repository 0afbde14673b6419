"""`serveops batch plan|run|runs`: bad input exits 2 naming file, line and field; plan changes
nothing; runs lists the store. Input checks are bounded (hostile inputs)."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.batch.inputs import MAX_HEAD_BYTES, check_input
from controller.cli.main import app
from controller.errors import BadInput
from controller.gitops.state import StateStore
from controller.gitops.state.batch import BatchRun
from controller.spec.batch import BatchSpec
from tests.support import commit, make_repo

runner = CliRunner()


def batch_yaml(input_uri: str, columns: str = "", id_column: str = "row_id") -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: serveops.dev/v1alpha1
        kind: BatchInference
        metadata: {{name: nightly, environment: staging, owner: ml}}
        spec:
          model: models:/fraud/1
          input:
            uri: {input_uri}
            format: csv
            {columns}
          output: {{uri: /tmp/serveops-never-written, id_column: {id_column}}}
          schedule: {{cron: "0 2 * * *"}}
        """
    )


@pytest.fixture(autouse=True)
def _no_ambient_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """`batch plan` resolves models only given a registry; these tests give none (a user's
    MLFLOW_TRACKING_URI would be one)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "in.csv"
    path.write_text("row_id,a,b\n1,0.5,2\n")
    return path


def repo_with(tmp_path: Path, text: str) -> Path:
    repo = tmp_path / "repo"
    make_repo(repo, {"deployments/staging/nightly.yaml": text})
    return repo


def test_plan_shows_what_runs_and_changes_nothing(tmp_path: Path, data: Path) -> None:
    repo = repo_with(tmp_path, batch_yaml(str(data)))
    state = tmp_path / "state.db"
    args = ["batch", "plan", "--env", "staging", "--repo", str(repo), "--state", str(state)]
    result = runner.invoke(app, [*args, "--at", "2026-12-02T02:01Z", "-o", "json"])
    assert result.exit_code == 0, result.output
    [item] = json.loads(result.output)["items"]
    assert item["action"] == "wait"  # never seen by a controller: new, runs from the next time
    assert item["next_at"] == "2026-12-03T02:00:00+00:00"
    assert item["changes"] == ["new"]
    assert not state.exists()


def test_plan_refuses_a_missing_input_or_column_at_its_line(tmp_path: Path, data: Path) -> None:
    repo = repo_with(tmp_path, batch_yaml(str(tmp_path / "nope.csv")))
    result = runner.invoke(app, ["batch", "plan", "--env", "staging", "--repo", str(repo)])
    assert result.exit_code == 2
    assert "deployments/staging/nightly.yaml:7: spec.input.uri: the input" in result.output
    assert "does not exist" in result.output
    commit(
        repo,
        {"deployments/staging/nightly.yaml": batch_yaml(str(data), "columns: [a, zz]")},
        "cols",
    )
    result = runner.invoke(app, ["batch", "plan", "--env", "staging", "--repo", str(repo)])
    assert result.exit_code == 2
    assert "has no column(s) zz" in result.output


def test_plan_reports_an_invalid_file_at_file_line_field(tmp_path: Path, data: Path) -> None:
    repo = repo_with(tmp_path, batch_yaml(str(data)).replace('"0 2 * * *"', '"0 25 * * *"'))
    result = runner.invoke(app, ["batch", "plan", "--env", "staging", "--repo", str(repo)])
    assert result.exit_code == 2
    assert "nightly.yaml:11: spec.schedule.cron: invalid cron expression" in result.output


def test_run_of_an_unknown_deployment_is_bad_input(tmp_path: Path, data: Path) -> None:
    repo = repo_with(tmp_path, batch_yaml(str(data)))
    args = ["batch", "run", "other", "--env", "staging", "--repo", str(repo)]
    result = runner.invoke(app, [*args, "--registry-uri", "sqlite:///x.db"])
    assert result.exit_code == 2
    assert "no batch deployment 'other' in deployments/staging/ (there: nightly)" in result.output


def test_runs_lists_the_store_and_checks_its_options(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    at = dt.datetime(2026, 12, 2, 2, tzinfo=dt.UTC)
    with StateStore(state) as store:
        store.claim_batch_run(
            BatchRun(
                "staging",
                "nightly",
                "20261202T020000Z",
                "schedule",
                at,
                "abc123",
                "models:/fraud/1",
                None,
                0,
                "succeeded",
                "j",
                "",
                569,
                "/out/run=20261202T020000Z",
                0.97,
                at,
                at,
                at + dt.timedelta(seconds=42),
                "{}",
            )
        )
    result = runner.invoke(
        app, ["batch", "runs", "nightly", "--env", "staging", "--state", str(state)]
    )
    assert result.exit_code == 0, result.output
    assert (
        "nightly 20261202T020000Z succeeded 569 rows in 42s agreement 97.0% models:/fraud/1"
        in result.output
    )
    bad = runner.invoke(
        app, ["batch", "runs", "--env", "staging", "--state", str(state), "--limit", "0"]
    )
    assert bad.exit_code == 2
    missing = runner.invoke(
        app, ["batch", "runs", "--env", "staging", "--state", str(tmp_path / "no.db")]
    )
    assert missing.exit_code == 2
    assert "no controller state here" in missing.output


def spec(uri: str, fmt: str = "csv") -> BatchSpec:
    return BatchSpec.model_validate(
        {"model": "models:/m/1", "input": {"uri": uri, "format": fmt}, "output": {"uri": "/o"}}
    )


def test_hostile_inputs_are_refused_after_a_bounded_read(tmp_path: Path) -> None:
    long_line = tmp_path / "long.csv"
    long_line.write_bytes(b"a" * (MAX_HEAD_BYTES * 8))  # no newline: a header that never ends
    with pytest.raises(BadInput, match=r"first line .* longer than"):
        check_input(spec(str(long_line)), "f.yaml:7: spec.input.uri")
    deep = tmp_path / "deep.jsonl"
    deep.write_text("[" * 100_000 + "\n")
    with pytest.raises(BadInput, match="not a JSON object"):
        check_input(spec(str(deep), "jsonl"), "f.yaml:7: spec.input.uri")
    fake = tmp_path / "fake.parquet"
    fake.write_bytes(b"PAR1" + b"\0" * 10 + (2**31).to_bytes(4, "little") + b"PAR1")
    with pytest.raises(BadInput, match=r"Parquet footer .* more than"):
        check_input(spec(str(fake), "parquet"), "f.yaml:7: spec.input.uri")
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(10_001):
        (folder / f"{i}.txt").touch()
    with pytest.raises(BadInput, match="more than 10000 entries"):
        check_input(spec(str(folder)), "f.yaml:7: spec.input.uri")

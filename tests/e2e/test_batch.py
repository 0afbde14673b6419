"""Batch inference on a real local Ray (2 CPUs, actors of 0.5 CPU) and the demo's MLflow model:
a scheduled run submitted as a Ray Job through the dashboard's REST API, scored on Ray Data,
its output committed with a manifest and checked row by row against in-process predictions;
the same run never submitted twice; a model change rejected by its sample check, leaving no
output and the previous version promoted."""

from __future__ import annotations

import datetime as dt
import json
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd

from controller.batch.jobs import RayJobs
from controller.batch.step import ENTRYPOINT, BatchEdges, batch_step
from controller.gitops.state import StateStore
from controller.registry.mlflow import MlflowRegistry
from controller.spec.batchfile import load_batches
from tests.e2e.conftest import Cluster, Registry

DUE = dt.datetime(2026, 12, 2, 2, tzinfo=dt.UTC)
ROWS = 300


def batch_yaml(data: Path, out: Path, model: str) -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: serveops.dev/v1alpha1
        kind: BatchInference
        metadata: {{name: nightly, environment: staging, owner: ml}}
        spec:
          model: {model}
          input: {{uri: {data}, format: csv}}
          output: {{uri: {out}, format: parquet, id_column: row_id}}
          schedule: {{cron: "0 2 * * *"}}
          resources: {{num_cpus: 0.5, batch_size: 100, concurrency: 2}}
          timeout: 5m
          retries: 0
          promotion: {{sample_rows: 200, min_agreement: 0.99}}
        """
    )


def until_done(edges: BatchEdges, batches: list, at: dt.datetime, limit_s: float = 90.0) -> None:  # type: ignore[type-arg]
    deadline = time.monotonic() + limit_s
    while edges.store.active_batch_runs("staging"):
        assert time.monotonic() < deadline, edges.store.active_batch_runs("staging")
        time.sleep(2.0)
        batch_step(edges, batches, "c0ffee", at)


def test_scheduled_run_on_ray_data_then_a_model_change_held_by_its_sample_check(
    cluster: Cluster, registry: Registry, tmp_path: Path
) -> None:
    import mlflow
    from sklearn.datasets import load_breast_cancer

    features = load_breast_cancer(as_frame=True).data.head(ROWS)
    table = features.copy()
    table.insert(0, "row_id", range(1000, 1000 + ROWS))
    data, out = tmp_path / "in.csv", tmp_path / "out"
    table.to_csv(data, index=False)
    files = {"deployments/staging/nightly.yaml": batch_yaml(data, out, "models:/breast-cancer/1")}
    batches = load_batches(files, "staging")
    clock = [DUE - dt.timedelta(hours=1)]
    store = StateStore(tmp_path / "state.db", clock=lambda: clock[0])
    jobs = RayJobs(cluster.address)
    mlflow_registry = MlflowRegistry(registry.tracking_uri)
    # The cluster's Python runs the job (its nodes import serveops from the venv).
    entrypoint = ENTRYPOINT.replace("python", sys.executable, 1)
    edges = BatchEdges(store, jobs, lambda: mlflow_registry, "staging", entrypoint=entrypoint)
    batch_step(edges, batches, "c0ffee", clock[0])  # first seen before 02:00

    # The scheduled run: submitted once, however many passes look at it.
    clock[0] = DUE + dt.timedelta(seconds=3)
    step = batch_step(edges, batches, "c0ffee", clock[0])
    assert step.submitted == ["nightly/20261202T020000Z"], step.errors
    assert batch_step(edges, batches, "c0ffee", clock[0]).submitted == []
    until_done(edges, batches, clock[0])
    [run] = store.batch_runs("staging")
    assert run.status == "succeeded", run.message
    assert run.rows == ROWS
    assert jobs.info(run.submission_id).status == "SUCCEEDED"  # type: ignore[union-attr]

    # Output and manifest, row by row against the same model in this process.
    final = out / "run=20261202T020000Z"
    manifest = json.loads((final / "_manifest.json").read_text())
    assert manifest["model"] == "models:/breast-cancer/1"
    assert (manifest["rows"], manifest["commit"]) == (ROWS, "c0ffee")
    scored = pd.read_parquet(final).sort_values("row_id").reset_index(drop=True)
    mlflow.set_tracking_uri(registry.tracking_uri)
    expected = mlflow.pyfunc.load_model("models:/breast-cancer/1").predict(features)
    assert scored["row_id"].tolist() == list(range(1000, 1000 + ROWS))
    assert scored["prediction"].tolist() == list(expected)
    assert list((out / "_staging").iterdir()) == []  # the staging folder was moved whole

    # A model change: v2 agrees with v1 on less than 99% of the sample -> rejected, no output.
    files = {"deployments/staging/nightly.yaml": batch_yaml(data, out, "models:/breast-cancer/2")}
    batches = load_batches(files, "staging")
    clock[0] = DUE + dt.timedelta(days=1, seconds=3)
    assert batch_step(edges, batches, "c0ffee", clock[0]).submitted == ["nightly/20261203T020000Z"]
    until_done(edges, batches, clock[0])
    latest = store.batch_runs("staging")[0]
    assert latest.status == "rejected", latest.message
    assert "predictions flipped" in latest.message  # the simulator's agreement check says why
    assert latest.previous_model_uri == "models:/breast-cancer/1"
    assert latest.agreement is not None
    assert latest.agreement < 0.99
    assert not (out / "run=20261203T020000Z").exists()
    assert store.promoted_models("staging") == {"nightly": "models:/breast-cancer/1"}
    jobs.close()
    store.close()


def test_plan_refuses_columns_the_registered_model_cannot_read(
    registry: Registry, tmp_path: Path
) -> None:
    """`serveops batch plan --registry-uri` reads the version's logged signature (a real
    MLflow store) and names the columns that do not match, at the file's `spec.input` line."""
    from sklearn.datasets import load_breast_cancer
    from typer.testing import CliRunner

    from controller.cli.main import app
    from tests.support import make_repo

    table = load_breast_cancer(as_frame=True).data.head(5)
    table.insert(0, "row_id", range(5))
    data = tmp_path / "in.csv"
    table.rename(columns={"mean radius": "radius"}).to_csv(data, index=False)
    repo = tmp_path / "repo"
    text = batch_yaml(data, tmp_path / "out", "models:/breast-cancer/1")
    make_repo(repo, {"deployments/staging/nightly.yaml": text})
    args = ["batch", "plan", "--env", "staging", "--repo", str(repo)]
    args += ["--registry-uri", registry.tracking_uri, "--state", str(tmp_path / "state.db")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert (
        "deployments/staging/nightly.yaml:6: spec.input: the input does not match "
        "models:/breast-cancer/1's signature: it lacks 'mean radius'; it has 'radius'"
    ) in result.output
    table.to_csv(data, index=False)
    assert CliRunner().invoke(app, args).exit_code == 0


def test_plan_runs_a_model_changes_sample_check_on_the_local_input(
    registry: Registry, tmp_path: Path
) -> None:
    """After a committed run of v1, a file moved to v2 plans with v2's sample check run here,
    on the local input, against the real registry: v2 flips predictions, so exit 1 and why."""
    from sklearn.datasets import load_breast_cancer
    from typer.testing import CliRunner

    from controller.cli.main import app
    from controller.gitops.state.batch import BatchRun
    from tests.support import make_repo

    table = load_breast_cancer(as_frame=True).data.head(ROWS)
    table.insert(0, "row_id", range(ROWS))
    data = tmp_path / "in.csv"
    table.to_csv(data, index=False)
    repo = tmp_path / "repo"
    text = batch_yaml(data, tmp_path / "out", "models:/breast-cancer/2")
    make_repo(repo, {"deployments/staging/nightly.yaml": text})
    state = tmp_path / "state.db"
    run = BatchRun(
        "staging", "nightly", "20261201T020000Z", "schedule", DUE, "c0", "models:/breast-cancer/1",
        None, 0, "succeeded", "j", "", ROWS, "/o", None, DUE, DUE, DUE, "{}",
    )  # fmt: skip
    with StateStore(state) as store:
        store.claim_batch_run(run)
    args = ["batch", "plan", "--env", "staging", "--repo", str(repo), "--state", str(state)]
    args += ["--registry-uri", registry.tracking_uri, "--at", "2026-12-02T01:00Z"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "model models:/breast-cancer/1 -> models:/breast-cancer/2" in result.output
    assert "nightly: sample check: fail: models:/breast-cancer/2 agrees with" in (result.output)
    assert "predictions flipped" in result.output
    skipped = CliRunner().invoke(app, [*args, "--no-compare"])
    assert skipped.exit_code == 0, skipped.output
    assert "nightly: sample check:" not in skipped.output

"""The direct MLflow readers against MLflow itself: a real SQLite store written by MlflowClient,
and a real `mlflow server` in front of it. Each reader must return what MlflowClient returns,
so `serveops` can skip importing MLflow without changing a single answer."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controller.dev.localray import free_port, kill_tree
from controller.registry.direct import (
    SQLITE_SCHEMA_REVISION,
    RestReader,
    SqliteReader,
    direct_reader,
)
from controller.registry.mlflow import MlflowRegistry, ModelNotFound

MODEL = "direct-read"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store with three versions: 1 (run with metrics, params, tags), 2 (aliased), 3 deleted."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("direct", artifact_location=str(root / "art"))
    run = client.create_run(experiment, tags={"source_commit": "abc123"})
    client.log_metric(run.info.run_id, "auc", 0.97)
    client.log_metric(run.info.run_id, "auc", 0.98)  # latest value wins
    client.log_metric(run.info.run_id, "loss", float("nan"))
    client.log_param(run.info.run_id, "depth", "4")
    client.set_terminated(run.info.run_id)
    client.create_registered_model(MODEL)
    client.create_model_version(
        MODEL, "file:///m/1", run_id=run.info.run_id, tags={"data_hash": "d1"}, description="one"
    )
    client.create_model_version(MODEL, "file:///m/2")
    client.create_model_version(MODEL, "file:///m/3")
    client.set_registered_model_alias(MODEL, "champion", "2")
    client.set_registered_model_alias(MODEL, "also", "2")
    client.delete_model_version(MODEL, "3")
    return uri


def through_client(uri: str) -> MlflowRegistry:
    """The same registry with the direct reader turned off: MlflowClient answers."""
    registry = MlflowRegistry(uri)
    registry._direct = None
    return registry


REFERENCES = [f"models:/{MODEL}/1", f"models:/{MODEL}/2", f"models:/{MODEL}@champion"]
MISSING = [
    f"models:/{MODEL}/9",
    f"models:/{MODEL}/3",  # deleted
    f"models:/{MODEL}@nobody",
    "models:/no-such-model/1",
    "models:/no-such-model@champion",
]


def same_answers(direct: MlflowRegistry, client: MlflowRegistry) -> None:
    for ref in REFERENCES:
        assert direct.resolve(ref) == client.resolve(ref)
        ours, theirs = direct.describe(ref), client.describe(ref)
        # NaN != NaN: compare the metric separately
        assert str(ours.run_metrics.pop("loss", None)) == str(theirs.run_metrics.pop("loss", None))
        assert ours == theirs
    for ref in MISSING:
        with pytest.raises(ModelNotFound):
            direct.resolve(ref)
        with pytest.raises(ModelNotFound):
            client.resolve(ref)


def test_store_written_by_pinned_mlflow_has_the_schema_the_reader_knows(store: str) -> None:
    # Fails when an MLflow upgrade changes the SQL schema: re-check the reader's queries, then
    # update SQLITE_SCHEMA_REVISION. Until then the reader declines and MlflowClient answers.
    with sqlite3.connect(store.removeprefix("sqlite:///")) as db:
        (revision,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
    assert revision == SQLITE_SCHEMA_REVISION
    assert isinstance(direct_reader(store), SqliteReader)


def test_sqlite_reader_answers_like_mlflow_client(store: str) -> None:
    direct = MlflowRegistry(store)
    same_answers(direct, through_client(store))
    assert isinstance(direct._direct, SqliteReader)  # it never had to fall back
    record = direct.describe(f"models:/{MODEL}/1")
    assert record.run_metrics["auc"] == 0.98
    assert record.run_params == {"depth": "4"}
    assert record.tags == {"data_hash": "d1"}
    assert direct.describe(f"models:/{MODEL}/2").aliases == ["also", "champion"]


def test_latest_alias_falls_back_to_mlflow_client(store: str) -> None:
    registry = MlflowRegistry(store)
    assert registry.resolve(f"models:/{MODEL}@latest").version == "2"  # 3 is deleted
    assert registry._direct is None


def test_resolving_a_sqlite_store_does_not_import_mlflow(store: str) -> None:
    code = (
        "import sys\n"
        "from controller.registry.mlflow import MlflowRegistry\n"
        f"r = MlflowRegistry({store!r})\n"
        f"print(r.describe('models:/{MODEL}@champion').version)\n"
        "print('mlflow' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert out.stdout.split() == ["2", "False"]


@pytest.fixture(scope="module")
def server(store: str) -> Iterator[str]:
    """A real `mlflow server` on the store, stopped with all its worker processes."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            store,
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, "mlflow server exited"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            pytest.fail("mlflow server did not start in 120 s")
        yield url
    finally:
        kill_tree(proc.pid)
        proc.wait(timeout=10)


def test_rest_reader_answers_like_mlflow_client(server: str) -> None:
    direct = MlflowRegistry(server)
    assert isinstance(direct._direct, RestReader)
    same_answers(direct, through_client(server))
    assert isinstance(direct._direct, RestReader)  # never fell back


def test_unreachable_server_fails_fast_with_the_address() -> None:
    from controller.errors import Unreachable

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Unreachable, match=url):
        MlflowRegistry(url).resolve(f"models:/{MODEL}/1")

"""The batch step against a fake Ray Jobs API and a real SQLite store: submission, polling,
retries, timeouts, and idempotence across controller restarts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx
import pytest

from controller.batch.jobs import MAX_LOG_BYTES, JobInfo, JobSpec, RayJobs
from controller.batch.request import RunRequest, RunResult, parse_result
from controller.batch.step import BatchEdges, batch_step
from controller.errors import ServeopsError
from controller.gitops.state import BatchRun, StateStore
from controller.registry.mlflow import FixedRegistry, Registry
from controller.spec.batchfile import BatchManifest, load_batches

UTC = dt.UTC
DUE = dt.datetime(2026, 12, 2, 2, tzinfo=UTC)
FILE = """\
apiVersion: serveops.dev/v1alpha1
kind: BatchInference
metadata: {{name: nightly, environment: staging, owner: ml}}
spec:
  model: models:/fraud@champion
  input: {{uri: /data/in, format: csv}}
  output: {{uri: /data/out, id_column: id}}
  schedule: {{cron: "0 2 * * *"}}
  timeout: 10m
  retries: {retries}
"""


class FakeJobs:
    """The Jobs API's behaviour that matters: ids are unique, jobs end as told."""

    address = "http://fake:8265"

    def __init__(self) -> None:
        self.jobs: dict[str, JobSpec] = {}
        self.status: dict[str, str] = {}
        self.log: dict[str, str] = {}
        self.stopped: list[str] = []
        self.submits = 0
        self.down = False

    def submit(self, job: JobSpec) -> bool:
        if self.down:
            raise ServeopsError("cannot reach the Ray dashboard")
        self.submits += 1
        if job.submission_id in self.jobs:
            return False
        self.jobs[job.submission_id] = job
        self.status[job.submission_id] = "RUNNING"
        return True

    def info(self, submission_id: str) -> JobInfo | None:
        if submission_id not in self.jobs:
            return None
        return JobInfo(submission_id, self.status[submission_id])  # type: ignore[arg-type]

    def logs(self, submission_id: str) -> str:
        return self.log.get(submission_id, "")

    def stop(self, submission_id: str) -> None:
        self.stopped.append(submission_id)
        self.status[submission_id] = "STOPPED"

    def finish(self, submission_id: str, result: RunResult, status: str = "SUCCEEDED") -> None:
        self.status[submission_id] = status
        self.log[submission_id] = f"some output\n{result.line()}\n"


def registry(version: str = "1") -> Registry:
    return FixedRegistry({"fraud": {"1": "1", "2": "2", "@champion": version}}, "sqlite:///m.db")


class World:
    def __init__(self, tmp_path: Path, retries: int = 1) -> None:
        self.path = tmp_path / "state.db"
        self.now = DUE - dt.timedelta(hours=12)
        self.store = StateStore(self.path, clock=lambda: self.now)
        self.jobs = FakeJobs()
        self.version = "1"
        self.notes: list[BatchRun] = []
        self.batches: list[BatchManifest] = load_batches(
            {"deployments/staging/nightly.yaml": FILE.format(retries=retries)}
        )

    def edges(self) -> BatchEdges:
        return BatchEdges(
            self.store,
            self.jobs,
            lambda: registry(self.version),
            "staging",
            notify=self.notes.append,
        )

    def step(self, at: dt.datetime):  # type: ignore[no-untyped-def]
        self.now = at
        return batch_step(self.edges(), self.batches, "c1", at)

    def restart(self) -> None:
        self.store.close()
        self.store = StateStore(self.path, clock=lambda: self.now)


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path)
    w.step(w.now)  # first seen a day before the run is due
    return w


def test_a_due_run_is_submitted_with_its_request_and_polled_to_success(world: World) -> None:
    step = world.step(DUE + dt.timedelta(seconds=5))
    assert step.submitted == ["nightly/20261202T020000Z"]
    [(sid, job)] = world.jobs.jobs.items()
    assert sid == "serveops-batch-staging-nightly-20261202T020000Z-a0"
    request = RunRequest.decode(job.entrypoint.split()[-1])
    assert request.model_uri == "models:/fraud/1"  # the alias, resolved and pinned
    assert request.output.id_column == "id"
    assert job.runtime_env["env_vars"]["MLFLOW_TRACKING_URI"] == "sqlite:///m.db"
    assert world.store.active_batch_runs("staging")[0].status == "running"
    world.jobs.finish(sid, RunResult(status="succeeded", rows=569, output="/data/out/run=x"))
    step = world.step(DUE + dt.timedelta(seconds=30))
    assert step.finished == ["nightly/20261202T020000Z: succeeded"]
    [run] = world.store.batch_runs("staging", "nightly")
    assert (run.status, run.rows, run.output) == ("succeeded", 569, "/data/out/run=x")
    assert world.store.promoted_models("staging") == {"nightly": "models:/fraud/1"}


def test_a_restart_between_claim_and_submission_submits_once(world: World) -> None:
    world.jobs.down = True  # the claim is stored, the submission fails (as if killed there)
    world.step(DUE + dt.timedelta(seconds=5))
    assert world.jobs.jobs == {}
    assert world.store.active_batch_runs("staging")[0].status == "pending"
    world.jobs.down = False
    world.restart()
    world.step(DUE + dt.timedelta(seconds=20))
    world.restart()
    world.step(DUE + dt.timedelta(seconds=40))
    assert list(world.jobs.jobs) == ["serveops-batch-staging-nightly-20261202T020000Z-a0"]
    assert len(world.store.batch_runs("staging")) == 1


def test_a_lost_answer_resubmits_the_same_id_and_ray_refuses_a_duplicate(world: World) -> None:
    world.step(DUE + dt.timedelta(seconds=5))
    [run] = world.store.batch_runs("staging")
    # The store lost the 'running' mark (killed after submit, before the update).
    world.store.update_batch_run(run, status="pending", job_id=None)
    world.step(DUE + dt.timedelta(seconds=20))
    assert world.jobs.submits == 2
    assert len(world.jobs.jobs) == 1
    assert world.store.batch_runs("staging")[0].status == "running"


def test_a_failed_attempt_is_retried_then_the_run_fails(world: World) -> None:
    world.step(DUE + dt.timedelta(seconds=5))
    world.jobs.finish(
        "serveops-batch-staging-nightly-20261202T020000Z-a0",
        RunResult(status="failed", message="KeyError: x"),
        "FAILED",
    )
    world.step(DUE + dt.timedelta(seconds=20))
    [run] = world.store.batch_runs("staging")
    assert (run.attempt, run.status) == (1, "running")
    assert "attempt 1 failed: KeyError: x" in run.message
    world.jobs.finish(
        "serveops-batch-staging-nightly-20261202T020000Z-a1",
        RunResult(status="failed", message="KeyError: x"),
        "FAILED",
    )
    step = world.step(DUE + dt.timedelta(seconds=40))
    assert step.finished == ["nightly/20261202T020000Z: failed"]
    assert world.store.batch_runs("staging")[0].status == "failed"
    assert [(n.run_key, n.status) for n in world.notes] == [("20261202T020000Z", "failed")]
    # A failed run is not run again for the same scheduled time.
    world.step(DUE + dt.timedelta(minutes=2))
    assert len(world.jobs.jobs) == 2


def test_a_run_past_its_timeout_is_stopped(tmp_path: Path) -> None:
    w = World(tmp_path, retries=0)
    w.step(w.now)
    w.step(DUE + dt.timedelta(seconds=5))
    w.step(DUE + dt.timedelta(minutes=11))
    assert w.jobs.stopped == ["serveops-batch-staging-nightly-20261202T020000Z-a0"]
    [run] = w.store.batch_runs("staging")
    assert run.status == "failed"
    assert "timed out after 10m" in run.message


def test_a_killed_job_without_a_result_counts_as_failed(tmp_path: Path) -> None:
    w = World(tmp_path, retries=0)
    w.step(w.now)
    w.step(DUE + dt.timedelta(seconds=5))
    w.jobs.status["serveops-batch-staging-nightly-20261202T020000Z-a0"] = (
        "SUCCEEDED"  # no result line
    )
    w.step(DUE + dt.timedelta(seconds=20))
    assert w.store.batch_runs("staging")[0].status == "failed"


def test_a_model_change_carries_the_previous_version_and_a_rejection_is_kept(world: World) -> None:
    world.step(DUE + dt.timedelta(seconds=5))
    world.jobs.finish(
        "serveops-batch-staging-nightly-20261202T020000Z-a0", RunResult(status="succeeded", rows=3)
    )
    world.step(DUE + dt.timedelta(seconds=20))
    world.version = "2"
    nxt = DUE + dt.timedelta(days=1)
    world.step(nxt + dt.timedelta(seconds=5))
    sid = "serveops-batch-staging-nightly-20261203T020000Z-a0"
    request = RunRequest.decode(world.jobs.jobs[sid].entrypoint.split()[-1])
    assert (request.model_uri, request.previous_model_uri) == ("models:/fraud/2", "models:/fraud/1")
    world.jobs.finish(sid, RunResult(status="rejected", agreement=0.4, message="agrees on 40%"))
    world.step(nxt + dt.timedelta(seconds=20))
    latest = world.store.batch_runs("staging")[0]
    assert (latest.status, latest.agreement) == ("rejected", 0.4)
    assert [n.status for n in world.notes] == ["rejected"]
    assert world.store.promoted_models("staging") == {"nightly": "models:/fraud/1"}


def test_an_unknown_model_is_an_error_of_the_step_not_a_crash(world: World) -> None:
    world.version = "9"  # the alias points at a version FixedRegistry does not have
    world.batches = load_batches(
        {"deployments/staging/nightly.yaml": FILE.format(retries=0).replace("@champion", "/9")}
    )
    step = world.step(DUE + dt.timedelta(seconds=5))
    assert step.submitted == []
    assert any("no version 9" in e for e in step.errors), step.errors
    assert world.store.batch_runs("staging") == []


def test_results_are_read_from_the_last_line_and_bounded() -> None:
    line = RunResult(status="succeeded", rows=5).line()
    assert parse_result(f"noise SERVEOPS_RESULT nope\n{line}\n") == RunResult(
        status="succeeded", rows=5
    )
    assert parse_result("SERVEOPS_RESULT {" + "x" * 100_000 + "}") is None
    assert parse_result("killed") is None
    with pytest.raises(ValueError, match="larger than"):
        RunRequest.decode("A" * 100_000)


def test_job_logs_are_read_no_further_than_the_limit() -> None:
    huge = b"x" * (3 * MAX_LOG_BYTES) + b'\nSERVEOPS_RESULT {"status": "succeeded"}\n'

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/logs"):
            return httpx.Response(200, content=huge)
        if request.method == "POST":
            return httpx.Response(400, text="Job with submission_id x already exists. ...")
        return httpx.Response(404)

    with RayJobs("http://ray:8265", transport=httpx.MockTransport(handler)) as jobs:
        logs = jobs.logs("x")
        assert len(logs) <= MAX_LOG_BYTES
        assert parse_result(logs) == RunResult(status="succeeded")
        assert jobs.submit(JobSpec("x", "python -m x", {}, {})) is False
        assert jobs.info("x") is None


def test_status_and_history_show_the_last_run_and_the_next(world: World) -> None:
    from rich.console import Console
    from typer.testing import CliRunner

    from controller.cli.main import app
    from controller.cli.views import load_view, status_renderable

    world.step(DUE + dt.timedelta(seconds=5))
    world.jobs.finish(
        "serveops-batch-staging-nightly-20261202T020000Z-a0",
        RunResult(status="succeeded", rows=569, output="/data/out/run=x"),
    )
    world.step(DUE + dt.timedelta(seconds=47))
    [schedule] = world.store.batch_schedules("staging")
    assert schedule.next_at == DUE + dt.timedelta(days=1)
    # What `serveops status` prints (Serve not read here: the batch lines come from the state).
    view, _ = load_view("staging", state=world.path, address=None)
    console = Console(record=True, width=200)
    console.print(status_renderable(view, terminal=False))
    assert (
        "batch nightly (models:/fraud@champion): last run 20261202T020000Z succeeded, "
        "569 rows in 42s; next 2026-12-03 02:00 UTC" in console.export_text()
    )
    last = view.batches[0].last
    assert last is not None
    assert last.rows == 569
    console.print(status_renderable(view, terminal=True))  # the table renders too
    assert "NEXT (UTC)" in console.export_text()
    runner = CliRunner()
    state = ["--env", "staging", "--state", str(world.path)]
    history = runner.invoke(app, ["history", *state])
    assert history.exit_code == 0, history.output
    assert "staging/nightly 20261202T020000Z succeeded (attempt 1, schedule) 569 rows in 42s" in (
        history.output
    )


def test_a_deleted_batch_file_leaves_status(world: World) -> None:
    world.step(DUE - dt.timedelta(hours=1))
    assert [s.deployment for s in world.store.batch_schedules("staging")] == ["nightly"]
    world.batches = []
    world.step(DUE - dt.timedelta(minutes=30))
    assert world.store.batch_schedules("staging") == []


def test_a_moved_alias_starts_a_model_change_run_once(tmp_path: Path) -> None:
    w = World(tmp_path, retries=0)
    w.batches = load_batches(
        {
            "deployments/staging/nightly.yaml": FILE.format(retries=0).replace(
                '  schedule: {cron: "0 2 * * *"}\n', "  on_model_change: true\n"
            )
        }
    )
    first = w.step(DUE)
    assert first.submitted == ["nightly/model-20261202T020000Z"]
    w.jobs.finish(
        "serveops-batch-staging-nightly-model-20261202T020000Z-a0",
        RunResult(status="succeeded", rows=10),
    )
    assert w.step(DUE + dt.timedelta(minutes=1)).submitted == []  # v1 has run
    w.version = "2"  # the alias moved
    moved = w.step(DUE + dt.timedelta(minutes=2))
    assert moved.submitted == ["nightly/model-20261202T020200Z"]
    [run, _] = w.store.batch_runs("staging")
    assert (run.trigger, run.model_uri, run.previous_model_uri) == (
        "model-change",
        "models:/fraud/2",
        "models:/fraud/1",
    )
    w.jobs.finish(
        "serveops-batch-staging-nightly-model-20261202T020200Z-a0",
        RunResult(status="rejected", agreement=0.5, message="below 95%"),
    )
    w.step(DUE + dt.timedelta(minutes=3))
    assert w.step(DUE + dt.timedelta(minutes=4)).submitted == []  # not tried again
    assert len(w.jobs.jobs) == 2


class SignedRegistry(FixedRegistry):
    """A fixed registry whose versions logged a signature with these named inputs."""

    def __init__(self, inputs: list[str]) -> None:
        super().__init__({"fraud": {"1": "1", "@champion": "1"}}, "sqlite:///m.db")
        self.inputs = inputs
        self.asked: list[str] = []

    def input_schema(self, uri: str) -> dict[str, str] | None:
        self.asked.append(uri)
        return dict.fromkeys(self.inputs, "double")


def test_an_input_that_does_not_match_the_signature_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    data = tmp_path / "in"
    data.mkdir()
    (data / "part-0.csv").write_text("id,amount,age\n1,2.0,30\n")
    world = World(tmp_path)
    world.batches = load_batches(
        {"deployments/staging/nightly.yaml": FILE.format(retries=1).replace("/data/in", str(data))}
    )
    signed = SignedRegistry(["amount", "country"])
    edges = BatchEdges(world.store, world.jobs, lambda: signed, "staging")
    batch_step(edges, world.batches, "c1", world.now)  # first seen
    world.now = DUE + dt.timedelta(seconds=5)
    step = batch_step(edges, world.batches, "c1", world.now)
    [error] = step.errors
    assert error.startswith("nightly: deployments/staging/nightly.yaml:6: spec.input: ")
    assert "does not match models:/fraud/1's signature: it lacks 'country'" in error
    assert "has 'age' the model does not take" in error
    assert signed.asked == ["models:/fraud/1"]
    assert world.jobs.jobs == {}  # nothing submitted
    assert world.store.batch_runs("staging", "nightly") == []  # nor claimed

    signed.inputs = ["amount", "age"]  # a fixed model: the next pass runs it
    step = batch_step(edges, world.batches, "c1", world.now + dt.timedelta(seconds=10))
    assert step.errors == []
    assert step.submitted == ["nightly/20261202T020000Z"]

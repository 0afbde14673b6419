"""The controller's pass runs batch inference of what it admitted: a due run is submitted by
the pass (through a fake Jobs API), once across controller restarts, and a head the gate
refuses never runs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import textwrap
from pathlib import Path

from controller.batch.request import RunRequest, RunResult
from tests.support import World
from tests.unit.test_batch_step import FakeJobs

ROOT = Path(__file__).resolve().parents[2]


def limits(world: World) -> None:
    """The platform's policies: the starter batch resource caps (no production rules here)."""
    text = (ROOT / "policies/batch.yaml").read_text()
    start = text.index("  - id: batch-resource-limits")
    end = text.index("  - id: batch-production-promotion-check")
    head = text[: text.index("rules:\n") + len("rules:\n")]
    (world.platform / "batch.yaml").write_text(head + text[start:end])


def with_jobs(world: World, jobs: FakeJobs) -> None:
    world.ctl.ctx = dataclasses.replace(world.ctl.ctx, jobs=jobs)


def batch_yaml(cpus: float = 0.5) -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: serveops.dev/v1alpha1
        kind: BatchInference
        metadata: {{name: nightly, environment: staging, owner: ml}}
        spec:
          model: models:/fraud@champion
          input: {{uri: /data/in}}
          output: {{uri: /data/out}}
          schedule: {{cron: "30 * * * *"}}
          resources: {{num_cpus: {cpus}}}
        """
    )


def test_the_pass_submits_due_runs_of_the_admitted_commit_once(tmp_path: Path) -> None:
    world = World(tmp_path)
    limits(world)
    jobs = FakeJobs()
    with_jobs(world, jobs)
    world.commit({"deployments/staging/nightly.yaml": batch_yaml()}, "add batch")
    first = world.pass_()
    assert first.outcome in ("applied", "in_sync", "progressing"), first.message
    assert jobs.jobs == {}  # 12:00, first seen: the 11:30 run is in the past
    assert first.requeue_after <= 10
    due = world.pass_(30 * 60 + 1)  # 12:30:01
    assert "batch submitted nightly/20260301T123000Z" in due.message
    [(sid, job)] = jobs.jobs.items()
    assert RunRequest.decode(job.entrypoint.split()[-1]).model_uri == "models:/fraud/1"
    # A new controller process on the same state file submits nothing again.
    world.ctl = world.controller(holder="ctl")
    with_jobs(world, jobs)
    jobs.finish(sid, RunResult(status="succeeded", rows=10, output="/data/out/run=x"))
    done = world.pass_(5)
    assert "batch finished nightly/20260301T123000Z: succeeded" in done.message
    world.pass_(5)
    assert jobs.submits == 1
    [run] = world.ctl.store.batch_runs("staging")
    assert (run.status, run.rows) == ("succeeded", 10)


def test_a_refused_head_never_runs_its_batch_files(tmp_path: Path) -> None:
    world = World(tmp_path)
    limits(world)
    jobs = FakeJobs()
    with_jobs(world, jobs)
    world.pass_()
    world.commit({"deployments/staging/nightly.yaml": batch_yaml(cpus=6)}, "big actors")
    refused = world.pass_()
    assert "batch-resource-limits" in refused.message
    world.clock.current += dt.timedelta(hours=2)
    world.pass_()
    assert jobs.jobs == {}
    assert world.ctl.store.batch_runs("staging") == []

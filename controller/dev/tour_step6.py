"""Step 6 of the tour: monitoring (issue 12), the load's inputs drift and the loop closes through
Git; batch inference (issue 13), a batch deployment following an alias, run by the controller on
Ray Data for v1 and again for v3."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from controller.dev import tour_repo as files
from controller.dev.demo import MODEL_NAME
from controller.dev.load import labels_csv, row_bodies
from controller.dev.tour_support import StepFailed
from controller.gitops.state import StateStore
from controller.gitops.state.batch import BatchRun

if TYPE_CHECKING:
    from controller.dev.tour import Tour

ENV = "staging"
DRIFT_WINDOW_S = 15  # seconds of drifted inputs judged (300 requests at the tour's 20 req/s)


def _note(text: str) -> None:
    print(f"  {text}", flush=True)


def drift_alert(tour: Tour) -> None:
    """Step 6, monitoring (issue 12): live accuracy first (the load's true labels, joined by
    request id with the recording, as a labelling team's file would be); then the load's
    inputs drift (four features scaled by 1.5), and `serveops monitor --check` judges the live
    recordings against the training data: drift, exit 1, the features named, and the accuracy
    the drift cost. The controller judges the same windows on its own (`window: 1m`) and
    `serveops monitor` prints its reports."""
    assert tour.load is not None
    _note("live accuracy of the last window: the true labels of the load's requests, joined")
    _check(tour, time.time(), ok=(0, 1))  # 0 expected: the training data's distribution
    _note(f"the load now sends inputs that drifted: {', '.join(files.DRIFT_FEATURES)} x1.5")
    tour.load.send(row_bodies({f: 1.5 for f in files.DRIFT_FEATURES}))
    time.sleep(DRIFT_WINDOW_S + 2)  # a window of drifted traffic only
    _check(tour, time.time(), ok=(1,))  # exit 1: drift, as expected
    tour.load.send(row_bodies())
    _note("the load sends the training data's distribution again")
    # The loop closes through Git: a version trained since (here v3) proposed as a branch,
    # the drift evidence in its message, for the usual pull-request gate. Nothing applied.
    v3 = tour.versions[-1]
    _note(f"proposing v{v3} for {MODEL_NAME} through Git (serveops propose)")
    tour.serveops(
        "propose", MODEL_NAME, "--env", ENV, "--repo", str(tour.repo), "--rev", "main",
        "--version", v3, "--state", str(tour.state),
    )  # fmt: skip
    _note(
        f"branch serveops/propose/{ENV}/{MODEL_NAME}-v{v3}: a pull request to open; its "
        "message cites the controller's monitoring windows judged so far"
    )


def _check(tour: Tour, end: float, ok: tuple[int, ...]) -> None:
    """`serveops monitor --check` of the last window, with the labels of its requests."""
    from sklearn.datasets import load_breast_cancer

    assert tour.load is not None
    answers = tour.load.answered(end - DRIFT_WINDOW_S - 5, end)
    labels = tour.workdir / "labels" / f"{int(end)}.csv"
    labels.parent.mkdir(parents=True, exist_ok=True)
    labels.write_text(labels_csv(answers, load_breast_cancer().target.tolist()))
    tour.serveops(
        "monitor", "--check", "--env", ENV, "--repo", str(tour.repo), "--rev", "main",
        "--window", f"{DRIFT_WINDOW_S}s",
        "--monitor-reference-dir", str(tour.references),
        "--labels", str(labels),
        ok=ok,
    )  # fmt: skip


def batch_run(tour: Tour) -> None:
    """Step 6, batch inference (issue 13): a batch deployment following the alias
    `champion` is merged; the controller runs it on Ray Data for v1, then again when the
    alias moves to v3, after v3 passed the sample check against v1. Each run's output is
    checked against its manifest."""
    v1, v3 = tour.versions[0], tour.versions[-1]
    _set_alias(tour, v1)
    data, rows = files.write_batch_input(tour.workdir / "batch" / "input")
    out = tour.workdir / "batch" / "scores"
    sha = files.commit_file(
        tour.repo, files.BATCH, files.batch_spec(data, out), "Score the table nightly"
    )
    _note(f"merged {files.BATCH} ({sha}): {rows:,} rows scored by @{files.BATCH_ALIAS} (v{v1})")
    first = _wait_batch_run(tour, 1, 300)
    _check_batch_output(first, rows)
    _note(f"moving @{files.BATCH_ALIAS} to v{v3}: the controller runs again, v3 checked first")
    _set_alias(tour, v3)
    second = _wait_batch_run(tour, 2, 300)
    _check_batch_output(second, rows)
    tour.serveops("batch", "runs", files.BATCH_NAME, "--env", ENV)
    tour.serveops("status", "--env", ENV)


def _set_alias(tour: Tour, version: str) -> None:
    from mlflow import MlflowClient

    MlflowClient(tour.tracking_uri).set_registered_model_alias(
        MODEL_NAME, files.BATCH_ALIAS, version
    )


def _wait_batch_run(tour: Tour, n: int, timeout_s: float) -> BatchRun:
    """Until the controller's `n`th run of the tour's batch deployment has ended."""
    deadline = time.monotonic() + timeout_s
    seen = ""
    while time.monotonic() < deadline:
        with StateStore(tour.state) as store:
            runs = store.batch_runs(ENV, files.BATCH_NAME)
        if len(runs) >= n:
            run = runs[0]
            line = f"run {run.run_key} ({run.trigger}, {run.model_uri}): {run.status}"
            if line != seen:
                _note(line)
                seen = line
            if not run.active:
                if run.status != "succeeded":
                    raise StepFailed(f"batch run {run.run_key} {run.status}: {run.message}")
                return run
        time.sleep(1.0)
    raise StepFailed(f"the controller's batch run {n} did not end in {timeout_s:.0f}s")


def _check_batch_output(run: BatchRun, rows: int) -> None:
    import pandas as pd

    assert run.output is not None
    manifest = json.loads((Path(run.output) / "_manifest.json").read_text())
    scored = pd.read_parquet(run.output)
    if len(scored) != rows or manifest["rows"] != rows:
        raise StepFailed(f"{run.output}: {len(scored)} rows, manifest {manifest['rows']}")
    agreement = manifest.get("agreement")
    _note(
        f"{run.output}: {len(scored):,} rows, model {manifest['model']}, commit "
        f"{manifest['commit'][:12]}, {manifest['duration_s']:.0f}s"
        + (f", agreement with the previous version {agreement:.1%}" if agreement else "")
    )

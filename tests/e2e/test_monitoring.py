"""Live monitoring on real parts: a real local Ray Serve (the session's cluster) whose router
records every request, a real MLflow store, a real Git repository, and `serveops monitor
--check` run as users run it.

One story on one repository, in file order: v1 is applied with recording and monitoring on;
requests drawn from the training data are judged undrifted and, joined with their delayed
labels by request id, give v1's live accuracy; requests whose inputs drifted (three features
shifted by half a standard deviation, issue 12's figure) are flagged, those features named;
the last step removes what the module deployed.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from controller.dev.demo import MODEL_NAME
from controller.dev.tour_support import count_recorded
from tests.e2e.conftest import Cluster, Registry, post_until_ok
from tests.support import commit, make_repo

pytestmark = pytest.mark.e2e
ENV = "monitored"
NAME = "mon-bc"
SPEC = f"deployments/{ENV}/{NAME}.yaml"
REFERENCE = "training.csv"
ROWS = 300  # requests per window, one row each (labels join one prediction per request)
SHIFTED = ("mean radius", "mean texture", "mean smoothness")
# `monitor --window` ends when the command reads the clock, a second or two after the test's:
# windows are judged with MARGIN_S more, and the requests of one window are sent GAP_S after
# the last of the one before, so a window holds its own requests and no others.
MARGIN_S = 5
GAP_S = 7


def spec(version: str, recording_dir: Path) -> str:
    return f"""\
apiVersion: serveops.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: {NAME}
  environment: {ENV}
  owner: e2e
spec:
  route: /{NAME}
  model: models:/{MODEL_NAME}/{version}
  replicas: 1
  resources:
    num_cpus: 0.2
  recording:
    sample_rate: 1
    dir: {recording_dir}
  monitoring:
    reference:
      kind: dataset
      path: {REFERENCE}
    window: 1m
    min_rows: 100
"""


def _training() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    return data.data, data.target


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("monitoring")
    repo, recording, references = root / "repo", root / "recording", root / "references"
    references.mkdir()
    _training()[0].to_csv(references / REFERENCE, index=False)
    make_repo(repo, {SPEC: spec(registry.versions[0], recording)}, "v1, monitored")
    return {"repo": repo, "recording": recording, "references": references, "root": root}


def _send(url: str, rows: pd.DataFrame, ids: list[str]) -> None:
    with httpx.Client(timeout=30) as client:
        for request_id, (_, row) in zip(ids, rows.iterrows(), strict=True):
            body = {"dataframe_split": row.to_frame().T.to_dict(orient="split")}
            response = client.post(url, json=body, headers={"X-Request-Id": request_id})
            assert response.status_code == 200, response.text


def _wait_recorded(directory: Path, n: int, timeout_s: float = 60) -> None:
    """The recorder's writer thread flushes in batches: wait until `n` records are on disk."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if count_recorded(directory) >= n:
            return
        time.sleep(0.5)
    raise AssertionError(f"fewer than {n} records in {directory} after {timeout_s:.0f}s")


def _check(serveops: Any, story: dict[str, Path], started: float, *extra: str) -> Any:
    """`serveops monitor --check` of the window since `started` (monotonic)."""
    window_s = math.ceil(time.monotonic() - started) + MARGIN_S
    return serveops(
        "monitor", "--check", "--env", ENV, "--repo", str(story["repo"]), "--rev", "main",
        "--window", f"{window_s}s", "--monitor-reference-dir", str(story["references"]),
        "--output", "json", *extra,
    )  # fmt: skip


def test_undrifted_traffic_raises_nothing_and_labels_give_live_accuracy(
    serveops: Any, cluster: Cluster, registry: Registry, story: dict[str, Path]
) -> None:
    result = serveops("apply", "--repo", str(story["repo"]), "--rev", "main", "--env", ENV)
    assert result.returncode == 0, result.stderr + result.stdout
    url = cluster.url(f"/{NAME}")
    features, target = _training()
    assert post_until_ok(url, {"dataframe_split": features.iloc[[0]].to_dict("split")}).is_success
    time.sleep(GAP_S)  # the first request stays out of the window judged below

    started = time.monotonic()
    rows = features.sample(ROWS, random_state=0)
    ids = [f"live-{i}" for i in rows.index]
    _send(url, rows, ids)
    _wait_recorded(story["recording"], ROWS + 1)
    labels = story["root"] / "labels.csv"
    pd.DataFrame({"request_id": ids, "label": target.loc[rows.index].to_numpy()}).to_csv(
        labels, index=False
    )

    result = _check(serveops, story, started, "--labels", str(labels))
    assert result.returncode == 0, result.stderr + result.stdout
    body = json.loads(result.stdout)
    assert body["drifted"] == []
    [report] = body["deployments"][NAME]
    assert report["status"] == "ok"
    assert report["rows"] == ROWS
    assert report["version"] == registry.versions[0]
    quality = body["quality"][NAME]
    assert quality["joined"] == ROWS
    v1 = quality["versions"][registry.versions[0]]
    assert v1["task"] == "classification"
    assert v1["joined"] == ROWS
    assert v1["accuracy"] > 0.85  # the demo's logistic regression, on its own training data


def test_inputs_shifted_half_a_standard_deviation_are_flagged_with_their_features(
    serveops: Any, cluster: Cluster, story: dict[str, Path]
) -> None:
    features, _ = _training()
    rows = features.sample(ROWS, random_state=1).copy()
    for name in SHIFTED:
        rows[name] = rows[name] + 0.5 * features[name].std()
    time.sleep(GAP_S)  # the undrifted requests stay out of this window
    started = time.monotonic()
    recorded = count_recorded(story["recording"])
    _send(cluster.url(f"/{NAME}"), rows, [f"drift-{i}" for i in rows.index])
    _wait_recorded(story["recording"], recorded + ROWS)

    result = _check(serveops, story, started)
    assert result.returncode == 1, result.stderr + result.stdout  # exit 1: drift
    body = json.loads(result.stdout)
    assert body["drifted"] == [NAME]
    [report] = body["deployments"][NAME]
    assert report["status"] == "drift"
    assert report["rows"] == ROWS
    flagged = {f["name"] for f in report["features"] if f["drifted"]}
    assert set(SHIFTED) <= flagged
    assert np.isfinite([f["psi"] for f in report["features"] if f["name"] in SHIFTED]).all()


def test_cleanup_removes_what_the_module_deployed(serveops: Any, story: dict[str, Path]) -> None:
    commit(story["repo"], {SPEC: None}, "remove")
    result = serveops("apply", "--repo", str(story["repo"]), "--env", ENV, "--prune")
    assert result.returncode == 0, result.stderr + result.stdout

"""Record live traffic in the router, then replay it: real local Ray Serve (the session's
cluster), a real MLflow store, a real Git repository and real Locust replays.

The tests of this module are steps of one story on one repository, in file order: v1 is
applied with recording on and answers requests, which land in the recording; the recording is
replayed with `serveops replay --url`; then `serveops replay --rev` deploys v2 from Git and
replays the same recording against it. The last step removes what the module deployed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.dev.demo import MODEL_NAME
from simulator.traffic import TrafficHeader, TrafficRecord, read_traffic
from tests.e2e.conftest import Cluster, Registry, post_until_ok
from tests.support import commit, make_repo

pytestmark = pytest.mark.e2e
ENV = "recorded"
NAME = "rec-bc"
SPEC = f"deployments/{ENV}/{NAME}.yaml"
REQUESTS = 40


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
    max_file_mb: 0.02
    headers: [content-type, x-user-id, x-tenant]  # an allow-list; x-tenant is denied all the same
    deny_headers: [x-tenant]
"""


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("record")
    repo, recording = root / "repo", root / "recording"
    make_repo(repo, {SPEC: spec(registry.versions[0], recording)}, "v1, recorded")
    return {"repo": repo, "recording": recording, "root": root}


def _body(rows: list[int]) -> dict[str, Any]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True).data
    return {"dataframe_split": data.iloc[rows].to_dict(orient="split")}


def _wait_for_records(directory: Path, n: int, timeout_s: float = 60) -> list[TrafficRecord]:
    """The writer thread flushes after each batch: wait until `n` records are on disk."""
    deadline = time.monotonic() + timeout_s
    while True:
        records: list[TrafficRecord] = []
        if directory.exists() and any(directory.glob("*.jsonl")):
            records = read_traffic(directory)[1]
        if len(records) >= n or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def test_requests_through_the_router_land_in_the_recording(
    serveops: Any, cluster: Cluster, registry: Registry, story: dict[str, Path]
) -> None:
    result = serveops("apply", "--repo", str(story["repo"]), "--rev", "main", "--env", ENV)
    assert result.returncode == 0, result.stderr + result.stdout
    url = cluster.url(f"/{NAME}")
    assert post_until_ok(url, _body([0])).status_code == 200
    secrets = {"Authorization": "Bearer s3cret", "Cookie": "session=abc", "X-Tenant": "acme"}
    with httpx.Client(timeout=30) as client:
        for i in range(REQUESTS):
            headers = {**secrets, "X-User-Id": f"user-{i}"}
            response = client.post(url, json=_body([i, i + 1]), headers=headers)
            assert response.status_code == 200, response.text
        bad = client.post(url, content=b"not json", headers={"content-type": "text/plain"})
        assert bad.status_code == 400

    records = _wait_for_records(story["recording"], REQUESTS + 2)
    assert len(records) == REQUESTS + 2  # the first request, the loop, and the bad one
    files = sorted(story["recording"].glob(f"{NAME}-*.jsonl"))
    assert len(files) >= 2, "0.02 MiB files must have rotated"
    header, _ = read_traffic(files[0])
    assert isinstance(header, TrafficHeader)
    assert header.source == f"recorded by the router of {NAME}"

    v1 = registry.versions[0]
    loop = [r for r in records if r.headers.get("x-user-id", "").startswith("user-")]
    assert len(loop) == REQUESTS
    for i, rec in enumerate(sorted(loop, key=lambda r: int(r.headers["x-user-id"][5:]))):
        assert rec.route == f"/{NAME}"
        assert rec.method == "POST"
        assert rec.headers["x-user-id"] == f"user-{i}"
        # Credentials, cookies, the deployment's own deny list and connection headers: gone.
        assert not {"authorization", "cookie", "x-tenant", "host", "content-length"} & set(
            rec.headers
        )
        assert rec.body == _body([i, i + 1])
        assert rec.response is not None
        assert (rec.response.status, rec.response.version) == (200, v1)
        assert len(rec.response.body["predictions"]) == 2
        assert rec.response.latency_ms is not None
        assert rec.response.latency_ms > 0
    [text] = [r for r in records if r.body == "not json"]
    assert text.response is not None
    assert text.response.status == 400
    assert [r.ts for r in records] == sorted(r.ts for r in records)

    # The recording, cut as an incident would be: every file of the directory, in time order.
    incident = story["root"] / "incident.jsonl"
    cut = serveops(
        "traffic", "slice", str(story["recording"]), "--window", "0..", "-o", str(incident)
    )
    assert cut.returncode == 0, cut.stderr
    assert [r.id for r in read_traffic(incident)[1]] == [r.id for r in records]


def test_the_recording_replays_against_the_live_route(
    serveops: Any, cluster: Cluster, registry: Registry, story: dict[str, Path]
) -> None:
    out = story["root"] / "replay-url"
    result = serveops(
        "replay", str(story["root"] / "incident.jsonl"), "--url",
        f"http://127.0.0.1:{cluster.http_port}", "--speed", "4", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    outcomes = [json.loads(line) for line in (out / "outcomes.jsonl").read_text().splitlines()]
    assert len(outcomes) == REQUESTS + 2
    statuses = sorted(o["status"] for o in outcomes)
    assert statuses == [200] * (REQUESTS + 1) + [400]  # the bad request is bad again
    assert {o["version"] for o in outcomes} == {registry.versions[0]}

    # The replay went through the recording router but is not live traffic: not recorded. A
    # live request sent after it is written after anything queued before it (one FIFO writer).
    marker = {"X-User-Id": "after-replay"}
    response = httpx.post(cluster.url(f"/{NAME}"), json=_body([3]), headers=marker, timeout=30)
    assert response.status_code == 200
    records = _wait_for_records(story["recording"], REQUESTS + 3)
    assert len(records) == REQUESTS + 3
    assert records[-1].headers["x-user-id"] == "after-replay"


def test_replay_rev_deploys_that_revision_and_replays_the_recording_on_it(
    serveops: Any, cluster: Cluster, registry: Registry, story: dict[str, Path]
) -> None:
    v2 = registry.versions[1]
    repo = story["repo"]
    commit(repo, {SPEC: spec(v2, story["root"] / "recording-v2")}, "v2")
    out = story["root"] / "replay-rev"
    result = serveops(
        "replay", str(story["root"] / "incident.jsonl"), "--rev", "main", "--repo", str(repo),
        "--env", ENV, "--address", cluster.address, "--speed", "4", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    assert "deploying main" in result.stderr
    assert "generator lag" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scheduled"] == REQUESTS + 2
    assert summary["targets"] == {"main": f"http://127.0.0.1:{cluster.http_port}"}
    outcomes = [json.loads(line) for line in (out / "outcomes.jsonl").read_text().splitlines()]
    assert len(outcomes) == REQUESTS + 2
    assert not any(o["dropped"] for o in outcomes)
    ok = [o for o in outcomes if o["status"] == 200]
    assert len(ok) == REQUESTS + 1
    # v2, deployed from Git by the replay, answered every request of the v1 recording.
    assert {o["version"] for o in ok} == {v2}
    assert all(o["latency_ms"] >= o["service_ms"] > 0 for o in ok)


def test_cleanup_removes_what_the_module_deployed(serveops: Any, story: dict[str, Path]) -> None:
    commit(story["repo"], {SPEC: None}, "remove")
    result = serveops("apply", "--repo", str(story["repo"]), "--env", ENV, "--prune")
    assert result.returncode == 0, result.stderr + result.stdout

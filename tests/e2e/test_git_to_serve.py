"""Git to Ray Serve on real parts: a local Ray Serve, an MLflow SQLite store, a Git repository.

The tests of this module are steps of one story and run in file order on one repository:
v1 is applied, a second revision moves to v2, then bad input and faults are tried on top. The
deployment routes directly (`routing: direct`): between changes the serving version's own
application owns the route; for the move to v2 the router takes it (falling back to v1 until v2
runs) and gives it to v2 once v2 runs, under a request loop that must see no failure.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from controller.cluster.live import LiveState
from controller.dev import workernice
from controller.dev.demo import MODEL_NAME
from controller.serving.protocol import VERSION_HEADER
from tests.e2e.conftest import Cluster, Registry, post_until_ok
from tests.support import commit, git, make_repo

pytestmark = pytest.mark.e2e
SPEC = "deployments/staging/breast-cancer.yaml"


def spec(
    version: str,
    name: str = "breast-cancer",
    num_cpus: float = 0.2,
    routing: str = "router",
    access_log: bool = True,
) -> str:
    quiet = "" if access_log else "  access_log: false\n"
    return f"""\
apiVersion: serveops.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: {name}
  environment: staging
  owner: e2e
spec:
  route: /{name}
  model: models:/{MODEL_NAME}/{version}
  replicas: 1
  resources:
    num_cpus: {num_cpus}
  routing: {routing}
{quiet}"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> Path:
    path = tmp_path_factory.mktemp("gitops") / "repo"
    make_repo(path, {SPEC: spec(registry.versions[0], routing="direct")}, "deploy v1")
    return path


@pytest.fixture(scope="module")
def expected(registry: Registry) -> dict[str, Any]:
    """Rows on which v1 and v2 disagree, with each version's local predictions."""
    import mlflow.pyfunc
    from sklearn.datasets import load_breast_cancer

    mlflow.set_tracking_uri(registry.tracking_uri)
    data = load_breast_cancer(as_frame=True).data
    preds = {
        v: mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{v}").predict(data).tolist()
        for v in registry.versions
    }
    v1, v2 = registry.versions
    differ = [i for i in range(len(data)) if preds[v1][i] != preds[v2][i]][:5]
    rows = [*differ, 0, 1, 2]
    return {
        "body": {"dataframe_split": data.iloc[rows].to_dict(orient="split")},
        v1: [preds[v1][i] for i in rows],
        v2: [preds[v2][i] for i in rows],
        "differ": bool(differ),
    }


@pytest.fixture(scope="module")
def handmade(cluster: Cluster, registry: Registry) -> dict[str, Any]:
    """An application serveops does not own, deployed by hand before serveops ever runs."""
    app = {
        "name": "handmade",
        "route_prefix": "/handmade",
        "import_path": "controller.serving.model:build",
        "args": {"model_uri": f"models:/{MODEL_NAME}/{registry.versions[0]}", "version": "hand"},
        "runtime_env": {"env_vars": {"MLFLOW_TRACKING_URI": registry.tracking_uri}},
        "deployments": [{"name": "ModelServer", "ray_actor_options": {"num_cpus": 0.1}}],
    }
    with cluster.client() as client:
        client.put([app], client.get())
    return app


class RequestLoop:
    """Requests in a steady loop (about 20/s) in a thread while a command runs."""

    def __init__(self, url: str, body: Any) -> None:
        self.url, self.body = url, body
        self.versions: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    r = client.post(self.url, json=self.body)
                    if r.status_code == 200:
                        self.versions.append(r.headers[VERSION_HEADER])
                    else:
                        self.failures.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as e:
                    self.failures.append(repr(e))
                time.sleep(0.05)

    def __enter__(self) -> RequestLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def wait_gone(cluster: Cluster, *names: str, timeout_s: float = 60) -> LiveState:
    """Serve deletes applications asynchronously (status DELETING): wait until they are gone."""
    deadline = time.monotonic() + timeout_s
    with cluster.client() as client:
        while True:
            live = client.get()
            if not set(names) & set(live.apps) or time.monotonic() > deadline:
                assert not set(names) & set(live.apps), f"still live: {set(names) & set(live.apps)}"
                return live
            time.sleep(0.5)


def route_owner(cluster: Cluster, route: str) -> str:
    """The one application Serve has on `route`."""
    with cluster.client() as client:
        [owner] = [a.name for a in client.get().apps.values() if a.route == route]
    return owner


def test_apply_from_a_git_revision_serves_v1(
    serveops: Any, repo: Path, cluster: Cluster, registry: Registry, expected: dict, handmade: dict
) -> None:
    sha = git(repo, "rev-parse", "HEAD")
    result = serveops("apply", "--repo", str(repo), "--rev", sha, "--env", "staging")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "+ create  breast-cancer--v1" in result.stdout

    v1 = registry.versions[0]
    response = post_until_ok(cluster.url("/breast-cancer"), expected["body"])
    assert response.status_code == 200, response.text
    assert response.headers[VERSION_HEADER] == v1
    assert response.json()["predictions"] == expected[v1]
    assert route_owner(cluster, "/breast-cancer") == f"breast-cancer--v{v1}"  # direct


def replica_logs(cluster: Cluster, app: str) -> str:
    """What the replicas of `app` wrote to their Serve logs."""
    logs = (cluster.ray_dir / "session_latest" / "logs" / "serve").glob(f"replica_{app}_*.log")
    return "\n".join(p.read_text(errors="replace") for p in logs)


def test_the_model_replica_loaded_its_model_in_idle_cpu_time(
    cluster: Cluster, registry: Registry
) -> None:
    """controller/serving/startup.py: on Linux the model's load ran in a thread of the idle
    class, and the replica's log says so."""
    app = f"breast-cancer--v{registry.versions[0]}"
    loaded = [
        line for line in replica_logs(cluster, app).splitlines() if " loaded models:/" in line
    ]
    assert loaded, f"{app} logged no load"
    for line in loaded:
        assert " in idle CPU time" in line, line


def test_the_local_rays_workers_run_at_the_workers_nice_and_its_gcs_does_not(
    cluster: Cluster,
) -> None:
    """controller/dev/workernice.py: the raylet's threads were moved to the workers' nice, so
    Serve's controller, proxy and replicas (started after) run there, with Ray adding none of
    its own; the GCS and the raylet's agents keep nice 0."""
    marker = str(cluster.ray_dir)
    raylet = next(
        p
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "raylet" and marker in " ".join(p.info["cmdline"] or [])
    )
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    low = max(ours, workernice.WORKER_NICE)
    workers = {p.pid: " ".join(p.cmdline()) for p in raylet.children(recursive=True)}
    serve = [pid for pid, cmd in workers.items() if "Serve" in cmd or "ProxyActor" in cmd]
    assert any("ModelServer" in workers[pid] for pid in serve), workers
    for pid in [raylet.pid, *serve]:
        for tid in os.listdir(f"/proc/{pid}/task"):
            assert os.getpriority(os.PRIO_PROCESS, int(tid)) == low, workers.get(pid, "raylet")
    agents = [pid for pid, cmd in workers.items() if "agent" in cmd.lower()]
    gcs = [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "gcs_server"]
    for pid in agents:
        assert os.getpriority(os.PRIO_PROCESS, pid) == ours, workers[pid]
    assert any(os.getpriority(os.PRIO_PROCESS, pid) == ours for pid in gcs)


def test_plan_of_a_second_revision_shows_field_changes(
    serveops: Any, repo: Path, registry: Registry
) -> None:
    v1, v2 = registry.versions
    commit(repo, {SPEC: spec(v2, routing="direct")}, "promote v2")
    result = serveops(
        "plan", "--repo", str(repo), "--rev", "main", "--env", "staging", "-o", "json"
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["source"]["commit"] == git(repo, "rev-parse", "HEAD")
    assert [(a["op"], a["app"], a["effect"]) for a in plan["actions"]] == [
        ("create", f"breast-cancer--v{v2}", "start"),
        ("update", "breast-cancer", "reconfigure"),
        ("delete", f"breast-cancer--v{v1}", "stop"),
    ]


def test_saved_plan_is_refused_once_live_state_moved(
    serveops: Any, repo: Path, cluster: Cluster, handmade: dict, tmp_path: Path
) -> None:
    plan_file = tmp_path / "plan.json"
    made = serveops("plan", "--repo", str(repo), "--env", "staging", "--out", str(plan_file))
    assert made.returncode == 0, made.stderr
    with cluster.client() as client:  # someone scales the hand-made app meanwhile
        live = client.get()
        moved = json.loads(json.dumps(live.apps["handmade"].config))
        moved["deployments"][0]["num_replicas"] = 1
        others = [a.config for a in live.apps.values() if a.name != "handmade"]
        client.put([*others, moved], live)
        before = client.get().fingerprint()
    result = serveops("apply", "--plan", str(plan_file))
    assert result.returncode == 1
    assert "changed since this plan was made" in result.stderr
    with cluster.client() as client:
        assert client.get().fingerprint() == before  # nothing was written


def test_apply_second_revision_switches_to_v2_and_keeps_unmanaged_apps(
    serveops: Any, repo: Path, cluster: Cluster, registry: Registry, expected: dict
) -> None:
    with cluster.client() as client:
        handmade_before = client.get().apps["handmade"].config
    with RequestLoop(cluster.url("/breast-cancer"), expected["body"]) as loop:
        result = serveops("apply", "--repo", str(repo), "--env", "staging")
    assert result.returncode == 0, result.stderr + result.stdout

    v1, v2 = registry.versions
    # No request failed during the switch; each was answered by v1, then by v2.
    assert loop.failures == []
    assert len(loop.versions) > 20
    assert set(loop.versions) <= {v1, v2}
    first_v2 = loop.versions.index(v2) if v2 in loop.versions else len(loop.versions)
    assert set(loop.versions[first_v2:]) <= {v2}
    response = post_until_ok(cluster.url("/breast-cancer"), expected["body"])
    assert response.status_code == 200
    assert response.headers[VERSION_HEADER] == v2
    assert response.json()["predictions"] == expected[v2]
    if expected["differ"]:
        assert expected[v1] != expected[v2]

    live = wait_gone(cluster, f"breast-cancer--v{v1}")
    assert route_owner(cluster, "/breast-cancer") == f"breast-cancer--v{v2}"  # handed back
    assert live.apps["handmade"].config == handmade_before
    hand = post_until_ok(cluster.url("/handmade"), expected["body"])
    assert hand.status_code == 200
    assert hand.headers[VERSION_HEADER] == "hand"


def test_status_reports_synced_and_healthy_with_the_revision(serveops: Any, repo: Path) -> None:
    result = serveops("status", "--env", "staging", "--repo", str(repo), "-o", "json")
    assert result.returncode == 0, result.stderr + result.stdout
    [row] = json.loads(result.stdout)["deployments"]
    assert (row["name"], row["sync"], row["health"]) == ("breast-cancer", "Synced", "Healthy")
    assert row["revision"] == git(repo, "rev-parse", "HEAD")
    assert row["route"] == "/breast-cancer"


def test_missing_model_version_fails_at_plan_and_changes_nothing(
    serveops: Any, repo: Path, cluster: Cluster
) -> None:
    commit(repo, {SPEC: spec("99", routing="direct")}, "typo in version")
    with cluster.client() as client:
        before = client.get().fingerprint()
    result = serveops("apply", "--repo", str(repo), "--env", "staging")
    assert result.returncode == 2
    assert f"{SPEC}:9: spec.model: model 'breast-cancer' has no version 99" in result.stderr
    with cluster.client() as client:
        assert client.get().fingerprint() == before
    git(repo, "revert", "--no-edit", "HEAD")


def test_unschedulable_replica_is_reported_degraded_and_traffic_stays(
    serveops: Any, repo: Path, cluster: Cluster, registry: Registry, expected: dict
) -> None:
    greedy = "deployments/staging/greedy.yaml"
    commit(repo, {greedy: spec(registry.versions[0], name="greedy", num_cpus=1.9)}, "too big")
    result = serveops("apply", "--repo", str(repo), "--env", "staging", "--timeout", "120")
    assert result.returncode == 1
    assert "phase 'switch'" in result.stderr
    assert "to be scheduled" in result.stderr

    status = serveops("status", "--env", "staging", "-o", "json")
    assert status.returncode == 1  # a degraded deployment makes status fail
    rows = {r["name"]: r for r in json.loads(status.stdout)["deployments"]}
    assert rows["greedy"]["health"] == "Degraded"
    assert "to be scheduled" in rows["greedy"]["message"]
    assert rows["breast-cancer"]["health"] == "Healthy"
    ok = post_until_ok(cluster.url("/breast-cancer"), expected["body"])
    assert ok.status_code == 200
    assert ok.headers[VERSION_HEADER] == registry.versions[1]

    # Converge: the commit is reverted, and --prune removes what Git no longer declares.
    git(repo, "revert", "--no-edit", "HEAD")
    result = serveops("apply", "--repo", str(repo), "--env", "staging", "--prune")
    assert result.returncode == 0, result.stderr + result.stdout
    names = set(wait_gone(cluster, "greedy", "greedy--v1").apps)
    assert "handmade" in names
    assert "breast-cancer" in names


# Serve's access line for a request, over HTTP ("POST /route 200 3.1ms") or a handle ("CALL
# predict OK 3.1ms"): ray/serve/_private/logging_utils.py's access_log_msg.
ACCESS_LINE = re.compile(r" (?:CALL|POST|GET) \S+ (?:OK|\d{3}) [\d.]+ms$")


def access_lines(cluster: Cluster, app: str) -> int:
    return sum(1 for line in replica_logs(cluster, app).splitlines() if ACCESS_LINE.search(line))


def replica_pids(app: str) -> set[int]:
    """Processes of `app`'s replicas (named `ray::ServeReplica:<app>:<deployment>`)."""
    name = f"ServeReplica:{app}:"
    return {
        p.pid for p in psutil.process_iter(["cmdline"]) if name in " ".join(p.info["cmdline"] or [])
    }


def test_access_log_off_is_applied_in_place_and_the_replicas_stop_logging_requests(
    serveops: Any, repo: Path, cluster: Cluster, registry: Registry, expected: dict
) -> None:
    """`access_log: false`: the plan reconfigures (no restart), the model replica keeps its
    process, and the requests it answers after the apply write no access line."""
    app = f"breast-cancer--v{registry.versions[1]}"
    url = cluster.url("/breast-cancer")

    def serve(n: int) -> None:
        for _ in range(n):
            assert httpx.post(url, json=expected["body"], timeout=30).status_code == 200

    before = access_lines(cluster, app)
    serve(5)
    assert access_lines(cluster, app) >= before + 5  # on by default: a line per request
    pids = replica_pids(app)
    assert pids

    commit(repo, {SPEC: spec(registry.versions[1], routing="direct", access_log=False)}, "quiet")
    planned = serveops("plan", "--repo", str(repo), "--env", "staging", "-o", "json")
    assert planned.returncode == 0, planned.stderr
    actions = json.loads(planned.stdout)["actions"]
    assert app in {a["app"] for a in actions}
    assert {(a["op"], a["effect"]) for a in actions} == {("update", "reconfigure")}
    result = serveops("apply", "--repo", str(repo), "--env", "staging")
    assert result.returncode == 0, result.stderr + result.stdout

    # Serve reconfigures replicas asynchronously: a batch of requests must, within a deadline,
    # add no line; every later batch must add none either.
    deadline = time.monotonic() + 30
    while True:
        logged = access_lines(cluster, app)
        serve(5)
        if access_lines(cluster, app) == logged or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert access_lines(cluster, app) == logged, "the replica still logs every request"
    serve(5)
    assert access_lines(cluster, app) == logged
    assert replica_pids(app) == pids  # reconfigured in place

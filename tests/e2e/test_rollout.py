"""Rollouts on a real local Ray Serve under a steady request loop: zero downtime, shown.

One story on one deployment: v1 is deployed; a canary to v2 runs to 100% with analysis of the
router's real metrics (scraped from Ray's metrics export), gated by a pre-rollout smoke hook
(requests pinned to the candidate through the real router while it has no traffic share) and a
post-rollout command; then a canary to a candidate that is slow on purpose is aborted by its
analysis, and `serveops rollback` writes the revert commit. Throughout, a load loop sends
requests through the route: none may fail, and the router and the stable version never restart
(same actor, same PID).
"""

from __future__ import annotations

import json
import sys
import textwrap
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.cluster.status import DeploymentStatus, deployment_statuses
from controller.dev.demo import MODEL_NAME, sample_request
from controller.gitops.loop import run_until_settled
from controller.gitops.outcome import PassResult
from controller.gitops.reconciler import Controller
from controller.gitops.settings import ControllerSettings
from controller.gitops.state import StateStore
from controller.registry.mlflow import MlflowRegistry
from controller.serving.protocol import VERSION_HEADER
from controller.source.repository import RepoSource
from tests.e2e.conftest import Cluster, Registry, platform_policies, post_until_ok
from tests.support import commit, make_repo

pytestmark = pytest.mark.e2e
NAME = "rollout"
SPEC = f"deployments/staging/{NAME}.yaml"
RATE = 60.0  # requests per second the load loop aims at


# A good candidate passes by a wide margin: a loaded 2-core machine makes latencies noisy.
GOOD = """\
    steps:
      - weight: 10
        pause: 0s
      - weight: 50
        pause: 0s
    analysis:
      interval: 8s
      min_requests: 30
      max_error_rate_increase: 1
      max_p95_regression_pct: 300
      failure_limit: 1
"""
# The slow one (1.2 s per answer) gets 5%: it stays within its replica's threads, and its p95
# is far above a ceiling no healthy version gets near, whatever else runs on the machine.
SLOW = """\
    steps:
      - weight: 5
        pause: 0s
      - weight: 50
        pause: 0s
    analysis:
      interval: 8s
      min_requests: 10
      max_error_rate_increase: 1
      max_p95_latency_ms: 900
      max_p95_regression_pct: 300
      failure_limit: 1
"""


# Gates of the first canary: smoke requests to the candidate while it has no traffic share (it
# must answer them itself), and a command once it holds 100% (it must see the candidate).
HOOKS = f"""\
    hooks:
      pre_rollout:
        - name: smoke
          smoke:
            - body: {json.dumps(sample_request())}
            - body: [1, 2]  # not an object: the model server answers 400
              expect_status: 400
      post_rollout:
        - name: check
          command: [{json.dumps(sys.executable)}, "-c", "import os; assert os.environ['SERVEOPS_STAGE'] == 'post_rollout'"]
"""


def spec(version: str, rollout: str = GOOD) -> str:
    head = textwrap.dedent(
        f"""\
        apiVersion: serveops.dev/v1alpha1
        kind: ModelDeployment
        metadata:
          name: {NAME}
          environment: staging
          owner: e2e
        spec:
          route: /{NAME}
          model: models:/{MODEL_NAME}/{version}
          replicas: 1
          resources:
            num_cpus: 0.2
          rollout:
            strategy: canary
        """
    )
    return head + rollout


SLOW_MODEL = '''\
import time

import mlflow.pyfunc
from mlflow.models import set_model


class Slow(mlflow.pyfunc.PythonModel):
    """A candidate that answers correctly-shaped predictions, 1.2 s late: it must fail analysis."""

    def predict(self, context, model_input, params=None):
        time.sleep(1.2)
        return [0] * len(model_input)


set_model(Slow())
'''


@pytest.fixture(scope="module")
def slow_version(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A third version of the model, slow on purpose (models-from-code, no pickling)."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.datasets import load_breast_cancer

    mlflow.set_tracking_uri(registry.tracking_uri)
    code = tmp_path_factory.mktemp("slow") / "slow_model.py"
    code.write_text(SLOW_MODEL)
    data = load_breast_cancer(as_frame=True).data
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            registered_model_name=MODEL_NAME,
            signature=infer_signature(data, [0] * len(data)),
        )
    return str(info.registered_model_version)


@dataclass
class Load:
    """A steady request loop through the route, in threads, paced on a monotonic clock."""

    url: str
    rate: float = RATE
    threads: int = 16  # paced; more threads only queue deeper on 2 cores (see docs)
    statuses: Counter[int] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    sent: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    keep_answers: bool = False  # (wall time, version) of every answer, for benchmarks
    answers: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def _run(self, index: int) -> None:
        body = sample_request()
        period = self.threads / self.rate
        next_at = time.monotonic() + index * period / self.threads
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at += period
                began = time.monotonic()
                try:
                    response = client.post(self.url, json=body)
                    status, version = response.status_code, response.headers.get(VERSION_HEADER)
                    text = response.text[:200]
                except httpx.HTTPError as err:
                    status, version, text = 0, None, repr(err)
                with self._lock:
                    self.latencies.append(time.monotonic() - began)
                    self.sent += 1
                    self.statuses[status] += 1
                    if version:
                        self.versions[version] += 1
                        if self.keep_answers:
                            self.answers.append((time.time(), version))
                    if status != 200:
                        self.failures.append(f"{time.strftime('%H:%M:%S')} {status}: {text}")

    def __enter__(self) -> Load:
        self._started = time.monotonic()
        for i in range(self.threads):
            worker = threading.Thread(target=self._run, args=(i,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=60)
        self.seconds = time.monotonic() - self._started

    def latency_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    @property
    def achieved_rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def replicas(cluster: Cluster) -> dict[str, set[tuple[str, int]]]:
    """(actor id, pid) of every replica of this deployment's applications."""
    payload = httpx.get(f"{cluster.address}/api/serve/applications/", timeout=30).json()
    out: dict[str, set[tuple[str, int]]] = {}
    for app_name, app in (payload.get("applications") or {}).items():
        if app_name != NAME and not app_name.startswith(f"{NAME}--"):
            continue
        for dep in (app.get("deployments") or {}).values():
            for r in dep.get("replicas") or []:
                if r.get("state") == "RUNNING":
                    out.setdefault(app_name, set()).add((r["actor_id"], r["pid"]))
    return out


def drive(
    ctl: Controller,
    cluster: Cluster,
    until: str,
    watch: dict[str, set[tuple[str, int]]],
    timeout_s: float = 300.0,
) -> list[PassResult]:
    """Controller passes until the rollout reaches phase `until`; replicas in `watch` must keep
    their processes at every pass."""
    results: list[PassResult] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = ctl.reconcile_once()
        results.append(result)
        settled = ("applied", "progressing", "in_sync")
        allowed = (*settled, "aborted") if until == "aborted" else settled
        assert result.outcome in allowed, result.message
        now = replicas(cluster)
        for app_name, procs in watch.items():
            if app_name in now:
                assert now[app_name] == procs, f"{app_name} restarted: {procs} -> {now[app_name]}"
        state = ctl.store.rollouts("staging").get(NAME)
        if state is not None and state.state.phase == until:
            return results
        time.sleep(min(result.requeue_after, 1.0))
    stored = ctl.store.rollouts("staging").get(NAME)
    raise AssertionError(
        f"rollout did not reach {until!r} in {timeout_s}s: {[r.message for r in results[-3:]]}; "
        f"state {stored.state.to_json() if stored else None}; "
        f"events {ctl.store.rollout_events('staging', NAME)}"
    )


def settled_row(cluster: Cluster, timeout_s: float = 60.0) -> DeploymentStatus:
    """The deployment's status once Serve has carried out the last write. An apply ends with
    its clean write (the router's fallback removed), which Serve carries out after the PUT
    returned: the router is reconfigured in place, DEPLOYING (Progressing) for a moment."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = deployment_statuses(cluster.client().get(), "staging")
        [row] = [r for r in rows if r.name == NAME]
        if row.health != "Progressing" or time.monotonic() > deadline:
            return row
        time.sleep(0.5)


def weights(cluster: Cluster) -> dict[str, float]:
    live = cluster.client().get()
    config = live.apps[NAME].config["deployments"][0]["user_config"]
    return {t["version"]: t["weight"] for t in config["targets"]}


def test_canary_to_100_then_an_aborted_canary_under_load_without_a_failed_request(
    cluster: Cluster, registry: Registry, slow_version: str, serveops: Any, tmp_path: Path
) -> None:
    v1, v2 = registry.versions
    repo = tmp_path / "repo"
    make_repo(repo, {SPEC: spec(v1)}, "deploy v1")
    state = tmp_path / "state.db"
    store = StateStore(state)
    ctl = Controller(
        RepoSource(str(repo), branch="main"),
        cluster.client(),
        store,
        lambda: MlflowRegistry(registry.tracking_uri),
        ControllerSettings(
            "staging",
            interval_s=1,
            apply_timeout_s=180,
            actor="e2e",
            inconclusive_limit=20,
            policies=platform_policies(tmp_path),
            hook_commands=frozenset({sys.executable}),  # the post-rollout check's program
        ),
    )
    first = run_until_settled(ctl)
    assert first.outcome == "applied", first.message
    post_until_ok(cluster.url(f"/{NAME}"), sample_request())
    before = replicas(cluster)
    router, stable = before[NAME], before[f"{NAME}--v{v1}"]

    with Load(cluster.url(f"/{NAME}")) as load:
        time.sleep(2)
        # 1. A canary to 100%: v1 -> v2 in two analysed steps, then v2 alone.
        commit(repo, {SPEC: spec(v2, GOOD + HOOKS)}, "canary v2")
        results = drive(ctl, cluster, "completed", {NAME: router, f"{NAME}--v{v1}": stable})
        assert weights(cluster) == {v2: 100}
        messages = " ".join(r.message for r in results)
        assert "pre-rollout hooks passed: smoke (2/2 requests answered as expected)" in messages
        assert "post-rollout hooks passed: check (exit 0)" in messages
        steps = [(e.action, e.weight) for e in reversed(store.rollout_events("staging", NAME))]
        assert steps == [
            ("start", 0),
            ("set_weight", 10),
            ("set_weight", 50),
            ("set_weight", 100),  # verifying: v1 kept until the post-rollout hook passed
            ("complete", 100),
        ]
        time.sleep(3)  # v1 is removed after the routers moved: no request may notice
        stable_v2 = replicas(cluster)[f"{NAME}--v{v2}"]

        # 2. A canary to a candidate slow on purpose: its analysis fails and it is aborted.
        commit(repo, {SPEC: spec(slow_version, SLOW)}, "canary slow")
        results = drive(ctl, cluster, "aborted", {NAME: router, f"{NAME}--v{v2}": stable_v2})
        assert "analysis failed" in results[-1].message
        assert "p95 latency" in results[-1].message
        assert weights(cluster) == {v2: 100}
        time.sleep(3)
    assert replicas(cluster)[NAME] == router  # the router never restarted: reconfigure only
    assert replicas(cluster)[f"{NAME}--v{v2}"] == stable_v2

    [row] = [r for r in deployment_statuses(cluster.client().get(), "staging") if r.name == NAME]
    assert row.health == "Degraded"
    assert "analysis failed" in row.message
    # The same revision is not tried again; every pass says why, and exits 1.
    held = ctl.reconcile_once()
    assert held.outcome == "aborted", held.message
    assert held.exit_code == 1
    assert f"{NAME} is held on v{v2}" in held.message
    assert weights(cluster) == {v2: 100}

    listed = serveops("rollouts", "--env", "staging", "--state", str(state))
    assert listed.returncode == 0, listed.stderr
    assert "aborted" in listed.stdout

    # GitOps rollback: a revert commit; the next pass finds Git on v2 again, Healthy.
    back = serveops(
        "rollback", "--repo", str(repo), "--env", "staging", "--deployment", NAME,
        "--state", str(state),
    )  # fmt: skip
    assert back.returncode == 0, back.stderr
    assert f"model models:/{MODEL_NAME}/{slow_version} -> models:/{MODEL_NAME}/{v2}" in back.stdout
    assert run_until_settled(ctl).outcome == "applied"
    assert weights(cluster) == {v2: 100}
    row = settled_row(cluster)
    assert row.health == "Healthy", row.message

    print(
        f"\nload: {load.sent} requests in {load.seconds:.1f}s ({load.achieved_rate:.1f} req/s), "
        f"statuses {dict(load.statuses)}, versions {dict(load.versions)}, latency p50 "
        f"{load.latency_ms(0.5):.0f} ms p99 {load.latency_ms(0.99):.0f} ms"
    )
    events = [f"{e.at:%H:%M:%S} {e.action} {e.weight:g}" for e in store.rollout_events("staging")]
    assert load.failures == [], (load.failures[:3], load.failures[-3:], events)
    assert load.versions[v1]
    assert load.versions[v2]
    assert load.versions[slow_version]
    store.close()

"""A rollout does not start its candidate into a queue standing in front of the stable version
(controller/rollout/headroom.py), on a real local Ray Serve and MLflow store, a real Git
repository and the real controller: the router's gauge goes through Ray's metrics export to the
controller's scrape, as in production."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from controller.dev.demo import MODEL_NAME, sample_request
from controller.gitops.loop import run_until_settled
from controller.gitops.state import StateStore
from controller.rollout.router_metrics import RayMetricsSource
from tests.e2e.conftest import Cluster, Registry, git_controller, post_until_ok
from tests.e2e.load import LoadProcess
from tests.e2e.story import register_slow
from tests.support import commit, make_repo

pytestmark = pytest.mark.e2e
NAME = "headroom"
ENV = "staging"
SPEC = f"deployments/{ENV}/{NAME}.yaml"
# One slot of a model answering 1.2 s late: 3 requests a second build a queue in the router at
# once, and its estimated wait passes the start's bound (1 s of the 5 s a request may wait,
# with this 10 s timeout) within seconds.
RATE = 3.0


def spec(version: str) -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: serveops.dev/v1alpha1
        kind: ModelDeployment
        metadata: {{name: {NAME}, environment: {ENV}, owner: e2e}}
        spec:
          route: /{NAME}
          model: models:/{MODEL_NAME}/{version}
          replicas: 1
          resources: {{num_cpus: 0.2}}
          request_timeout_s: 10
          max_ongoing_requests: 1
          rollout:
            strategy: canary
            steps:
              - {{weight: 50, pause: 0s}}
        """
    )


def test_a_candidate_waits_for_the_stable_versions_queue_to_go(
    cluster: Cluster, registry: Registry, tmp_path: Path
) -> None:
    (tmp_path / "slow").mkdir()
    slow = register_slow(registry.tracking_uri, tmp_path / "slow")
    v2 = registry.versions[1]
    repo = tmp_path / "repo"
    make_repo(repo, {SPEC: spec(slow)}, "deploy the slow version")
    store = StateStore(tmp_path / "state.db")
    ctl = git_controller(cluster, registry, repo, store, ENV)
    assert run_until_settled(ctl).outcome == "applied"
    url = cluster.url(f"/{NAME}")
    post_until_ok(url, sample_request())
    metrics = RayMetricsSource(cluster.address)
    candidate = f"{NAME}--v{v2}"

    def queued_s() -> float:
        counts = metrics.scrape().get(NAME, {}).get(slow)
        return counts.slot_wait_s if counts is not None else 0.0

    def running() -> set[str]:
        return set(cluster.client().get().apps)

    try:
        with LoadProcess(url, RATE, sample_request(), timeout_s=30):
            deadline = time.monotonic() + 60
            while queued_s() <= 2.0 and time.monotonic() < deadline:
                time.sleep(1)
            assert queued_s() > 2.0, "no queue formed in front of the slow version"
            commit(repo, {SPEC: spec(v2)}, "v2")
            for _ in range(3):  # several passes, the queue standing all along
                ctl.reconcile_once()
                time.sleep(1)
            assert candidate not in running()  # its start's load not added to the queue
            stored = store.rollouts(ENV).get(NAME)
            assert stored is not None
            assert (stored.state.phase, stored.state.held_for_room) == ("loading", True)
            held_since = stored.state.held_since
            assert held_since is not None
            assert stored.state.waiting == (
                f"headroom on the serving path: {candidate} starts once a request to "
                f"{NAME}--v{slow} would wait at most 1s for a slot in the router "
                f"(held since {held_since:%H:%M:%S} UTC)"
            )
        # The load gone, the queue drains, and its peak leaves the gauge's 10 s: it starts.
        deadline = time.monotonic() + 120
        while candidate not in running() and time.monotonic() < deadline:
            ctl.reconcile_once()
            time.sleep(1)
        assert candidate in running()
        stored = store.rollouts(ENV).get(NAME)
        assert stored is not None
        assert stored.state.held_since is None
    finally:
        commit(repo, {SPEC: None}, "remove")  # the session's cluster is shared
        run_until_settled(ctl)

"""Zero downtime, shown (shortened; the full run is bench/zero_downtime.py).

On a real local Ray Serve and MLflow store, the real controller moves one deployment through a
canary to 100% gated by hooks (smoke requests pinned to the candidate through the real router
before it has a share, a command once it holds 100%), a canary aborted by its analysis (a
candidate 1.2 s late on purpose), a blue-green switch and its rollback (`serveops abort` while
switched), then the GitOps rollback (`serveops rollback`'s revert commit), under one steady
open request loop through the route (its own process). No client request may fail, and the
stable version's replicas and the router's keep their processes (same Ray actor, same PID) at
every controller pass. One story on one deployment: each rollout starts from where the last
one left the cluster, as a user's do.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from controller.cluster.serve_api import ServeClient
from controller.cluster.status import DeploymentStatus, deployment_statuses
from controller.dev.demo import MODEL_NAME, sample_request
from controller.gitops.loop import run_until_settled
from controller.gitops.state import StateStore
from controller.rollout.router_metrics import RayMetricsSource, window
from tests.e2e.conftest import Cluster, Registry, git_controller, post_until_ok
from tests.e2e.load import LoadProcess
from tests.e2e.story import Story, register_slow
from tests.support import make_repo

pytestmark = pytest.mark.e2e
NAME = "zerodt"
ENV = "staging"
SPEC = f"deployments/{ENV}/{NAME}.yaml"
# Requests per second, offered whatever the answers take. The issue asks for 50, which
# bench/zero_downtime.py shows; the suite runs next to other sessions' clusters on 2 shared
# cores, where a candidate's start (model load) and a blue-green preview (every request
# mirrored) take CPU the serving path needs (docs/benchmarks.md, zero downtime).
RATE = 20.0
# What fails a request here is a rollout dropping or erroring it, not a CPU-starved machine
# answering late: the router waits for the model up to 60 s (the client 90 s); latencies are
# printed, not asserted.
TIMEOUT_S = 60
# With Serve's default of 8 the router's handle backs off (up to 0.5 s) whenever a burst fills
# the model replica, answers fall behind the open loop and queue past any timeout (measured:
# 1,391 of 3,511 requests answered 504 at 20 req/s with 8 while the machine was 40% idle; none
# with 64, on a quieter machine). With 64 the replica queues them itself, in order, no gaps.
MAX_ONGOING = 64

# The good rollouts are judged on errors, with latency limits that only a broken candidate
# reaches: this test is about dropped requests, and on a loaded 2-core machine latency is the
# machine's. (Measured: a healthy candidate's cold answers at a p95 of 309 ms against the
# stable version's 33 ms, 831% above; a blue-green preview mirroring every request with the
# stable version itself at a p95 of 1.7 s and the candidate at 3.5 s, load average 4.5.)
ANALYSIS = """\
    analysis:
      interval: 6s
      min_requests: 15
      max_error_rate_increase: 1
      max_p95_latency_ms: 10000
      max_p95_regression_pct: 5000
      failure_limit: 1
"""
CANARY = (
    "  rollout:\n    strategy: canary\n    steps:\n      - {weight: 50, pause: 0s}\n" + ANALYSIS
)
SLOW_CANARY = """\
  rollout:
    strategy: canary
    steps:
      - {weight: 5, pause: 0s}
    analysis:
      interval: 6s
      min_requests: 5
      max_error_rate_increase: 1
      max_p95_latency_ms: 900
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
# A quarter of requests mirrored in preview: each one is served twice (bench: every request).
# Mirrors are best-effort: the router's governor drops them while the stable version is under
# pressure, and on a shared 2-core runner a 6 s window once held 4 mirrored answers (three
# inconclusive windows pause the rollout). Longer windows and a lower floor keep the preview's
# analysis conclusive; what this test asserts is that no client request fails.
BLUE_GREEN = (
    "  rollout:\n    strategy: blue_green\n    scale_down_delay: 10m\n    shadow_percent: 25\n"
    + ANALYSIS.replace("interval: 6s", "interval: 12s").replace(
        "min_requests: 15", "min_requests: 5"
    )
)


def spec(version: str, rollout: str, replicas: int = 1) -> str:
    head = textwrap.dedent(
        f"""\
        apiVersion: serveops.dev/v1alpha1
        kind: ModelDeployment
        metadata: {{name: {NAME}, environment: {ENV}, owner: e2e}}
        spec:
          route: /{NAME}
          model: models:/{MODEL_NAME}/{version}
          replicas: {replicas}
          resources: {{num_cpus: 0.2}}
          request_timeout_s: {TIMEOUT_S}
          max_ongoing_requests: {MAX_ONGOING}
        """
    )
    return head + rollout


@pytest.fixture(scope="module")
def slow(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> str:
    return register_slow(registry.tracking_uri, tmp_path_factory.mktemp("slow"))


def views(serveops: Any, state: Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    """`status -o json`, `rollouts -o json` and `rollouts` as a user reads it."""
    printed = []
    for args in (("status", "-o", "json"), ("rollouts", "-o", "json"), ("rollouts",)):
        done = serveops(args[0], "--env", ENV, "--state", str(state), *args[1:])
        assert done.returncode in (0, 1), done.stderr
        printed.append(done.stdout)
    return json.loads(printed[0]), json.loads(printed[1]), printed[2]


def settled_row(client: ServeClient, name: str, timeout_s: float = 60.0) -> DeploymentStatus:
    """The deployment's status once Serve has carried out the last write (an apply's clean
    write reconfigures the router in place: Progressing for a moment after the PUT)."""
    deadline = time.monotonic() + timeout_s
    while True:
        [row] = [r for r in deployment_statuses(client.get(), ENV) if r.name == name]
        if row.health != "Progressing" or time.monotonic() > deadline:
            return row
        time.sleep(0.5)


def test_four_rollouts_and_a_revert_under_a_steady_load_fail_no_request_or_stable_replica(
    cluster: Cluster, registry: Registry, slow: str, serveops: Any, tmp_path: Path
) -> None:
    v1, v2 = registry.versions
    repo = tmp_path / "repo"
    make_repo(repo, {SPEC: spec(v1, CANARY)}, "deploy v1")
    state = tmp_path / "state.db"
    store = StateStore(state)
    hooks = frozenset({sys.executable})  # the post-rollout check's program
    ctl = git_controller(cluster, registry, repo, store, ENV, hook_commands=hooks)
    assert run_until_settled(ctl).outcome == "applied"
    url = cluster.url(f"/{NAME}")
    post_until_ok(url, sample_request())
    story = Story(ctl, store, repo, SPEC, NAME, cluster.address, ENV)
    router = story.processes()[NAME]
    abort = ["abort", "--env", ENV, NAME, "--state", str(state), "--reason", "e2e rollback"]

    with LoadProcess(url, RATE, sample_request(), timeout_s=TIMEOUT_S + 30) as load:
        time.sleep(2)
        story.watch(NAME, f"{NAME}--v{v1}")
        to_100 = story.run("canary to 100%", "completed", {SPEC: spec(v2, CANARY + HOOKS)})
        story.watch(NAME, f"{NAME}--v{v2}")
        slowed = story.run("aborted canary", "aborted", {SPEC: spec(slow, SLOW_CANARY)})
        # Two replicas: the preview, mirroring a quarter of the requests, runs one (its share's)
        # and is scaled to two before the switch.
        switch = story.run("blue-green switch", "switched", {SPEC: spec(v1, BLUE_GREEN, 2)})
        sized = len(story.processes()[f"{NAME}--v{v1}"])
        story.run("blue-green rollback", "aborted", command=abort)
        # The aborted revision is not tried again: every pass says why, and exits 1.
        held = ctl.reconcile_once()
        status, rollouts, listed = views(serveops, state)
        # GitOps rollback to the canary's revision (HEAD~2: before the slow canary and the
        # blue-green commit): a revert commit; the next passes find Git on v2, Healthy.
        reverted = serveops("rollback", "--repo", str(repo), "--env", ENV, "--deployment", NAME,
                            "--to", "HEAD~2", "--reason", "e2e")  # fmt: skip
        back = run_until_settled(ctl)
        row = settled_row(cluster.client(), NAME)
        story.check()
    # Ray's export of the router's histograms: the slow version's own time (slot to answer) is
    # its 1.2 s; the quick one's stays far below it.
    counted = RayMetricsSource(cluster.address).scrape()
    slow_own = window(None, counted, NAME, slow).own_quantile_ms(0.5)
    quick_own = window(None, counted, NAME, v2).own_quantile_ms(0.5)

    for s in story.scenarios:
        print(f"\n{s.name}: {load.summary(s.started_at, s.ended_at).line()}; {s.events}")
    whole = load.summary()
    print(f"whole run: {whole.line()}, sent late p99 {load.lag_ms(0.99):.0f} ms")
    assert whole.failed == [], whole.failed[:5]
    assert story.restarts == []
    # The canary to 100%: gated by both hooks, v1 kept until the post-rollout hook passed.
    said = " ".join(to_100.messages)
    assert "pre-rollout hooks passed: smoke (2/2 requests answered as expected)" in said
    assert "post-rollout hooks passed: check (exit 0)" in said
    assert [e.split()[1:] for e in to_100.events] == [
        ["start", "0%"], ["set_weight", "50%"], ["set_weight", "100%"], ["complete", "100%"]
    ]  # fmt: skip
    # The slow canary: aborted by its analysis, on latency.
    assert "analysis failed" in slowed.messages[-1]
    assert "p95 latency" in slowed.messages[-1]
    assert slow_own is not None
    assert slow_own >= 1000
    assert quick_own is not None
    assert quick_own < 500
    assert any(" scale " in event for event in switch.events), switch.events  # 1 -> 2 replicas
    assert sized == 2
    assert story.processes()[NAME] == router  # weight changes were reconfigures only
    assert {v1, v2, slow} <= set(whole.versions)  # every version served along the way
    assert story.view_checks > 10  # status, rollouts and the passes told one story throughout
    assert (held.outcome, held.exit_code) == ("aborted", 1), held.message
    assert f"{NAME} is held on v{v2}" in held.message
    # The commands print the same model: `status` and `rollouts` agree with each other.
    assert status["deployments"] == rollouts["deployments"]
    [d] = [d for d in status["deployments"] if d["name"] == NAME]
    assert (d["rollout"]["phase"], d["health"]) == ("aborted", "Degraded")
    assert "aborted" in listed
    assert reverted.returncode == 0, reverted.stderr
    assert f"model models:/{MODEL_NAME}/{v1} -> models:/{MODEL_NAME}/{v2}" in reverted.stdout
    assert back.outcome in ("applied", "in_sync"), back.message
    assert row.health == "Healthy", row.message
    store.close()

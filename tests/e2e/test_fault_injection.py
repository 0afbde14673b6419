"""Real fault injection (issue 10): `serveops controller` as a process against the session's
real local Ray Serve, under load, through a canary; SIGKILLed once at each point of the rollout
it reaches (the apply starting the candidate, each step, the completion) and restarted at once
on the same state file. Then a canary back with the Ray dashboard stopped (SIGSTOP: it accepts
connections and never answers) for 10 s mid-rollout.

Asserted from the audit: the rollout converges, every step once and in order (none skipped or
repeated), the outage marks no revision failed; and from the load's own client: 0 failed
requests. bench/fault_injection.py is the long version (12 kills, a 30 s outage), with figures.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from controller.dev.demo import MODEL_NAME, sample_request
from controller.dev.tour_support import remove_applications
from controller.gitops.state import StateStore
from tests.e2e.conftest import Cluster, Registry
from tests.e2e.load import LoadProcess
from tests.support import commit, make_repo

pytestmark = pytest.mark.e2e
NAME, ENV = "faults", "faults"
SPEC = f"deployments/{ENV}/{NAME}.yaml"
WEIGHTS = [20, 50, 80]


def spec(version: str, canary: bool) -> str:
    text = textwrap.dedent(
        f"""\
        apiVersion: serveops.dev/v1alpha1
        kind: ModelDeployment
        metadata: {{name: {NAME}, environment: {ENV}, owner: tests}}
        spec:
          route: /{NAME}
          model: models:/{MODEL_NAME}/{version}
          replicas: 1
          resources: {{num_cpus: 0.1}}
        """
    )
    if canary:
        text += "  rollout:\n    strategy: canary\n    steps:\n" + "".join(
            f"      - {{weight: {w}, pause: 2s}}\n" for w in WEIGHTS
        )
    return text


class ControllerProcess:
    """`serveops controller` as a user starts it; SIGKILLed and started again on one state."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args, self.log = args, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).with_name("serveops")), *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def point_of(store: StateStore, head: str) -> str | None:
    """Where the rollout of `head` stands, as the state file says (None: not started)."""
    state = store.environment(ENV)
    applying = " (apply under way)" if state.applying is not None else ""
    rollout = store.rollouts(ENV).get(NAME)
    if rollout is None or rollout.state.commit != head:
        return f"starting{applying}" if applying else None
    r = rollout.state
    return f"{r.phase} step {r.step} at {r.weight:g}%{applying}"


def until_ended(store: StateStore, head: str, timeout_s: float = 300) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rollout = store.rollouts(ENV).get(NAME)
        if rollout and rollout.state.commit == head and rollout.state.phase in ENDED:
            return rollout.state.phase
        time.sleep(0.3)
    return "not ended"


ENDED = ("completed", "aborted")


def steps_of(store: StateStore, head: str) -> list[float]:
    events = reversed(store.rollout_events(ENV, NAME, limit=1000))
    return [e.weight for e in events if e.commit == head and e.action == "set_weight"]


def test_killed_at_every_point_of_a_canary_and_a_dashboard_outage_it_converges(
    cluster: Cluster, registry: Registry, tmp_path: Path
) -> None:
    v1, v2 = registry.versions[:2]
    repo, state = tmp_path / "repo", tmp_path / "state" / "state.db"
    policies = tmp_path / "platform-policies"
    policies.mkdir()
    make_repo(repo, {SPEC: spec(v1, canary=False)}, "v1")
    ctl = ControllerProcess(
        [
            "controller", "--repo", str(repo), "--branch", "main", "--env", ENV,
            "--address", cluster.address, "--http-port", str(cluster.http_port),
            "--registry-uri", registry.tracking_uri, "--interval", "1s", "--state", str(state),
            "--policies", str(policies), "--timeout", "300",
        ],
        tmp_path / "controller.log",
    )  # fmt: skip
    rng = random.Random(7)
    kills: list[str] = []
    try:
        ctl.start()
        store = StateStore(state) if state.exists() else None
        deadline = time.monotonic() + 300
        while store is None or store.environment(ENV).last_applied_commit is None:
            assert time.monotonic() < deadline, (tmp_path / "controller.log").read_text()[-3000:]
            time.sleep(0.5)
            store = store or (StateStore(state) if state.exists() else None)
        route = f"http://127.0.0.1:{cluster.http_port}/{NAME}"
        with LoadProcess(route, 10.0, sample_request()) as load:
            time.sleep(2)
            head = commit(repo, {SPEC: spec(v2, canary=True)}, "canary to v2")
            seen: set[str] = set()
            deadline = time.monotonic() + 400
            while True:
                assert time.monotonic() < deadline, f"not converged; kills at {kills}"
                rollout = store.rollouts(ENV).get(NAME)
                if rollout and rollout.state.commit == head and rollout.state.phase in ENDED:
                    break
                point = point_of(store, head)
                if point is None or point in seen:
                    time.sleep(0.1)
                    continue
                seen.add(point)
                time.sleep(rng.uniform(0, 0.8))
                ctl.kill()
                kills.append(point)
                ctl.start()
            print(f"{len(kills)} kills, at: {kills}")
            assert until_ended(store, head) == "completed"
            assert steps_of(store, head) == WEIGHTS  # each step once, in order, none skipped
            assert len(kills) >= 4, kills  # the start and each of the three steps at least

            # The dashboard stops answering for 10 s at the second step of a canary back.
            back = commit(repo, {SPEC: spec(v1, canary=True)}, "canary back to v1")
            while not ((r := store.rollouts(ENV).get(NAME)) and r.state.commit == back
                       and r.state.step >= 1):  # fmt: skip
                time.sleep(0.2)
            [dashboard] = [
                p
                for p in psutil.process_iter(["cmdline"])
                if any("dashboard/dashboard.py" in c for c in p.info["cmdline"] or [])
                and any(str(cluster.ray_dir) in c for c in p.info["cmdline"] or [])
            ]
            dashboard.suspend()
            try:
                time.sleep(10)
            finally:
                dashboard.resume()
            assert until_ended(store, back) == "completed"
            assert steps_of(store, back) == WEIGHTS
            assert store.environment(ENV).last_failed_commit != back  # transient, not failed
        summary = load.summary()
        assert summary.requests > 100
        assert not summary.failed, summary.line()
        store.close()
    finally:
        ctl.stop()
        remove_applications(cluster.address, cluster.http_port, NAME)

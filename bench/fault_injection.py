"""Fault injection: `serveops controller` SIGKILLed at every point of a canary, under load.

On a real local Ray Serve (2 CPUs, replicas of 0.2 CPU), a real MLflow store and a real Git
repository, the real `serveops controller` runs as a process (interval 1 s). v1 is deployed;
then a canary to v2 with nine steps (10% to 90%, a short pause each) is committed while an
open request loop (its own process) sends `--rate` requests per second through the route.

The script watches the controller's state file and kills the controller (SIGKILL, the whole
process group) once at each new point it sees: the apply that starts the candidate under way,
then each step, then the completion's cleanup, at a random moment up to `--jitter` seconds into
it; it restarts the controller at once with the same state file (so the same identity). Until
the rollout completes or `--kills` kills are done.

Printed: each kill (where, the time until the restarted controller held the lease again and
until the rollout's next event), then the rollout's events read back from the audit (every step
once, in order: none skipped or repeated), and the load's failed requests (target 0).

Then (`--outage`, default 30 s) a canary back to v1, with the Ray dashboard stopped (SIGSTOP:
it accepts connections and never answers) for that long at its third step: the controller's
passes fail as transient meanwhile (the revision is not marked failed), and the rollout goes on
when the dashboard answers again, every step once.

    flock /tmp/serveops-ray.lock .venv/bin/python bench/fault_injection.py [--kills 12] [--rate 20]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serving_setup import (
    load_average,
    registered_models,
    spec_yaml,
    start_ray,
    wait_answering,
)
from controller.dev.demo import sample_request
from controller.dev.localray import free_port, kill_tree
from controller.gitops.state import StateStore
from tests.e2e.load import LoadProcess
from tests.support import commit, make_repo

NAME = "faults"
ENV = "bench"
SPEC = f"deployments/{ENV}/{NAME}.yaml"
WEIGHTS = [10, 20, 30, 40, 50, 60, 70, 80, 90]
CANARY = "  rollout:\n    strategy: canary\n    steps:\n" + "".join(
    f"      - {{weight: {w}, pause: 3s}}\n" for w in WEIGHTS
)


@dataclass
class Kill:
    point: str
    at: float
    resumed_s: float | None = None  # until the restarted controller held the lease
    next_event_s: float | None = None  # until the rollout's next event after the kill


class ControllerProcess:
    """`serveops controller` as a user starts it; SIGKILL and start again on the same state."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self.proc.pid

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
                kill_tree(self.proc.pid)


def point_of(store: StateStore) -> str | None:
    """Where the rollout stands, as the state file says: None before it started."""
    state = store.environment(ENV)
    rollout = store.rollouts(ENV).get(NAME)
    applying = " (apply under way)" if state.applying is not None else ""
    if rollout is None or rollout.state.commit != (state.admitted.commit if state.admitted else ""):
        return f"starting{applying}" if applying else None
    r = rollout.state
    return f"{r.phase} step {r.step} at {r.weight:g}%{applying}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--jitter", type=float, default=1.5, help="seconds into a point")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--outage", type=float, default=30.0, help="seconds the dashboard is stopped (0: skip)"
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print(f"load before: {load_average()}", flush=True)

    models = registered_models()
    v1, v2 = models.versions[:2]
    work = Path(tempfile.mkdtemp(prefix="serveops-faults-"))
    repo, state = work / "repo", work / "state" / "state.db"
    policies = work / "platform-policies"  # the operator's: none, this is no gate run
    policies.mkdir()
    make_repo(repo, {SPEC: spec_yaml(NAME, v1, ENV)}, "v1")
    ray = start_ray()
    http_port = free_port()
    bin_dir = Path(sys.executable).parent
    ctl = ControllerProcess(
        [
            str(bin_dir / "serveops"),
            "controller",
            "--repo",
            str(repo),
            "--branch",
            "main",
            "--env",
            ENV,
            "--address",
            ray.address,
            "--http-port",
            str(http_port),
            "--registry-uri",
            models.tracking_uri,
            "--interval",
            "1s",
            "--state",
            str(state),
            "--policies",
            str(policies),
            "--timeout",
            "300",
        ],
        {**os.environ, "COLUMNS": "200"},
        work / "controller.log",
    )
    kills: list[Kill] = []
    try:
        ctl.start()
        route = f"http://127.0.0.1:{http_port}/{NAME}"
        wait_answering(route)
        store = StateStore(state)
        while store.environment(ENV).last_applied_commit is None:
            time.sleep(0.5)
        print(f"v1 deployed by the controller; workdir {work}", flush=True)

        with LoadProcess(route, args.rate, sample_request()) as load:
            time.sleep(3)
            head = commit(repo, {SPEC: spec_yaml(NAME, v2, ENV, CANARY)}, "canary v2")
            seen: set[str] = set()
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                rollout = store.rollouts(ENV).get(NAME)
                current = rollout is not None and rollout.state.commit == head
                if current and rollout.state.phase in ("completed", "aborted"):  # type: ignore[union-attr]
                    break
                point = point_of(store)
                if point is None or point in seen or len(kills) >= args.kills:
                    time.sleep(0.1)
                    continue
                seen.add(point)
                time.sleep(rng.uniform(0, args.jitter))
                events_before = len(store.rollout_events(ENV, NAME, limit=1000))
                ctl.kill()
                killed_at = time.monotonic()
                kill = Kill(point, killed_at)
                kills.append(kill)
                ctl.start()
                while time.monotonic() - killed_at < 120:
                    lease = store.lease(ENV)
                    if (
                        kill.resumed_s is None
                        and lease
                        and lease.instance.startswith(
                            f"{ctl.proc.pid}:"  # type: ignore[union-attr]
                        )
                    ):
                        kill.resumed_s = time.monotonic() - killed_at
                    if len(store.rollout_events(ENV, NAME, limit=1000)) > events_before:
                        kill.next_event_s = time.monotonic() - killed_at
                    if kill.resumed_s is not None and kill.next_event_s is not None:
                        break
                    time.sleep(0.1)
                print(
                    f"kill {len(kills):2d} at {point}: lease back in "
                    f"{_s(kill.resumed_s)}, next rollout event in {_s(kill.next_event_s)}",
                    flush=True,
                )
            time.sleep(2)
            kills_ended = time.time()
            _verify(store, head, "SIGKILLs")
            resumed = [k.resumed_s for k in kills if k.resumed_s is not None]
            print(f"kills {len(kills)} at {len({k.point for k in kills})} distinct points")
            if resumed:
                print(
                    f"lease back after a kill: median {sorted(resumed)[len(resumed) // 2]:.1f}s, "
                    f"max {max(resumed):.1f}s"
                )
            if args.outage > 0:
                back = commit(repo, {SPEC: spec_yaml(NAME, v1, ENV, CANARY)}, "canary back to v1")
                outage(store, ray.temp_dir, back, args.outage)
                _verify(store, back, f"a {args.outage:g}s dashboard outage")
        print(f"load during the kills: {load.summary(until=kills_ended).line()}")
        print(f"load, whole run: {load.summary().line()}")
        print(f"load after: {load_average()}")
        store.close()
    finally:
        ctl.stop()
        ray.stop()


def _verify(store: StateStore, head: str, during: str) -> None:
    """The rollout of `head` read back from the audit: completed, every step once, in order."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        rollout = store.rollouts(ENV).get(NAME)
        if rollout and rollout.state.commit == head and rollout.state.phase in _ENDED:
            break
        time.sleep(0.5)
    rollout = store.rollouts(ENV).get(NAME)
    phase = rollout.state.phase if rollout and rollout.state.commit == head else "not ended"
    events = [e for e in reversed(store.rollout_events(ENV, NAME, limit=1000)) if e.commit == head]
    weights = [e.weight for e in events if e.action == "set_weight"]
    repeated = len(weights) - len(set(weights))
    skipped = [w for w in WEIGHTS if w not in weights]
    print(
        f"\nthrough {during}: rollout {phase}; steps repeated {repeated}, skipped {len(skipped)} "
        f"{skipped}, in order {weights == sorted(weights)}; events "
        f"{[(e.action, e.weight) for e in events]}",
        flush=True,
    )


_ENDED = ("completed", "aborted")


def outage(store: StateStore, ray_dir: Path, head: str, seconds: float) -> None:
    """Stop the Ray dashboard (SIGSTOP: it accepts connections and never answers, the worse
    case) for `seconds` once the rollout of `head` is at its third step, then let it go on."""
    while True:
        rollout = store.rollouts(ENV).get(NAME)
        if rollout and rollout.state.commit == head and rollout.state.step >= 2:
            break
        time.sleep(0.2)
    [dashboard] = [
        p
        for p in psutil.process_iter(["cmdline"])
        if any("dashboard/dashboard.py" in c for c in p.info["cmdline"] or [])
        and any(str(ray_dir) in c for c in p.info["cmdline"] or [])
    ]
    failed_before = sum(1 for r in store.history(ENV, 1000) if r.result == "failed")
    print(f"\ndashboard (pid {dashboard.pid}) stopped for {seconds:g}s at step 3", flush=True)
    dashboard.suspend()
    time.sleep(seconds)
    dashboard.resume()
    failed = sum(1 for r in store.history(ENV, 1000) if r.result == "failed") - failed_before
    print(f"dashboard answering again; failed passes recorded meanwhile: {failed}", flush=True)


def _s(value: float | None) -> str:
    return f"{value:.1f}s" if value is not None else "-"


if __name__ == "__main__":
    main()

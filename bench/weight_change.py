"""A weight change reaches the router in under 1 s after the controller decides it.

On a real local Ray Serve (2 CPUs) and MLflow store, the real controller runs a canary v1 -> v2
with steps 10/20/30/40/50% (no pause, no analysis: one step per pass) and then 100%. For every
weight it decides, the bench takes:

- decided: the rollout event's time (the controller persists its decision before it applies it);
- PUT: when the controller's `PUT /api/serve/applications/` with the new router config started
  and returned (a client wrapper records them);
- reconfigured: when the router replica logged its new targets (`reconfigure()`, read from its
  Serve log file: the moment the router applies them);
- first answer: the first answer routed by the new weights. The router names the weights it
  routed a request with (`x-serveops-routing`, `routing_id` of its targets); an open loop (own
  process) sends `--rate` requests per second through the route. Its send and receive times
  bound the moment it was routed; on a saturated machine both include queueing.

Prints each change, and the median and max of decided -> reconfigured against the 1 s target.

    .venv/bin/python bench/weight_change.py [--rate 50]
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serving_setup import (
    load_average,
    registered_models,
    spec_yaml,
    start_ray,
    wait_answering,
)
from controller.cluster.live import LiveState
from controller.cluster.render import version_app_name
from controller.cluster.serve_api import ServeClient
from controller.dev.demo import sample_request
from controller.dev.localray import free_port
from controller.gitops.loop import run_until_settled
from controller.gitops.reconciler import Controller
from controller.gitops.settings import ControllerSettings
from controller.gitops.state import StateStore
from controller.policy.source import PoliciesGiven
from controller.registry.mlflow import MlflowRegistry
from controller.serving.protocol import Target, routing_id
from controller.source.repository import RepoSource
from tests.e2e.load import LoadProcess
from tests.e2e.story import Story
from tests.support import make_repo

NAME = "wc"
ENV = "staging"
SPEC = f"deployments/{ENV}/{NAME}.yaml"
STEPS = [10, 20, 30, 40, 50]
CANARY = "  rollout:\n    strategy: canary\n    steps:\n" + "".join(
    f"      - {{weight: {w}, pause: 0s}}\n" for w in STEPS
)


class TimedClient(ServeClient):
    """A ServeClient that records when each PUT started and returned (wall clock)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.puts: list[tuple[float, float]] = []

    def put(self, apps: list[dict[str, Any]], live: LiveState) -> None:
        started = time.time()
        super().put(apps, live)
        self.puts.append((started, time.time()))


LOGGED = re.compile(
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}).*router " + NAME + r" targets (\[.*?\]) fallback"
)


def router_log_times(ray_dir: Path) -> dict[str, float]:
    """routing_id -> when the router replica first logged those targets (its reconfigure)."""
    out: dict[str, float] = {}
    for path in sorted(ray_dir.glob(f"session_*/logs/serve/replica_{NAME}_Router_*.log")):
        for line in path.read_text(errors="replace").splitlines():
            match = LOGGED.search(line)
            if match is None:
                continue
            when = dt.datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").astimezone()
            targets = [Target(**t) for t in ast.literal_eval(match[2])]
            out.setdefault(routing_id(targets), when.timestamp())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    args = parser.parse_args()

    models = registered_models()
    v1, v2 = models.versions
    ray = start_ray()
    try:
        client = TimedClient(ray.address, http_port=free_port())
        repo = models.root / "repo"
        make_repo(repo, {SPEC: spec_yaml(NAME, v1, ENV, CANARY)}, "deploy v1")
        store = StateStore(models.root / "state.db")
        ctl = Controller(
            RepoSource(str(repo), branch="main"),
            client,
            store,
            lambda: MlflowRegistry(models.tracking_uri),
            ControllerSettings(
                ENV, interval_s=1, apply_timeout_s=300, actor="bench", policies=PoliciesGiven()
            ),
        )
        assert run_until_settled(ctl).outcome == "applied"
        url = f"http://127.0.0.1:{client.http_port}/{NAME}"
        wait_answering(url)
        story = Story(ctl, store, repo, SPEC, NAME, ray.address, ENV, settle_s=2)
        print(f"load average at start: {load_average()}")
        with LoadProcess(url, args.rate, sample_request()) as load:
            time.sleep(2)
            story.run("canary", "completed", {SPEC: spec_yaml(NAME, v2, ENV, CANARY)})
        stable, candidate = version_app_name(NAME, v1), version_app_name(NAME, v2)
        reconfigured = router_log_times(ray.temp_dir)

        delays = []
        events = reversed(store.rollout_events(ENV, NAME))
        for e in [e for e in events if e.action in ("set_weight", "complete")]:
            w = 100.0 if e.action == "complete" else e.weight
            targets = [Target(app=candidate, version=v2, weight=w)]
            if w < 100:
                targets.insert(0, Target(app=stable, version=v1, weight=100 - w))
            expected = routing_id(targets)
            decided = e.at.timestamp()
            put = next(((s, r) for s, r in client.puts if s >= decided), None)
            routed = [a for a in load.answers if a.routing == expected]
            applied = reconfigured.get(expected)
            if put is None or applied is None or not routed:
                print(f"{e.action} {w:g}%: no PUT, log line or answer for these weights")
                continue
            first = min(routed, key=lambda a: a.sent_at)
            delays.append(applied - decided)
            print(
                f"{e.action} {w:g}%: PUT started +{put[0] - decided:.3f}s, returned "
                f"+{put[1] - decided:.3f}s, router reconfigured +{applied - decided:.3f}s, first "
                f"answer routed by it sent +{first.sent_at - decided:.3f}s, received "
                f"+{first.received_at - decided:.3f}s"
            )
        summary = load.summary()
        print(f"load: {summary.line()}")
        if delays:
            print(
                f"decided -> applied at the router: median {statistics.median(delays):.3f}s, "
                f"max {max(delays):.3f}s of {len(delays)} changes (target < 1 s; "
                f"resolution {1000 / args.rate:.0f} ms)"
            )
        print(f"load average at end: {load_average()}")
        client.close()
        store.close()
    finally:
        ray.stop()


if __name__ == "__main__":
    main()

"""A controller pass with nothing to do, 200 deployments: target < 200 ms plus Serve's GET.

Desired state: a real Git repository with 200 deployment files (one environment) and an
in-memory registry. Live state: Ray's `GET /api/serve/applications/` in the exact shape a real
Serve returned for one deployment (`bench/fixtures/serve_get_steady.json`, recorded by
`bench/zero_downtime.py --record-get`), repeated for the 200 deployments with their rendered
configs: 400 applications, in sync with Git. The state store is a real SQLite file.

A first pass records the commit as applied; the passes timed after it find nothing to do
(`in_sync`). Every other pass clears the controller's cache of the commit's parsed manifests
first: the same pass as before that cache, in the same run. Prints the pass's median time, the part spent in the GET (reading and parsing the
snapshot: what a real GET costs the controller besides Serve's own time to answer), and the pass
without the GET, against the 200 ms target.

    .venv/bin/python bench/controller_noop.py [--passes 20]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serving_setup import load_average
from controller.cluster.live import LiveState
from controller.cluster.render import RenderSettings, render_environment
from controller.gitops.reconciler import Controller
from controller.gitops.settings import ControllerSettings
from controller.gitops.state import StateStore
from controller.policy.source import PoliciesGiven
from controller.registry.mlflow import FixedRegistry
from controller.source.repository import RepoSource
from controller.spec.manifest import load_manifests
from controller.sync.read import _manifests_at
from tests.support import deployment_yaml, make_repo

N = 200
ENV = "prod"
FIXTURE = Path(__file__).with_name("fixtures") / "serve_get_steady.json"


class SnapshotServe:
    """ServeAPI over a recorded GET payload: `get` parses the text as ServeClient.get does."""

    address = "http://snapshot"

    def __init__(self, payload_text: str) -> None:
        self.payload_text = payload_text
        self.get_seconds: list[float] = []

    def get(self) -> LiveState:
        started = time.perf_counter()
        live = LiveState.from_api(json.loads(self.payload_text))
        self.get_seconds.append(time.perf_counter() - started)
        return live

    def put(self, apps: list[dict[str, Any]], live: LiveState) -> None:
        raise AssertionError("a pass with nothing to do wrote to Serve")


def live_payload(template: dict[str, Any], desired_apps: list[dict[str, Any]]) -> dict[str, Any]:
    """Ray's payload for `desired_apps`: each app in the shape of the template's app of the
    same role (router or version), with its own config, name and route."""
    by_role = {
        app["deployed_app_config"]["args"]["serveops"]["role"]: app
        for app in template["applications"].values()
    }
    apps = {}
    for config in desired_apps:
        app = copy.deepcopy(by_role[config["args"]["serveops"]["role"]])
        app["name"] = config["name"]
        app["route_prefix"] = config.get("route_prefix")
        app["deployed_app_config"] = copy.deepcopy(config)
        for dep in app["deployments"].values():
            for replica in dep.get("replicas") or []:
                replica["replica_id"] = f"{config['name']}-{replica['replica_id']}"
        apps[config["name"]] = app
    return {**template, "applications": apps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passes", type=int, default=20)
    parser.add_argument("--template", type=Path, default=FIXTURE)
    args = parser.parse_args()

    template = json.loads(args.template.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = {
            f"deployments/{ENV}/model-{i:03d}.yaml": deployment_yaml(
                name=f"model-{i:03d}", environment=ENV, model=f"models:/model-{i:03d}/3"
            )
            for i in range(N)
        }
        make_repo(root / "repo", files)
        registry = FixedRegistry({f"model-{i:03d}": {"3": "3"} for i in range(N)})
        desired = render_environment(
            ENV, load_manifests(files, ENV), registry, RenderSettings()
        ).apps
        payload = json.dumps(live_payload(template, desired))
        serve = SnapshotServe(payload)
        store = StateStore(root / "state.db")
        ctl = Controller(
            RepoSource(str(root / "repo"), branch="main"),
            serve,
            store,
            lambda: registry,
            ControllerSettings(ENV, actor="bench", policies=PoliciesGiven()),
        )
        first = ctl.reconcile_once()
        assert first.outcome == "in_sync", first.message  # Serve already holds Git's state
        print(f"deployments: {N}, live applications: {len(desired)}, GET payload: "
              f"{len(payload) / 1e6:.2f} MB; load average {load_average()}")  # fmt: skip
        totals, gets, cpus, cold = [], [], [], []
        for _ in range(args.passes):
            serve.get_seconds.clear()
            started, cpu = time.perf_counter(), time.process_time()
            result = ctl.reconcile_once()
            totals.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu)
            gets.append(sum(serve.get_seconds))
            assert result.outcome == "in_sync", result.message
            # The same pass reading and parsing the commit's files again (no manifest cache).
            _manifests_at.cache_clear()
            serve.get_seconds.clear()
            started = time.perf_counter()
            ctl.reconcile_once()
            cold.append(time.perf_counter() - started - sum(serve.get_seconds))
        store.close()

    total, get = statistics.median(totals), statistics.median(gets)
    without = statistics.median(t - g for t, g in zip(totals, gets, strict=True))
    print(f"pass with nothing to do: median {total * 1000:.0f} ms of {args.passes} "
          f"(min {min(totals) * 1000:.0f}, max {max(totals) * 1000:.0f})")  # fmt: skip
    print(f"  of which the GET (parse {len(payload) / 1e6:.2f} MB into live state): "
          f"median {get * 1000:.0f} ms")  # fmt: skip
    print(f"  pass without the GET: median {without * 1000:.0f} ms (target < 200 ms)")
    print(
        f"  the same pass parsing the commit's files again, without the GET: median "
        f"{statistics.median(cold) * 1000:.0f} ms (passes alternate)"
    )
    print(
        f"  CPU time of the pass (this process, GET included): median "
        f"{statistics.median(cpus) * 1000:.0f} ms: the wall time above less waiting for a core"
    )
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()

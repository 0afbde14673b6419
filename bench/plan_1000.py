"""Plan for 1,000 deployments against a live state of 1,000 applications, no cluster.

Desired state: a real Git repository with 1,000 deployment files. Live state: a snapshot in the
exact shape of Ray's `GET /api/serve/applications/` (recorded from the rendered configs, with
one deployment in ten on an older model version and one in twenty scaled differently), served
by an in-memory ServeAPI. Prints the time of each stage and the whole `plan_revision`, and the
whole as a ratio of a baseline measured in the same run: parsing the same snapshot JSON.

    .venv/bin/python bench/plan_1000.py
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.cluster.live import LiveState
from controller.cluster.render import RenderSettings, render_environment
from controller.registry.mlflow import FixedRegistry
from controller.source.git import read_snapshot
from controller.spec.manifest import load_manifests
from controller.sync.plan import Source, make_plan
from controller.sync.read import Revision, plan_revision
from tests.support import deployment_yaml, make_repo

N = 1000
RUNS = 5


class SnapshotServe:
    """ServeAPI over a recorded GET payload (read-only)."""

    address = "http://snapshot"

    def __init__(self, payload_text: str) -> None:
        self.payload_text = payload_text

    def get(self) -> LiveState:
        return LiveState.from_api(json.loads(self.payload_text))

    def put(self, apps: list[dict[str, Any]], live: LiveState) -> None:
        raise RuntimeError("read-only snapshot")


def build(root: Path) -> tuple[Path, FixedRegistry, str]:
    files = {
        f"deployments/prod/model-{i:04d}.yaml": deployment_yaml(
            name=f"model-{i:04d}", environment="prod", model=f"models:/model-{i:04d}/3"
        )
        for i in range(N)
    }
    registry = FixedRegistry({f"model-{i:04d}": {"2": "2", "3": "3"} for i in range(N)})
    repo = root / "repo"
    make_repo(repo, files)
    # The snapshot: what Ray would return after these configs were applied, with some drift.
    desired = render_environment("prod", load_manifests(files, "prod"), registry, RenderSettings())
    apps = copy.deepcopy(desired.apps)
    for app in apps:
        idx = int(app["name"][6:10])
        if idx % 10 == 0 and "--v" in app["name"]:
            app["name"] = app["name"].replace("--v3", "--v2")
            app["args"]["model_uri"] = app["args"]["model_uri"].replace("/3", "/2")
            app["args"]["version"] = "2"
        elif idx % 10 == 0:  # its router still sends traffic to v2
            [target] = app["deployments"][0]["user_config"]["targets"]
            target.update(app=target["app"].replace("--v3", "--v2"), version="2")
        if idx % 20 == 5 and "--v" in app["name"]:
            app["deployments"][0]["num_replicas"] = 2
    payload = {
        "applications": {
            a["name"]: {
                "name": a["name"],
                "status": "RUNNING",
                "message": "",
                "route_prefix": a.get("route_prefix"),
                "deployed_app_config": a,
                "deployments": {
                    d["name"]: {
                        "name": d["name"],
                        "status": "HEALTHY",
                        "message": "",
                        "replicas": [],
                    }
                    for d in a["deployments"]
                },
            }
            for a in apps
        },
        "http_options": {"host": "127.0.0.1", "port": 8000},
    }
    return repo, registry, json.dumps(payload)


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo, registry, snapshot = build(Path(tmp))
        serve = SnapshotServe(snapshot)
        target = Revision(str(repo), "HEAD", "prod")
        whole, baseline = [], []
        for _ in range(RUNS):
            baseline.append(timed(lambda: json.loads(snapshot))[0])
            t, plan = timed(lambda: plan_revision(target, serve, registry))
            whole.append(t)
        # One breakdown run, stage by stage.
        t_git, snap = timed(lambda: read_snapshot(repo, "HEAD"))
        t_parse, manifests = timed(lambda: load_manifests(snap.files, "prod"))
        t_render, desired = timed(
            lambda: render_environment("prod", manifests, registry, RenderSettings())
        )
        t_live, live = timed(serve.get)
        src = Source(repo=str(repo), rev="HEAD", commit=snap.commit)
        t_diff, _ = timed(lambda: make_plan(desired, live, source=src, address=serve.address))

    counts = {
        op: sum(1 for a in plan.actions if a.op == op) for op in ("create", "update", "delete")
    }
    median = statistics.median(whole)
    print(
        f"deployments: {N}, live applications: {len(live.apps)}, snapshot: {len(snapshot) / 1e6:.1f} MB"
    )
    print(f"plan actions: {counts}")
    print(
        f"plan_revision, whole: median {median:.3f} s of {RUNS} "
        f"({', '.join(f'{t:.3f}' for t in whole)}); target < 1 s"
    )
    print(
        f"  baseline json.loads(snapshot): median {statistics.median(baseline):.3f} s; "
        f"plan / baseline = {median / statistics.median(baseline):.1f}x"
    )
    print(
        f"  stages: git read {t_git:.3f} s, parse+validate {t_parse:.3f} s, "
        f"resolve+render {t_render:.3f} s, live parse {t_live:.3f} s, diff {t_diff:.3f} s"
    )


if __name__ == "__main__":
    main()

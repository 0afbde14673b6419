"""Commit to serving: `serveops apply` versus Ray's own `serve deploy` of the same config.

On a real local Ray Serve (2 CPUs) with a real MLflow store, a deployment is moved between two
model versions. Each trial measures, from the moment the command starts to the first response
answered by the new version (a prober POSTs every 20 ms):

- serveops: `serveops apply --repo R --rev <commit> --env bench` (plan + 3 phases)
- baseline: `serve deploy config.yaml`, the config being exactly what serveops renders for
  that commit (the same applications, so the same model load).

Trials alternate which goes first; the state is reset to the old version between trials.
Prints each trial and the ratio of medians. Target: at most 1.2.

    .venv/bin/python bench/commit_to_serving.py [--trials 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.cluster.serve_api import ServeClient, merged_config
from controller.dev.demo import MODEL_NAME, sample_request, train_and_register
from controller.dev.localray import LocalRay, free_port
from controller.registry.mlflow import MlflowRegistry
from controller.serving.protocol import VERSION_HEADER
from controller.sync.read import Revision, plan_revision
from tests.support import commit, make_repo

SPEC = "deployments/bench/model.yaml"
BIN = Path(sys.executable).parent


def spec(version: str) -> str:
    return f"""\
apiVersion: serveops.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: model, environment: bench, owner: bench}}
spec:
  route: /model
  model: models:/{MODEL_NAME}/{version}
  replicas: 1
  resources: {{num_cpus: 0.25}}
"""


def first_answer_by(url: str, version: str, stop: threading.Event, out: dict[str, float]) -> None:
    body = sample_request(1)
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            try:
                r = client.post(url, json=body)
                if r.status_code == 200 and r.headers.get(VERSION_HEADER) == version:
                    out["t"] = time.monotonic()
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.02)


def watch_app(address: str, app: str, stop: threading.Event, out: dict[str, float]) -> None:
    """When the new version's application appears on Serve (the PUT) and when it is RUNNING."""
    with httpx.Client(timeout=5) as client:
        while not stop.is_set() and "running" not in out:
            try:
                apps = client.get(f"{address}/api/serve/applications/").json()["applications"]
            except (httpx.HTTPError, ValueError, KeyError):
                apps = {}
            now = time.monotonic()
            if app in apps:
                out.setdefault("put", now)
                if apps[app]["status"] == "RUNNING":
                    out["running"] = now
            time.sleep(0.1)


def measure(
    cmd: list[str], env: dict[str, str], url: str, version: str, address: str
) -> tuple[float, dict[str, float]]:
    """Seconds to the first answer by `version`, and when the PUT and RUNNING were seen."""
    stop, seen, steps = threading.Event(), {}, {}
    start = time.monotonic()
    prober = threading.Thread(target=first_answer_by, args=(url, version, stop, seen))
    prober.start()
    watcher = threading.Thread(target=watch_app, args=(address, f"model--v{version}", stop, steps))
    watcher.start()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        stop.set()
        raise SystemExit(f"{cmd[0]} failed:\n{proc.stdout}\n{proc.stderr}")
    prober.join(timeout=120)
    stop.set()
    watcher.join()
    if "t" not in seen:
        raise SystemExit(f"version {version} never answered after {cmd[0]}")
    return seen["t"] - start, {k: v - start for k, v in steps.items()}


@dataclass
class Bench:
    """One deployment at two model versions, two commits, on a local Ray and MLflow store."""

    repo: Path
    v_old: str
    v_new: str
    old_commit: str
    new_commit: str
    http_port: int
    env: dict[str, str]  # for the serveops commands: the cluster and the registry

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/model"

    def apply_cmd(self, rev: str, *extra: str) -> list[str]:
        return [str(BIN / "serveops"), "apply", "--repo", str(self.repo), "--env", "bench",
                "--rev", rev, *extra]  # fmt: skip


def set_up(root: Path, ray: LocalRay) -> Bench:
    uri = f"sqlite:///{root / 'mlflow.db'}"
    v_old, v_new = train_and_register(uri, root / "artifacts")
    repo = root / "repo"
    old_commit = make_repo(repo, {SPEC: spec(v_old)})
    new_commit = commit(repo, {SPEC: spec(v_new)}, "new version")
    http_port = free_port()
    env = {
        **os.environ,
        "SERVEOPS_ADDRESS": ray.address,
        "SERVEOPS_HTTP_PORT": str(http_port),
        "MLFLOW_TRACKING_URI": uri,
    }
    return Bench(repo, v_old, v_new, old_commit, new_commit, http_port, env)


def reset(bench: Bench, ray: LocalRay, *extra: str) -> None:
    """Back to the old version, and a settled cluster: the removed version gone, not draining."""
    cmd = bench.apply_cmd(bench.old_commit, *extra)
    done = subprocess.run(cmd, env=bench.env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"reset failed:\n{done.stdout}\n{done.stderr}")
    with ServeClient(ray.address, http_port=bench.http_port) as client:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(a.status == "RUNNING" for a in client.get().apps.values()):
                break
            time.sleep(0.5)
    time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalRay(num_cpus=2) as ray:
        root = Path(tmp)
        bench = set_up(root, ray)
        reset(bench, ray)
        # The baseline's config: what serveops renders for the new commit, as one file.
        with ServeClient(ray.address, http_port=bench.http_port) as client:
            registry = MlflowRegistry(bench.env["MLFLOW_TRACKING_URI"])
            plan = plan_revision(
                Revision(str(bench.repo), bench.new_commit, "bench"), client, registry
            )
            live = client.get()
            config = {
                "http_options": live.http_options,
                "applications": merged_config(live, "bench", plan.desired),
            }
        config_path = root / "serve-config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        deploy_cmd = [str(BIN / "serve"), "deploy", str(config_path), "--address", ray.address]

        ours, theirs = [], []
        for trial in range(args.trials):
            order = [("serveops", ours), ("serve deploy", theirs)]
            if trial % 2:
                order.reverse()
            for name, results in order:
                cmd = bench.apply_cmd(bench.new_commit) if name == "serveops" else deploy_cmd
                t, steps = measure(cmd, bench.env, bench.url, bench.v_new, ray.address)
                results.append(t)
                print(
                    f"trial {trial + 1}: {name:<12} {t:6.2f} s to the new version answering"
                    f" (app on Serve at {steps.get('put', float('nan')):.2f} s,"
                    f" RUNNING at {steps.get('running', float('nan')):.2f} s)",
                    flush=True,
                )
                reset(bench, ray)
        ratio = statistics.median(ours) / statistics.median(theirs)
        print(
            f"serveops apply: median {statistics.median(ours):.2f} s ({', '.join(f'{t:.2f}' for t in ours)})"
        )
        print(
            f"serve deploy:   median {statistics.median(theirs):.2f} s ({', '.join(f'{t:.2f}' for t in theirs)})"
        )
        print(f"ratio serveops / serve deploy: {ratio:.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()

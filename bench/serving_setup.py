"""What the serving benchmarks share: a registered model, a local Ray, a deployment on it.

Not a benchmark itself. `bench/router_overhead.py`, `bench/weight_change.py` and
`bench/zero_downtime.py` import it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from controller.cluster.render import RenderSettings, render_deployment
from controller.cluster.serve_api import ServeClient
from controller.dev.demo import MODEL_NAME, sample_request, train_and_register
from controller.dev.localray import LocalRay, free_port
from controller.registry.mlflow import MlflowRegistry
from controller.spec.manifest import load_manifests

# Ray exports application metrics every second instead of 10 (rollout analysis reads them).
RAY_ENV = {"RAY_metrics_report_interval_ms": "1000"}


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (5 min {five:.2f})"


@dataclass
class Models:
    root: Path
    tracking_uri: str
    versions: list[str]


def registered_models() -> Models:
    """A fresh MLflow store (SQLite) with the demo model's two versions."""
    root = Path(tempfile.mkdtemp(prefix="serveops-bench-"))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return Models(root, uri, train_and_register(uri, root / "artifacts"))


def add_ray_env(parser: argparse.ArgumentParser) -> None:
    """`--ray-env K=V`, repeatable: the environment of `ray start` (read with `env_pairs`)."""
    parser.add_argument(
        "--ray-env",
        action="append",
        default=[],
        metavar="K=V",
        help="environment of `ray start` (e.g. RAY_SERVE_ENABLE_HA_PROXY=1), repeatable",
    )


def env_pairs(values: list[str]) -> dict[str, str]:
    """`K=V` command-line values (`--ray-env`, `--router-env`) as an environment."""
    return dict(kv.split("=", 1) for kv in values)


def start_ray(env: dict[str, str] | None = None) -> LocalRay:
    # The replicas import the serving code of this checkout, as this process does: through the
    # editable install they would import the one installed, another worktree's when this is a
    # second checkout beside it (an A/B of two commits).
    paths = [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    checkout = {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}  # the caller's kept after
    return LocalRay(num_cpus=2, env={**RAY_ENV, **checkout, **(env or {})}).start()


def spec_yaml(name: str, version: str, environment: str = "bench", rollout: str = "") -> str:
    """A deployment file: one replica of 0.2 CPU (several versions fit on 2 CPUs)."""
    return (
        textwrap.dedent(
            f"""\
            apiVersion: serveops.dev/v1alpha1
            kind: ModelDeployment
            metadata: {{name: {name}, environment: {environment}, owner: bench}}
            spec:
              route: /{name}
              model: models:/{MODEL_NAME}/{version}
              replicas: 1
              resources: {{num_cpus: 0.2}}
            """
        )
        + rollout
    )


def rendered(models: Models, name: str, version: str, extra: str = "") -> list[dict[str, Any]]:
    """The applications serveops renders for one deployment: [version app, router]. `extra`:
    more spec fields, as YAML lines indented under `spec:`."""
    path = f"deployments/bench/{name}.yaml"
    [manifest] = load_manifests({path: spec_yaml(name, version) + extra}, "bench")
    model = MlflowRegistry(models.tracking_uri).resolve(manifest.deployment.spec.model)
    return render_deployment(
        manifest.deployment, model, RenderSettings(tracking_uri=models.tracking_uri)
    )


def wait_answering(url: str, timeout_s: float = 300.0) -> None:
    """Until the route answers 200 (the proxy learns routes asynchronously)."""
    deadline = time.monotonic() + timeout_s
    body = sample_request()
    while True:
        try:
            if httpx.post(url, json=body, timeout=30).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not answer 200 in {timeout_s:.0f}s")
        time.sleep(0.5)


def wait_running(client: ServeClient, names: list[str], timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        live = client.get()
        if all(n in live.apps and live.apps[n].status == "RUNNING" for n in names):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{names} not RUNNING in {timeout_s:.0f}s")
        time.sleep(0.5)


def serve_apps(client: ServeClient, apps: list[dict[str, Any]], name: str) -> str:
    """Write `apps` (whatever else runs kept), wait until they run and the route `/name`
    answers 200; the route's URL."""
    client.put(apps, client.get())
    wait_running(client, [a["name"] for a in apps])
    url = f"http://127.0.0.1:{client.http_port}/{name}"
    wait_answering(url)
    return url


def new_client(ray: LocalRay) -> ServeClient:
    return ServeClient(ray.address, http_port=free_port())

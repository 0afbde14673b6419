"""End-to-end fixtures: a real local Ray Serve, a real MLflow store, real Git repositories.

One Ray per test session (starting one costs ~10 s on 2 cores), with an explicit CPU count and
Serve's slow-scheduling warning shortened so an unschedulable replica is reported in seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.cluster.serve_api import ServeClient
from controller.dev.demo import train_and_register
from controller.dev.localray import LocalRay, free_port
from controller.gitops.reconciler import Controller
from controller.gitops.settings import ControllerSettings
from controller.gitops.state import StateStore
from controller.policy.source import PoliciesInDirectory
from controller.registry.mlflow import MlflowRegistry
from controller.source.repository import RepoSource


def platform_policies(tmp_path: Path) -> PoliciesInDirectory:
    """The platform team's policies for an e2e controller: a directory of its own, empty."""
    path = tmp_path / "platform-policies"
    path.mkdir(exist_ok=True)
    return PoliciesInDirectory(path)


def git_controller(
    cluster: Cluster, registry: Registry, repo: Path, store: StateStore, env: str, **extra: Any
) -> Controller:
    """The controller a rollout story drives: `repo`'s main branch applied to the test
    cluster, a pass every second, models from the test registry, the platform's policies (in
    the repo's parent); `extra` are further ControllerSettings fields."""
    return Controller(
        RepoSource(str(repo), branch="main"),
        cluster.client(),
        store,
        lambda: MlflowRegistry(registry.tracking_uri),
        ControllerSettings(
            env,
            interval_s=1,
            apply_timeout_s=240,
            actor="e2e",
            policies=platform_policies(repo.parent),
            **extra,
        ),
    )


@dataclass
class Cluster:
    address: str
    http_port: int
    ray_dir: Path  # Ray's --temp-dir: session logs, unpacked runtime_env packages

    def client(self) -> ServeClient:
        return ServeClient(self.address, http_port=self.http_port)

    def url(self, route: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{route}"


@dataclass
class Registry:
    tracking_uri: str
    versions: list[str]


_SESSION_RAYS: list[LocalRay] = []


def stop_session_cluster() -> None:
    """Stop the session's shared Ray now (a test with a Ray of its own, run last, frees the
    machine's 2 CPUs for it); the fixture's own stop at the session's end is then a no-op."""
    for ray in _SESSION_RAYS:
        ray.stop()


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    ray = LocalRay(
        num_cpus=2,
        env={
            "RAY_SERVE_SLOW_STARTUP_WARNING_S": "2",
            "RAY_SERVE_SLOW_STARTUP_WARNING_PERIOD_S": "2",
            # Router metrics reach the export endpoint within 1 s, not 10 (rollout analysis).
            "RAY_metrics_report_interval_ms": "1000",
        },
    )
    ray.start()
    _SESSION_RAYS.append(ray)
    try:
        yield Cluster(ray.address, free_port(), ray.temp_dir)
    finally:
        ray.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return Registry(uri, train_and_register(uri, root / "artifacts"))


@pytest.fixture
def serveops(cluster: Cluster, registry: Registry) -> Any:
    """Run the real `serveops` console script against the test cluster and registry."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "SERVEOPS_ADDRESS": cluster.address,
            "SERVEOPS_HTTP_PORT": str(cluster.http_port),
            "MLFLOW_TRACKING_URI": registry.tracking_uri,
            "COLUMNS": "200",
        }
        cmd = [str(Path(sys.executable).with_name("serveops")), *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)

    return run


def post_until_ok(url: str, body: Any, timeout_s: float = 60.0) -> httpx.Response:
    """The proxy learns new routes asynchronously: wait for the route, then return its answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            response = httpx.post(url, json=body, timeout=30)
            if response.status_code != 404 or time.monotonic() > deadline:
                return response
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)

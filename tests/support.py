"""Test helpers shared by unit and e2e tests: deployment files, Git repositories, a fake Serve."""

from __future__ import annotations

import copy
import subprocess
import textwrap
from pathlib import Path
from typing import Any

from controller.cluster.live import LiveState
from controller.serving.protocol import MARKER_KEY


def deployment_yaml(
    name: str = "fraud",
    environment: str = "staging",
    route: str | None = None,
    model: str = "models:/fraud/1",
    extra_spec: str = "",
) -> str:
    """A valid deployment file; `extra_spec` is appended (indented) under spec:."""
    text = textwrap.dedent(
        f"""\
        apiVersion: serveops.dev/v1alpha1
        kind: ModelDeployment
        metadata:
          name: {name}
          environment: {environment}
          owner: risk-team
        spec:
          route: {route or "/" + name}
          model: {model}
          replicas: 1
          resources:
            num_cpus: 0.25
        """
    )
    if extra_spec:
        text += textwrap.indent(textwrap.dedent(extra_spec), "  ")
    return text


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        [
            "git",
            "-C",
            str(repo),
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.com",
            *args,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def make_repo(path: Path, files: dict[str, str], message: str = "initial") -> str:
    """A real Git repository with `files` committed; returns the commit sha."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    return commit(path, files, message)


def commit(repo: Path, files: dict[str, str | None], message: str) -> str:
    """Write (or, with None, delete) files and commit them; returns the new sha."""
    for rel, text in files.items():
        target = repo / rel
        if text is None:
            git(repo, "rm", "-q", rel)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        git(repo, "add", rel)
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


class FakeServe:
    """An in-memory Serve REST API behind the same interface as ServeClient (unit tests only).

    PUT replaces the config like Ray does. New or changed apps become RUNNING at once, except
    those named in `failing` (DEPLOY_FAILED) or `unschedulable` (stuck DEPLOYING with Serve's
    slow-scheduling message).
    """

    def __init__(self, address: str = "http://fake-ray:8265") -> None:
        self.address = address
        self.apps: dict[str, dict[str, Any]] = {}
        self.status: dict[str, str] = {}
        self.failing: set[str] = set()
        self.unschedulable: set[str] = set()
        self.puts: list[list[dict[str, Any]]] = []

    def seed(self, *apps: dict[str, Any]) -> None:
        for app in apps:
            self.apps[app["name"]] = copy.deepcopy(app)
            self.status[app["name"]] = "RUNNING"

    def get(self) -> LiveState:
        payload: dict[str, Any] = {"applications": {}}
        for name, config in self.apps.items():
            status = self.status[name]
            message = ""
            if name in self.unschedulable:
                message = (
                    "Deployment 'ModelServer' has 1 replicas that have taken more than 2s to be "
                    'scheduled. Resources required for each replica: {"CPU": 1.9}, total '
                    'resources available: {"CPU": 1.5}. Use `ray status` for more details.'
                )
            payload["applications"][name] = {
                "status": status,
                "message": "failed to load model" if status == "DEPLOY_FAILED" else "",
                "deployed_app_config": copy.deepcopy(config),
                "deployments": {"ModelServer": {"status": "UPDATING", "message": message}},
            }
        return LiveState.from_api(payload)

    def put(self, apps: list[dict[str, Any]], live: LiveState) -> None:
        self.puts.append(copy.deepcopy(apps))
        new = {a["name"]: copy.deepcopy(a) for a in apps}
        for name, config in new.items():
            if self.apps.get(name) != config:
                if name in self.failing:
                    self.status[name] = "DEPLOY_FAILED"
                elif name in self.unschedulable:
                    self.status[name] = "DEPLOYING"
                else:
                    self.status[name] = "RUNNING"
        self.apps = new
        self.status = {n: s for n, s in self.status.items() if n in new}


def unmanaged_app(name: str = "handmade", route: str = "/handmade") -> dict[str, Any]:
    return {
        "name": name,
        "route_prefix": route,
        "import_path": "somebody.else:app",
        "args": {},
        "deployments": [{"name": "Thing", "num_replicas": 1}],
    }


def is_managed(app: dict[str, Any]) -> bool:
    return MARKER_KEY in (app.get("args") or {})

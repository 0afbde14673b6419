"""Bring up the deployments a change touches, both revisions side by side, on one Ray Serve.

Nothing here deploys by itself: it writes a scratch Git repository whose environment `sim` holds
each changed deployment twice, renamed (`fraud-base` from the base revision at `/sim-base/fraud`,
`fraud-head` from the head revision at `/sim-head/fraud`, and on request `fraud-base2` for an A/A
noise floor), then runs the controller's own `plan_revision` and `apply_plan` on it. So the
simulation validates, resolves and renders exactly as a real apply would, and owns only the
`sim` environment's applications.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from controller.cluster.serve_api import ServeClient
from controller.cluster.serving_code import INSTALLED, ServingCode
from controller.errors import BadInput
from controller.registry.mlflow import Registry
from controller.source.git import read_snapshot
from controller.spec.manifest import environment_of
from controller.sync.apply import apply_plan
from controller.sync.read import Revision, plan_revision

SIM_ENV = "sim"
# role -> (name suffix, route prefix)
ROLES = {"baseline": ("base", "/sim-base"), "candidate": ("head", "/sim-head")}
NOISE_ROLE = ("baseline_b", ("base2", "/sim-base2"))


@dataclass(frozen=True)
class ChangedDeployment:
    name: str
    path: str
    route: str
    base_text: str
    head_text: str


def changed_deployments(
    repo: Path, base: str, head: str, environment: str
) -> list[ChangedDeployment]:
    """Deployments of `environment` that exist at both revisions and differ between them."""
    before = read_snapshot(repo, base).files
    after = read_snapshot(repo, head).files
    changed = []
    for path, text in sorted(after.items()):
        if environment_of(path) != environment or before.get(path, text) == text:
            continue
        doc = yaml.safe_load(text) or {}
        changed.append(
            ChangedDeployment(
                name=str(doc["metadata"]["name"]),
                path=path,
                route=str(doc["spec"]["route"]),
                base_text=before[path],
                head_text=text,
            )
        )
    return changed


def _renamed(text: str, suffix: str, prefix: str) -> str:
    doc = yaml.safe_load(text)
    doc["metadata"]["name"] = f"{doc['metadata']['name']}-{suffix}"
    doc["metadata"]["environment"] = SIM_ENV
    doc["spec"]["route"] = prefix + doc["spec"]["route"]
    doc["spec"].pop("rollout", None)  # side by side, each at 100%: no progressive delivery
    doc["spec"].pop("recording", None)  # replayed traffic is not live traffic...
    doc["spec"].pop("monitoring", None)  # ...so nothing of it is recorded or monitored
    return yaml.safe_dump(doc, sort_keys=False)


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=serveops", "-c", "user.email=serveops@localhost",
         *args],
        check=True,
        capture_output=True,
    )  # fmt: skip


def write_sim_repo(
    workdir: Path, changed: list[ChangedDeployment], noise_floor: bool
) -> tuple[Path, dict[str, str]]:
    """The scratch repository; returns it and role -> route prefix."""
    repo = workdir / "sim-repo"
    folder = repo / "deployments" / SIM_ENV
    folder.mkdir(parents=True, exist_ok=True)
    roles = dict(ROLES)
    if noise_floor:
        roles[NOISE_ROLE[0]] = NOISE_ROLE[1]
    for dep in changed:
        for role, (suffix, prefix) in roles.items():
            source = dep.head_text if role == "candidate" else dep.base_text
            (folder / f"{dep.name}-{suffix}.yaml").write_text(_renamed(source, suffix, prefix))
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, capture_output=True)
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "serveops simulate: baseline and candidate side by side")
    return repo, {role: prefix for role, (_, prefix) in roles.items()}


def bring_up(
    sim_repo: Path,
    client: ServeClient,
    registry: Registry,
    *,
    timeout_s: float = 300.0,
    serving_code: ServingCode = INSTALLED,
    log: Callable[[str], None] = lambda _m: None,
) -> None:
    target = Revision(str(sim_repo), "HEAD", SIM_ENV)
    plan = plan_revision(target, client, registry, serving_code=serving_code)
    apply_plan(plan, client, timeout_s=timeout_s, log=log)


def tear_down(
    sim_repo: Path,
    client: ServeClient,
    registry: Registry,
    *,
    log: Callable[[str], None] = lambda _m: None,
) -> None:
    """Remove the `sim` environment's applications (and nothing else) from the cluster."""
    _git(sim_repo, "rm", "-rq", "deployments")
    _git(sim_repo, "commit", "-qm", "serveops simulate: done")
    plan = plan_revision(Revision(str(sim_repo), "HEAD", SIM_ENV), client, registry, prune=True)
    apply_plan(plan, client, log=log)


def require_changes(changed: list[ChangedDeployment], base: str, head: str, env: str) -> None:
    if not changed:
        raise BadInput(
            f"no deployment of environment {env!r} differs between {base} and {head} "
            "(new or deleted deployments have nothing to compare with)"
        )

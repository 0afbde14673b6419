"""Git revision + registry (+ live Serve) -> desired state and Plan: the read side shared by
plan, apply, status, the controller and the simulator. Nothing here writes."""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass

from controller.cluster.render import DesiredState, RenderSettings, render_environment
from controller.cluster.serve_api import ServeAPI
from controller.cluster.serving_code import INSTALLED, ServingCode
from controller.errors import Refused
from controller.policy import gate, refusal
from controller.policy.gate import Describer
from controller.registry.mlflow import Registry
from controller.source.git import read_snapshot
from controller.spec.manifest import Manifest, load_manifests
from controller.spec.models import ModelDeployment
from controller.sync.plan import Plan, Source, make_plan


@dataclass(frozen=True)
class Revision:
    """What a command acts on: an environment of a repository at a revision."""

    repo: str
    rev: str
    environment: str


def read_manifests(repo: str, rev: str, environment: str) -> tuple[str, list[Manifest]]:
    """(commit, manifests) of `environment` at `rev`. A commit's files never change, so when
    `rev` is a full sha (the controller passes the branch head's) the parsed manifests are
    reused: a pass on the commit of the last one (nothing to do, the common case) skips reading
    and parsing every file again (~60 ms of a 200-deployment pass, bench/controller_noop.py)."""
    if _FULL_SHA.fullmatch(rev):
        return _manifests_at(str(repo), rev, environment)
    snapshot = read_snapshot(repo, rev, environment=environment)
    return snapshot.commit, load_manifests(snapshot.files, environment)


_FULL_SHA = re.compile(r"[0-9a-f]{40}")


@functools.lru_cache(maxsize=8)
def _manifests_at(repo: str, commit: str, environment: str) -> tuple[str, list[Manifest]]:
    snapshot = read_snapshot(repo, commit, environment=environment)
    return snapshot.commit, load_manifests(snapshot.files, environment)


@dataclass(frozen=True)
class ReadRevision:
    commit: str
    desired: DesiredState
    specs: dict[str, ModelDeployment]
    digest: str  # see desired_digest


def read_desired(
    revision: Revision,
    registry: Registry,
    *,
    serving_code: ServingCode = INSTALLED,
    pin_key: str | None = None,
) -> ReadRevision:
    """A revision's desired state: files read from the commit, validated, models resolved in
    the registry, rendered into Serve applications; with the specs by deployment. `pin_key`:
    the public key routers accept pinned requests with (the controller's hooks sign them)."""
    commit, manifests = read_manifests(revision.repo, revision.rev, revision.environment)
    settings = RenderSettings(
        tracking_uri=registry.tracking_uri, serving_code=serving_code, pin_key=pin_key
    )
    desired = render_environment(revision.environment, manifests, registry, settings)
    specs = {m.name: m.deployment for m in manifests}
    return ReadRevision(commit, desired, specs, desired_digest(commit, desired, settings))


def desired_digest(commit: str, desired: DesiredState, settings: RenderSettings) -> str:
    """A fingerprint of a revision's desired state. Rendering is pure, so the commit, the
    versions its models resolved to and the render settings determine it (cheaper than
    hashing every rendered application at every pass)."""
    parts = [commit, settings.tracking_uri or "", settings.serving_code.describe()]
    parts.append(settings.pin_key or "")
    parts += [f"{d.name}={d.model.version}" for d in desired.deployments.values()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def plan_revision(
    revision: Revision,
    client: ServeAPI,
    registry: Registry,
    *,
    prune: bool = False,
    serving_code: ServingCode = INSTALLED,
    rollouts: bool = False,
) -> Plan:
    """Read Git at the revision, validate, resolve models, read live state, and diff.

    `rollouts`: plan what the controller does, a progressive deployment's first step (its
    candidate started beside the stable version, no traffic) with the path that follows in
    `Plan.rollouts`; else what `apply` by hand does, an immediate switch. Every input problem
    surfaces before the cluster is touched; nothing here writes.
    """
    read = read_desired(revision, registry, serving_code=serving_code)
    live = client.get()
    source = Source(repo=revision.repo, rev=revision.rev, commit=read.commit)
    if not rollouts:
        return make_plan(read.desired, live, source=source, address=client.address, prune=prune)
    from controller.rollout.preview import first_steps

    shaped, paths = first_steps(read.desired, read.specs, live, read.commit)
    plan = make_plan(shaped, live, source=source, address=client.address, prune=prune)
    return plan.model_copy(update={"rollouts": paths})


def enforce_policies(plan: Plan, registry: Describer | None) -> None:
    """The second gate: the policies at the plan's commit, evaluated again right before apply,
    so a change that skipped CI still cannot reach the cluster. Raises Refused with CI's words."""
    verdict = gate(plan.source.repo, plan.source.commit, plan.environment, registry=registry)
    if not verdict.allowed:
        raise Refused(refusal(verdict))

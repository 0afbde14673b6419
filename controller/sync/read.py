"""Git revision + registry + live Serve -> Plan: the read side shared by plan, apply and status."""

from __future__ import annotations

from dataclasses import dataclass

from controller.cluster.render import RenderSettings, render_environment
from controller.cluster.serve_api import ServeAPI
from controller.cluster.serving_code import INSTALLED, ServingCode
from controller.errors import Refused
from controller.policy import gate, refusal
from controller.policy.gate import Describer
from controller.registry.mlflow import Registry
from controller.source.git import read_snapshot
from controller.spec.manifest import load_manifests
from controller.sync.plan import Plan, Source, make_plan


@dataclass(frozen=True)
class Target:
    """What a command acts on: an environment of a repository at a revision, on a cluster."""

    repo: str
    rev: str
    environment: str


def plan_revision(
    target: Target,
    client: ServeAPI,
    registry: Registry,
    *,
    prune: bool = False,
    serving_code: ServingCode = INSTALLED,
) -> Plan:
    """Read Git at the revision, validate, resolve models, read live state, and diff.

    Every input problem surfaces before the cluster is touched; nothing here writes.
    """
    snapshot = read_snapshot(target.repo, target.rev)
    manifests = load_manifests(snapshot.files, target.environment)
    settings = RenderSettings(tracking_uri=registry.tracking_uri, serving_code=serving_code)
    desired = render_environment(target.environment, manifests, registry, settings)
    live = client.get()
    source = Source(repo=target.repo, rev=target.rev, commit=snapshot.commit)
    return make_plan(desired, live, source=source, address=client.address, prune=prune)


def enforce_policies(plan: Plan, registry: Describer | None) -> None:
    """The second gate: the policies at the plan's commit, evaluated again right before apply,
    so a change that skipped CI still cannot reach the cluster. Raises Refused with CI's words."""
    verdict = gate(plan.source.repo, plan.source.commit, plan.environment, registry=registry)
    if not verdict.allowed:
        raise Refused(refusal(verdict))

"""Record a simulation's verdict as evidence, for each deployment it simulated.

`serveops policy evidence write` calls this after `serveops simulate`; the simulate command
may call write_evidence (evidence.py) directly once it knows the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from controller.errors import BadInput
from controller.policy.evidence import EvidenceRecord, EvidenceStore, write_evidence
from controller.source.git import open_repo, read_snapshot, resolve_commit
from controller.spec.manifest import load_manifests
from controller.spec.models import parse_model_uri


def record_simulation(
    repo: str | Path,
    head: str,
    base: str | None,
    report: Mapping[str, Any],
    store: EvidenceStore,
    key: bytes,
    *,
    environment: str | None = None,
    registry_uri: str | None = None,
) -> list[EvidenceRecord]:
    """One signed record per deployment in the report's `meta.deployments`, keyed by its spec
    at `head`. Bad input when the report names no deployment or one `head` does not have."""
    meta = report.get("meta") if isinstance(report.get("meta"), Mapping) else {}
    assert isinstance(meta, Mapping)
    env = environment or meta.get("environment")
    if not isinstance(env, str) or not env:
        raise BadInput("give --env: the report names no environment (meta.environment)")
    names = meta.get("deployments")
    if not isinstance(names, list) or not names:
        raise BadInput("the report names no simulated deployment (meta.deployments)")
    git_repo = open_repo(repo)
    commits = {"head": resolve_commit(git_repo, head).hexsha}
    if base:
        commits["base"] = resolve_commit(git_repo, base).hexsha
    manifests = {
        m.name: m
        for m in load_manifests(read_snapshot(repo, commits["head"], environment=env).files, env)
    }
    written: list[EvidenceRecord] = []
    for name in names:
        manifest = manifests.get(str(name))
        if manifest is None:
            raise BadInput(f"{head}: no deployment {name!r} in environment {env!r}")
        deployment = manifest.deployment
        _, pinned, _ = parse_model_uri(deployment.spec.model)
        version = pinned
        if version is None:
            if not registry_uri:
                raise BadInput(
                    f"{env}/{name}: {deployment.spec.model} follows an alias; give "
                    "--registry-uri to resolve it"
                )
            from controller.registry.mlflow import MlflowRegistry, absolute_tracking_uri

            version = (
                MlflowRegistry(absolute_tracking_uri(registry_uri))
                .resolve(deployment.spec.model)
                .version
            )
        written.append(write_evidence(store, deployment, version, report, commits, key))
    return written

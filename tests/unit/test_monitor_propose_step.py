"""Model update automation in the controller pass (`--propose-every`, `spec.model_updates`):
the selected version becomes a branch once, pushed when asked, retried after a failed push, and
the cluster is never touched (FakeServe, a real Git repository and bare remote, SQLite, a fake
clock, a fake registry listing)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

import controller.monitor.propose_step as propose_step
from controller.monitor.propose_step import due
from controller.monitor.versions import VersionInfo
from controller.registry.mlflow import FixedRegistry
from controller.spec.manifest import parse_manifest
from tests.support import World, deployment_yaml, git

BRANCH = "serveops/propose/staging/fraud-v2"
VERSIONS = [
    VersionInfo("1"),
    VersionInfo("2", tags=(("stage", "prod"),)),
    VersionInfo("3"),  # newer, but not tagged: the rule does not select it
    VersionInfo("4", status="PENDING_REGISTRATION", tags=(("stage", "prod"),)),
]


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    w = World(tmp_path)
    # Registry scans list these versions; the tracking URI only has to be set.
    w.registry = lambda: FixedRegistry(w.models, tracking_uri="sqlite:///registry.db")  # type: ignore[method-assign]
    listed: list[tuple[str, str]] = []

    def versions(uri: str, name: str, metrics: Sequence[str]) -> list[VersionInfo]:
        listed.append((uri, name))
        return VERSIONS

    monkeypatch.setattr(propose_step, "list_versions", versions)
    w.listed = listed  # type: ignore[attr-defined]
    w.push("1", "model_updates: {tag: stage=prod}\n")
    yield w
    w.close()


def test_the_selected_version_is_proposed_once_as_a_branch_and_nothing_is_applied(
    world: World,
) -> None:
    world.ctl = world.controller(propose_every_s=3600)
    world.sync()
    assert world.weights() == {"1": 100}
    assert git(world.repo, "branch", "--list", BRANCH).strip() == BRANCH
    proposed = git(world.repo, "show", f"{BRANCH}:{world.path}")
    assert "model: models:/fraud/2" in proposed
    assert git(world.repo, "rev-parse", f"{BRANCH}~1") == world.head  # from the admitted commit
    [p] = world.ctl.store.proposals("staging")
    assert (p.deployment, p.proposed, p.branch, p.status) == (
        "fraud",
        "models:/fraud/2",
        BRANCH,
        "proposed",
    )
    assert p.commit == git(world.repo, "rev-parse", BRANCH)
    assert "model_proposed" in world.notes.kinds
    assert world.listed == [("sqlite:///registry.db", "fraud")]  # type: ignore[attr-defined]

    world.pass_(60)  # not due yet: no scan
    assert len(world.listed) == 1  # type: ignore[attr-defined]
    world.pass_(3600)  # due: scanned, but v2 was proposed already
    assert len(world.listed) == 2  # type: ignore[attr-defined]
    assert len(world.ctl.store.proposals("staging")) == 1
    assert world.notes.kinds.count("model_proposed") == 1
    assert world.weights() == {"1": 100}  # still: the cluster is never written


def test_without_propose_every_nothing_is_scanned(world: World) -> None:
    world.sync()
    assert world.listed == []  # type: ignore[attr-defined]
    assert git(world.repo, "branch", "--list", "serveops/*") == ""


def test_a_failed_push_is_recorded_and_tried_again_at_the_next_scan(
    world: World, tmp_path: Path
) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(world.repo, "push", "-q", str(remote), "main")
    git(world.repo, "remote", "add", "proposals", str(remote))
    hook = remote / "hooks" / "pre-receive"  # the remote refuses every push, for now
    hook.write_text("#!/bin/sh\necho 'refused by policy' >&2\nexit 1\n")
    hook.chmod(0o755)
    world.ctl = world.controller(propose_every_s=600, propose_push="proposals")
    world.sync()
    [p] = world.ctl.store.proposals("staging")
    assert p.status == "failed"
    assert "pushing it to 'proposals' failed" in p.message
    assert "model_proposed" not in world.notes.kinds

    hook.unlink()
    world.pass_(600)
    [p] = world.ctl.store.proposals("staging")
    assert p.status == "proposed"
    assert git(remote, "rev-parse", BRANCH) == p.commit
    assert "pushed to proposals" in p.message


def test_a_deployment_following_an_alias_cannot_declare_model_updates() -> None:
    text = deployment_yaml(model="models:/fraud@champion", extra_spec="model_updates: {}\n")
    manifest, problems = parse_manifest("deployments/staging/fraud.yaml", text)
    assert manifest is None
    [problem] = problems
    assert "pin 'model'" in problem.message
    assert problem.location.file == "deployments/staging/fraud.yaml"
    assert problem.location.line == 13  # the `model_updates:` line
    assert problem.location.field == "spec.model_updates"


def test_model_updates_takes_one_rule_and_a_well_formed_metric() -> None:
    for extra, said in [
        ("model_updates: {alias: a, tag: k=v}\n", "at most one of"),
        ("model_updates: {metric: 'auc=0.9'}\n", "metric rule"),
        ("model_updates: {metric: 'auc>=1e999'}\n", "finite"),
        ("model_updates: {branch_prefix: '../x'}\n", "branch_prefix"),
    ]:
        manifest, problems = parse_manifest("d.yaml", deployment_yaml(extra_spec=extra))
        assert manifest is None, extra
        assert said in " ".join(map(str, problems)), (extra, problems)


def test_a_scan_is_due_at_once_then_every_interval() -> None:
    assert not due(None, None, 100.0)
    assert due(None, 60.0, 100.0)
    assert not due(100.0, 60.0, 159.0)
    assert due(100.0, 60.0, 160.0)

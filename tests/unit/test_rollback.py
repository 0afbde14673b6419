"""`serveops rollback`: revert commits in real temporary Git repositories (GitPython writes them)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.cli.main import app
from controller.errors import BadInput, ServeopsError
from controller.gitops.state import RolloutUpdate, StateStore
from controller.rollout.state import start
from controller.source.rollback import TRAILER, NothingToRollBack, plan_rollback, write_rollback
from tests.support import commit, deployment_yaml, git, make_repo

FRAUD = "deployments/staging/fraud.yaml"
CHURN = "deployments/staging/churn.yaml"
runner = CliRunner()


def fraud(version: str) -> str:
    return deployment_yaml(model=f"models:/fraud/{version}")


def churn(version: str) -> str:
    return deployment_yaml(name="churn", model=f"models:/churn/{version}")


def at_head(repo: Path, path: str) -> str | None:
    try:
        return git(repo, "show", f"HEAD:{path}") + "\n"
    except subprocess.CalledProcessError:
        return None


def message(repo: Path) -> str:
    return git(repo, "log", "-1", "--format=%B")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """fraud v1 -> v2 -> v3, with an unrelated commit on top."""
    path = tmp_path / "repo"
    make_repo(path, {FRAUD: fraud("1"), CHURN: churn("1")}, "v1")
    commit(path, {FRAUD: fraud("2")}, "fraud v2")
    commit(path, {FRAUD: fraud("3")}, "fraud v3")
    commit(path, {"README.md": "models\n"}, "docs")
    return path


def test_rollback_restores_the_revision_before_the_last_change(repo: Path) -> None:
    undone = git(repo, "rev-parse", "HEAD~1")
    before = git(repo, "rev-parse", "HEAD~2")
    plan = plan_rollback(repo, "staging", "fraud")
    result = write_rollback(plan, "p95 doubled on v3 (alice)")

    assert git(repo, "rev-parse", "HEAD") == result.commit
    assert git(repo, "rev-parse", "HEAD~1") == plan.head  # a new commit on the branch
    assert at_head(repo, FRAUD) == fraud("2")
    assert at_head(repo, CHURN) == churn("1")  # other deployments untouched
    text = message(repo)
    assert text.startswith(f"Roll back staging/fraud to {before[:12]}\n")
    assert f"fraud: model models:/fraud/3 -> models:/fraud/2 ({FRAUD})" in text
    assert f'{undone[:12]} "fraud v3"' in text
    assert "Why: p95 doubled on v3 (alice)" in text
    assert f"{TRAILER}: {undone}" in text
    assert git(repo, "status", "--porcelain") == ""  # the work tree matches the commit


def test_a_second_rollback_goes_one_change_further_back(repo: Path) -> None:
    write_rollback(plan_rollback(repo, "staging", "fraud"), "first")
    second = plan_rollback(repo, "staging", "fraud")
    assert [s for _, s in second.undone] == ["fraud v2"]  # not the first rollback undone
    write_rollback(second, "second")
    assert at_head(repo, FRAUD) == fraud("1")
    with pytest.raises(NothingToRollBack, match="no revision before the current one"):
        plan_rollback(repo, "staging", "fraud")


def test_environment_rollback_undoes_the_last_change_of_any_file(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_repo(repo, {FRAUD: fraud("1")}, "v1")
    commit(repo, {FRAUD: fraud("2"), CHURN: churn("1")}, "fraud v2 and a new churn")
    plan = plan_rollback(repo, "staging")
    assert plan.scope == "staging"
    assert [c.summary() for c in plan.changes] == [
        f"churn: removed ({CHURN})",
        f"fraud: model models:/fraud/2 -> models:/fraud/1 ({FRAUD})",
    ]
    write_rollback(plan, "bad release")
    assert at_head(repo, FRAUD) == fraud("1")
    assert at_head(repo, CHURN) is None
    assert not (repo / CHURN).exists()


def test_to_a_revision_restores_it_and_names_every_change_undone(repo: Path) -> None:
    first = git(repo, "rev-list", "--max-parents=0", "HEAD")
    plan = plan_rollback(repo, "staging", "fraud", to=first)
    assert [s for _, s in plan.undone] == ["fraud v3", "fraud v2"]
    write_rollback(plan, "back to the launch model")
    assert at_head(repo, FRAUD) == fraud("1")
    assert message(repo).count(f"{TRAILER}:") == 2


def test_nothing_to_roll_back(tmp_path: Path, repo: Path) -> None:
    with pytest.raises(NothingToRollBack, match="is the same as at main"):
        plan_rollback(repo, "staging", "fraud", to="HEAD~1")  # only the README changed since
    with pytest.raises(NothingToRollBack, match="no revision before the current one"):
        plan_rollback(repo, "staging", "churn")  # churn never changed
    fresh = tmp_path / "fresh"
    make_repo(fresh, {FRAUD: fraud("1")})
    with pytest.raises(NothingToRollBack):
        plan_rollback(fresh, "staging")


def test_bad_input_is_refused_and_changes_nothing(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    with pytest.raises(BadInput, match="revision 'nope' does not exist"):
        plan_rollback(repo, "staging", "fraud", to="nope")
    with pytest.raises(BadInput, match="no deployment named 'ghost' in deployments/staging/"):
        plan_rollback(repo, "staging", "ghost")
    git(repo, "checkout", "-qb", "side", "HEAD~3")
    side = commit(repo, {FRAUD: fraud("9")}, "side")
    git(repo, "checkout", "-q", "main")
    with pytest.raises(BadInput, match="is not an ancestor of main"):
        plan_rollback(repo, "staging", "fraud", to=side)

    (repo / FRAUD).write_text(fraud("7"))  # an uncommitted edit
    with pytest.raises(BadInput, match=r"uncommitted changes \(deployments/staging/fraud.yaml\)"):
        plan_rollback(repo, "staging", "fraud")
    git(repo, "checkout", "--", FRAUD)
    git(repo, "add", "README.md")
    (repo / "README.md").write_text("staged\n")
    git(repo, "add", "README.md")
    with pytest.raises(BadInput, match="uncommitted changes"):
        plan_rollback(repo, "staging", "fraud")
    assert git(repo, "rev-parse", "HEAD") == head


def test_a_revision_with_invalid_files_is_not_restored(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_repo(repo, {FRAUD: fraud("1").replace("replicas: 1", "replicas: -1")}, "broken")
    commit(repo, {FRAUD: fraud("2")}, "fixed")
    head = git(repo, "rev-parse", "HEAD")
    with pytest.raises(
        BadInput, match=r"(?s)would commit invalid deployment files.*fraud.yaml:10: spec.replicas"
    ):
        plan_rollback(repo, "staging", "fraud")
    assert git(repo, "rev-parse", "HEAD") == head


def test_push_sends_the_commit_to_the_remote(tmp_path: Path, repo: Path) -> None:
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    git(repo, "remote", "add", "origin", str(remote))
    git(repo, "push", "-q", "origin", "main")
    result = write_rollback(plan_rollback(repo, "staging", "fraud"), "why", push=True)
    assert result.pushed_to == "origin/main"
    assert git(remote, "rev-parse", "main") == result.commit

    other = tmp_path / "other"  # someone pushed meanwhile: the push is rejected, the commit kept
    subprocess.run(["git", "clone", "-q", str(remote), str(other)], check=True)
    commit(other, {"README.md": "theirs\n"}, "theirs")
    git(other, "push", "-q", "origin", "main")
    plan = plan_rollback(repo, "staging", "fraud")
    with pytest.raises(ServeopsError, match=r"pushing to origin/main failed.*pull, then push it"):
        write_rollback(plan, "why", push=True)
    assert git(repo, "log", "-1", "--format=%s").startswith("Roll back staging/fraud")


def test_cli_names_the_abort_as_the_reason(tmp_path: Path, repo: Path) -> None:
    state = tmp_path / "state.db"
    rollout = start(
        "canary",
        "fraud",
        stable=("fraud--v2", "2"),
        candidate=("fraud--v3", "3"),
        key="k",
        commit=git(repo, "rev-parse", "HEAD~1"),
        now=dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
    )
    aborted = dataclasses.replace(
        rollout, phase="aborted", message="aborted: analysis failed (1/1): error rate 30%"
    )
    with StateStore(state) as store:
        store.save_rollouts("staging", [RolloutUpdate(aborted, None, "abort", aborted.message)])
    args = ["rollback", "--repo", str(repo), "--env", "staging", "--deployment", "fraud"]
    result = runner.invoke(app, [*args, "--state", str(state), "--actor", "bob"])
    assert result.exit_code == 0, result.output
    assert "fraud: model models:/fraud/3 -> models:/fraud/2" in result.output
    assert "not pushed" in result.output
    assert (
        "Why: rollout of fraud to v3 aborted: analysis failed (1/1): error rate 30% "
        "(rolled back by bob)" in message(repo)
    )


def test_cli_exit_codes(tmp_path: Path, repo: Path) -> None:
    base = ["rollback", "--repo", str(repo), "--env", "staging", "--state", str(tmp_path / "s")]
    bad = runner.invoke(app, [*base, "--to", "nope"])
    assert bad.exit_code == 2
    assert "revision 'nope' does not exist" in bad.output
    nothing = runner.invoke(app, [*base, "--deployment", "churn"])
    assert nothing.exit_code == 1
    assert "nothing to roll back" in nothing.output
    ok = runner.invoke(app, [*base, "--deployment", "fraud", "--reason", "slow"])
    assert ok.exit_code == 0
    assert "why: slow (" in ok.output

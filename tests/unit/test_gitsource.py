"""Reading desired state from a real Git repository made in a temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.errors import BadInput
from controller.source.git import read_snapshot
from tests.support import commit, deployment_yaml, make_repo


def test_reads_the_commit_not_the_working_tree(tmp_path: Path) -> None:
    first = make_repo(tmp_path, {"deployments/staging/fraud.yaml": deployment_yaml()})
    commit(tmp_path, {"deployments/staging/churn.yaml": deployment_yaml(name="churn")}, "add")
    (tmp_path / "deployments/staging/fraud.yaml").write_text("uncommitted: edit\n")

    head = read_snapshot(tmp_path, "HEAD")
    assert sorted(head.files) == [
        "deployments/staging/churn.yaml",
        "deployments/staging/fraud.yaml",
    ]
    assert head.files["deployments/staging/fraud.yaml"] == deployment_yaml()
    old = read_snapshot(tmp_path, first[:8])
    assert old.commit == first
    assert list(old.files) == ["deployments/staging/fraud.yaml"]
    assert read_snapshot(tmp_path, "main~1").commit == first


def test_only_yaml_under_deployments(tmp_path: Path) -> None:
    make_repo(
        tmp_path,
        {
            "deployments/staging/fraud.yaml": deployment_yaml(),
            "deployments/README.md": "docs",
            "other/x.yaml": "a: 1\n",
        },
    )
    assert list(read_snapshot(tmp_path, "HEAD").files) == ["deployments/staging/fraud.yaml"]


def test_repository_without_deployments_is_empty(tmp_path: Path) -> None:
    make_repo(tmp_path, {"README.md": "hi"})
    assert read_snapshot(tmp_path, "HEAD").files == {}


def test_missing_revision_is_bad_input(tmp_path: Path) -> None:
    make_repo(tmp_path, {"README.md": "hi"})
    with pytest.raises(BadInput, match="revision 'nope' does not exist"):
        read_snapshot(tmp_path, "nope")
    with pytest.raises(BadInput, match="does not exist"):
        read_snapshot(tmp_path, "0" * 40)


def test_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not a Git repository"):
        read_snapshot(tmp_path, "HEAD")

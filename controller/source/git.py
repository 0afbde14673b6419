"""Desired state from Git: the deployment files of one revision, read from the commit itself.

Reading blobs from the commit (never the working tree) is what makes a plan reproducible: the
same revision always yields the same files, whatever is checked out or uncommitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import git

from controller.errors import BadInput

DEPLOYMENTS_DIR = "deployments"


@dataclass(frozen=True)
class Snapshot:
    """The deployment files of one commit."""

    repo: str
    rev: str  # as the user gave it, e.g. "main" or "HEAD~1"
    commit: str  # the full sha it resolved to
    files: dict[str, str]  # repo-relative path -> text


def open_repo(repo_dir: str | Path) -> git.Repo:
    try:
        return git.Repo(repo_dir, search_parent_directories=False)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise BadInput(f"{repo_dir}: not a Git repository") from None


def resolve_commit(repo: git.Repo, rev: str) -> git.Commit:
    try:
        commit = repo.commit(rev)
        commit.tree  # noqa: B018  (a full sha resolves lazily: make a missing object fail here)
        return commit
    except (git.BadName, ValueError, git.GitCommandError):
        raise BadInput(f"{repo.working_dir}: revision {rev!r} does not exist") from None


def read_snapshot(repo_dir: str | Path, rev: str, root: str = DEPLOYMENTS_DIR) -> Snapshot:
    """Every .yaml/.yml file under `root` at `rev`."""
    repo = open_repo(repo_dir)
    commit = resolve_commit(repo, rev)
    files: dict[str, str] = {}
    try:
        tree = commit.tree / root
    except KeyError:
        tree = None  # a repository with no deployments/ yet has an empty desired state
    if tree is not None:
        for item in tree.traverse():
            if isinstance(item, git.Blob) and str(item.path).endswith((".yaml", ".yml")):
                files[str(item.path)] = item.data_stream.read().decode("utf-8")
    return Snapshot(str(repo_dir), rev, commit.hexsha, files)


def read_worktree(paths: list[Path]) -> dict[str, str]:
    """Deployment files from disk, for `serveops validate` before a commit exists."""
    files: dict[str, str] = {}
    for path in paths:
        if path.is_dir():
            candidates = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml"))
        elif path.exists():
            candidates = [path]
        else:
            raise BadInput(f"{path}: no such file or directory")
        for p in candidates:
            files[p.as_posix()] = p.read_text(encoding="utf-8")
    return files

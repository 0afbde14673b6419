"""Desired state from Git: the deployment files of one revision, read from the commit itself.

Reading blobs from the commit (never the working tree) is what makes a plan reproducible: the
same revision always yields the same files, whatever is checked out or uncommitted.

Files come from pull requests: each is size-checked before it is read and must be UTF-8
(controller/spec/yamldoc.py's limits). A command about one environment reads only that
environment's folder, so a broken file elsewhere cannot stop it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import git

from controller.errors import BadInput, Problem, ValidationFailed
from controller.spec.yamldoc import LIMITS, Limits, decode, read_file, size_problem

DEPLOYMENTS_DIR = "deployments"


@dataclass(frozen=True)
class Snapshot:
    """The deployment files of one commit."""

    repo: str
    rev: str  # as the user gave it, e.g. "main" or "HEAD~1"
    commit: str  # the full sha it resolved to
    files: dict[str, str]  # repo-relative path -> text


class UnreadableFiles(ValidationFailed):
    """Files too large to read, or not UTF-8; each problem names the file (and byte offset)."""

    files = "files"


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


def read_snapshot(
    repo_dir: str | Path,
    rev: str,
    root: str = DEPLOYMENTS_DIR,
    *,
    environment: str | None = None,
    limits: Limits = LIMITS,
) -> Snapshot:
    """Every .yaml/.yml file under `root` at `rev` (only under `root/<environment>/` when an
    environment is given). Raises UnreadableFiles listing every file over the size limit or
    not UTF-8; no file's bytes are read past the limit."""
    repo = open_repo(repo_dir)
    commit = resolve_commit(repo, rev)
    files: dict[str, str] = {}
    problems: list[Problem] = []
    folder = f"{root}/{environment}" if environment is not None else root
    try:
        tree = commit.tree / folder
    except KeyError:
        tree = None  # a repository with no deployments/ yet has an empty desired state
    if isinstance(tree, git.Tree):
        for item in tree.traverse():
            if isinstance(item, git.Blob) and str(item.path).endswith((".yaml", ".yml")):
                text, found = _read_blob(item, limits)
                problems.extend(found)
                if text is not None:
                    files[str(item.path)] = text
    if problems:
        raise UnreadableFiles(problems)
    return Snapshot(str(repo_dir), rev, commit.hexsha, files)


def environment_names(repo_dir: str | Path, rev: str, root: str = DEPLOYMENTS_DIR) -> set[str]:
    """The folders of `root` at `rev` (environments), from the tree alone: no file is read, so
    a broken file in one environment cannot hide the others' names."""
    commit = resolve_commit(open_repo(repo_dir), rev)
    try:
        tree = commit.tree / root
    except KeyError:
        return set()
    return {item.name for item in tree.trees} if isinstance(tree, git.Tree) else set()


def _read_blob(blob: git.Blob, limits: Limits) -> tuple[str | None, list[Problem]]:
    too_large = size_problem(str(blob.path), blob.size, limits)  # from the object header
    if too_large is not None:
        return None, [too_large]
    return decode(str(blob.path), blob.data_stream.read(), limits)


def read_worktree(paths: list[Path], limits: Limits = LIMITS) -> dict[str, str]:
    """Deployment files from disk, for `serveops validate` before a commit exists."""
    files: dict[str, str] = {}
    problems: list[Problem] = []
    for path in paths:
        if path.is_dir():
            candidates = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml"))
        elif path.exists():
            candidates = [path]
        else:
            raise BadInput(f"{path}: no such file or directory")
        for p in candidates:
            text, found = read_file(p, limits)
            problems.extend(found)
            if text is not None:
                files[p.as_posix()] = text
    if problems:
        raise UnreadableFiles(problems)
    return files

"""Where the rules and waivers that judge a revision come from: never from that revision.

A pull request is untrusted, its policies/ included; so are the commits the controller is asked
to apply. The gate therefore takes its policies from a source chosen apart from the judged
revision (docs/policy.md, "Trust model"):

- PoliciesAtRevision: policies/ of a revision that has landed: the merge-base of a pull
  request (`serveops check`), the last revision the controller applied, or a ref of a separate
  platform repository.
- PoliciesInDirectory: a directory on disk, e.g. the controller's own configuration.
- PoliciesGiven: files already in memory (tests, tools).
- PoliciesFollowed: a branch of a separate platform repository, fetched at every read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from controller.policy.loader import POLICIES_DIR, read_policy_files
from controller.source.git import read_snapshot
from controller.source.repository import RepoSource


@dataclass(frozen=True)
class PolicyFiles:
    files: dict[str, str]  # path (as messages show it) -> text
    origin: str  # where they came from, for the output: "policies/ at 3f2a9c1e0b7d"
    commit: str | None = None  # the commit they were read at, when from Git


class PolicySource(Protocol):
    """A place rules, waivers (and policy tests) are read from."""

    def read(self) -> PolicyFiles: ...


@dataclass(frozen=True)
class PoliciesAtRevision:
    """`directory` (default policies/) of `repo` at `rev`, read from the commit itself."""

    repo: str | Path
    rev: str
    directory: str = POLICIES_DIR

    def read(self) -> PolicyFiles:
        snapshot = read_snapshot(self.repo, self.rev, root=self.directory)
        origin = f"{self.directory}/ at {snapshot.commit[:12]}"
        return PolicyFiles(snapshot.files, origin, snapshot.commit)


@dataclass(frozen=True)
class PoliciesInDirectory:
    """Every .yaml/.yml file under a directory on disk."""

    path: Path

    def read(self) -> PolicyFiles:
        return PolicyFiles(read_policy_files(self.path), f"{self.path}/ on disk")


@dataclass(frozen=True)
class PoliciesGiven:
    """Files given as they are."""

    files: Mapping[str, str] = field(default_factory=dict)
    origin: str = "policy files given"

    def read(self) -> PolicyFiles:
        return PolicyFiles(dict(self.files), self.origin)


@dataclass(frozen=True)
class PoliciesFollowed:
    """`directory` of a repository's branch, fetched at every read: a platform repository the
    controller follows apart from the one it judges."""

    source: RepoSource
    directory: str = POLICIES_DIR

    def read(self) -> PolicyFiles:
        return PoliciesAtRevision(self.source.path, self.source.head(), self.directory).read()

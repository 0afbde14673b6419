"""Where the controller reads Git: a local directory, or a URL mirrored into a cache directory.

A URL is cloned once (`git clone --mirror`) and fetched at every pass, so the branch head is
read from the mirror's own refs. A local directory is read in place; when it has a remote, that
remote is fetched and the remote-tracking branch (`origin/<branch>`) is followed, since what
is pushed is the truth; without a remote, the local branch is followed.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import git

from controller.errors import BadInput, Unreachable
from controller.source.git import open_repo, resolve_commit

log = logging.getLogger("serveops.controller")
# A clone or fetch that takes longer is killed and the pass fails (Unreachable: transient, the
# revision is not marked failed); a hung Git server never holds a pass.
GIT_TIMEOUT_S = 120

_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:")  # git@github.com:org/repo.git
_CREDENTIALS = re.compile(r"://[^/@\s]+@")  # https://user:token@host/...


def is_url(repo: str) -> bool:
    return "://" in repo or bool(_SCP_LIKE.match(repo))


def redact(text: str) -> str:
    """Text (a URL, an error message) without the credentials of any URL in it."""
    return _CREDENTIALS.sub("://", text)


class RepoSource:
    """Resolves the followed branch (or a fixed revision) to a commit, fetching first."""

    def __init__(
        self,
        repo: str,
        *,
        branch: str | None = "main",
        rev: str | None = None,
        cache_dir: Path = Path(".serveops/repos"),
    ) -> None:
        if (branch is None) == (rev is None):
            raise BadInput("give a branch or a revision to follow, not both")
        self.repo = repo
        self.branch = branch
        self.rev = rev
        self.display = redact(repo)
        if is_url(repo):
            digest = hashlib.sha256(repo.encode()).hexdigest()[:12]
            name = re.sub(r"[^\w.-]", "_", repo.rstrip("/").rsplit("/", 1)[-1])[:40]
            self.path = cache_dir / f"{name}-{digest}"
            self.mirror = True
        else:
            self.path = Path(repo)
            self.mirror = False
            if not self.path.is_dir():
                raise BadInput(f"{repo}: no such directory, and not a Git URL")
            open_repo(self.path)

    @property
    def followed(self) -> str:
        """What the user follows, as they named it: the branch, or the revision."""
        return self.branch if self.branch is not None else str(self.rev)

    def head(self) -> str:
        """Fetch, then the full sha of the followed branch or revision."""
        repo = self._fetch()
        if self.rev is not None:
            return resolve_commit(repo, self.rev).hexsha
        assert self.branch is not None
        candidates = [self.branch]
        if not self.mirror and repo.remotes:
            candidates.insert(0, f"{default_remote(repo).name}/{self.branch}")
        for ref in candidates:
            try:
                return str(repo.commit(ref).hexsha)
            except (git.BadName, ValueError, git.GitCommandError):
                continue
        raise BadInput(f"{self.display}: branch {self.branch!r} does not exist")

    def repository(self) -> git.Repo:
        """The local repository (a URL's mirror cloned first if it is not there yet)."""
        if self.mirror and not (self.path / "HEAD").exists():
            return self._fetch()
        return open_repo(self.path)

    def _fetch(self) -> git.Repo:
        if not self.mirror:
            repo = open_repo(self.path)
            if repo.remotes:
                remote = default_remote(repo)
                try:
                    remote.fetch(prune=True, kill_after_timeout=GIT_TIMEOUT_S)
                except git.GitCommandError as err:
                    # Following what was fetched last would report a stale head as in sync.
                    raise Unreachable(
                        f"cannot fetch {remote.name} of {self.display}: {short_error(err)}"
                    ) from None
            return repo
        if not (self.path / "HEAD").exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                git.Repo.clone_from(
                    self.repo, self.path, mirror=True, kill_after_timeout=GIT_TIMEOUT_S
                )
            except git.GitCommandError as err:
                raise Unreachable(f"cannot clone {self.display}: {short_error(err)}") from None
            return open_repo(self.path)
        repo = open_repo(self.path)
        try:
            repo.remote("origin").fetch(prune=True, kill_after_timeout=GIT_TIMEOUT_S)
        except git.GitCommandError as err:
            raise Unreachable(f"cannot fetch {self.display}: {short_error(err)}") from None
        return repo


def default_remote(repo: git.Repo) -> git.Remote:
    names = [r.name for r in repo.remotes]
    return repo.remote("origin") if "origin" in names else repo.remotes[0]


def short_error(err: git.GitCommandError) -> str:
    text = str(err.stderr or err).strip().replace("\n", " ")
    return redact(text[:500])

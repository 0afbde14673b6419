"""The environment's lease kept in the deployment repository, where every controller that
follows it sees it, whatever state file each one keeps (`serveops controller --lease-in-git`).

The lease is a ref, `refs/serveops/leases/<environment>`, pointing at a commit of the empty
tree whose message is the lease as JSON (holder, instance, epoch, expiry). Taking or renewing
it is a compare-and-swap on that ref: `git push --force-with-lease=<ref>:<sha read>` to the
repository's remote, or `git update-ref <ref> <new> <old>` in a local repository without one.
Two controllers racing for a free lease cannot both win: the second swap finds the ref moved.

Controllers on different machines compare expiries against their own clocks: keep them in sync
(NTP); the TTL (three intervals, at least 30 s) absorbs the usual drift.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass

import git

from controller.errors import Unreachable
from controller.gitops.state.records import Lease, LeaseResult
from controller.source.repository import GIT_TIMEOUT_S, RepoSource, default_remote, short_error

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
MAX_MESSAGE_BYTES = 4096  # a lease is ~200 bytes; a bigger message is not ours
IDENTITY = {
    "GIT_AUTHOR_NAME": "serveops",
    "GIT_AUTHOR_EMAIL": "serveops@localhost",
    "GIT_COMMITTER_NAME": "serveops",
    "GIT_COMMITTER_EMAIL": "serveops@localhost",
}


def lease_ref(environment: str) -> str:
    return f"refs/serveops/leases/{environment}"


@dataclass(frozen=True)
class RefLeases:
    """Leases on the repository `source` follows (its remote, or itself without one)."""

    source: RepoSource

    def _repo(self) -> tuple[git.Repo, str | None]:
        repo = self.source.repository()
        if self.source.mirror:
            return repo, "origin"
        return repo, (default_remote(repo).name if repo.remotes else None)

    def _git(self, repo: git.Repo, *args: str) -> str:
        try:
            return str(
                repo.git.execute(
                    ["git", *args],
                    kill_after_timeout=GIT_TIMEOUT_S,
                    env={**os.environ, **IDENTITY},
                )
            )
        except git.GitCommandError as err:
            raise Unreachable(
                f"lease in {self.source.display}: git {args[0]} failed: {short_error(err)}"
            ) from None

    def read(self, environment: str) -> tuple[str | None, Lease | None]:
        """The ref's commit and the lease it holds (None, None: no lease)."""
        repo, remote = self._repo()
        ref = lease_ref(environment)
        if remote is None:
            try:
                sha = repo.git.rev_parse("--verify", "-q", ref)
            except git.GitCommandError:
                return None, None
        else:
            listed = self._git(repo, "ls-remote", remote, ref).split()
            if not listed:
                return None, None
            sha = listed[0]
            self._git(repo, "fetch", "--no-tags", remote, ref)  # the commit, into FETCH_HEAD
        # Whoever can push to the repository can write this ref: read nothing big.
        if int(self._git(repo, "cat-file", "-s", sha)) > MAX_MESSAGE_BYTES + 1024:
            return sha, None
        return sha, _parse(environment, self._git(repo, "cat-file", "commit", sha))

    def acquire(
        self, environment: str, holder: str, instance: str, ttl_s: float, now: dt.datetime
    ) -> LeaseResult:
        """Take or renew the lease unless another holder's is live; a lost race reports the
        winner. Our own holder's lease (another instance: a restart) is taken over at once."""
        sha, current = self.read(environment)
        if current is not None and current.holder != holder and current.expires_at > now:
            return LeaseResult(False, current)
        same = current is not None and (current.holder, current.instance) == (holder, instance)
        lease = Lease(
            environment,
            holder,
            current.acquired_at if same and current is not None else now,
            now + dt.timedelta(seconds=ttl_s),
            instance,
            (current.epoch if same else current.epoch + 1) if current is not None else 1,
        )
        if not self._swap(environment, sha, _message(lease)):
            _, winner = self.read(environment)
            if winner is not None:
                return LeaseResult(False, winner)
            return self.acquire(environment, holder, instance, ttl_s, now)  # it was deleted
        return LeaseResult(True, lease)

    def release(self, environment: str, holder: str, instance: str) -> None:
        """Delete the lease if it is still this instance's."""
        sha, current = self.read(environment)
        ours = current is not None and (current.holder, current.instance) == (holder, instance)
        if sha is not None and ours:
            self._swap(environment, sha, None)

    def break_lease(self, environment: str) -> Lease | None:
        sha, current = self.read(environment)
        if sha is not None:
            self._swap(environment, sha, None)
        return current

    def _swap(self, environment: str, expected: str | None, message: str | None) -> bool:
        """Point the ref at a new lease commit (None: delete it) if it still points at
        `expected` (None: does not exist). False when another controller moved it first."""
        repo, remote = self._repo()
        ref = lease_ref(environment)
        new = None
        if message is not None:
            new = self._git(repo, "commit-tree", EMPTY_TREE, "-m", message).strip()
        if remote is None:
            args = ["update-ref", "-d", ref] if new is None else ["update-ref", ref, new]
            try:
                repo.git.execute(["git", *args, expected or "0" * 40])
            except git.GitCommandError:
                return False
            return True
        source = new if new is not None else ""
        try:
            repo.git.execute(
                ["git", "push", "--porcelain", f"--force-with-lease={ref}:{expected or ''}",
                 remote, f"{source}:{ref}"],
                kill_after_timeout=GIT_TIMEOUT_S,
            )  # fmt: skip
        except git.GitCommandError as err:
            if "stale info" in str(err.stderr) or "rejected" in str(err.stdout or err.stderr):
                return False
            raise Unreachable(
                f"lease in {self.source.display}: git push failed: {short_error(err)}"
            ) from None
        return True


def _message(lease: Lease) -> str:
    return json.dumps(
        {
            "serveops_lease": lease.environment,
            "holder": lease.holder,
            "instance": lease.instance,
            "epoch": lease.epoch,
            "acquired_at": lease.acquired_at.isoformat(),
            "expires_at": lease.expires_at.isoformat(),
        },
        sort_keys=True,
    )


def _parse(environment: str, commit: str) -> Lease | None:
    """The lease in a commit's message; None for anything else (treated as no lease)."""
    message = commit.split("\n\n", 1)[1] if "\n\n" in commit else ""
    if len(message) > MAX_MESSAGE_BYTES:
        return None
    try:
        data = json.loads(message)
        if data.get("serveops_lease") != environment:
            return None
        return Lease(
            environment,
            str(data["holder"]),
            dt.datetime.fromisoformat(data["acquired_at"]),
            dt.datetime.fromisoformat(data["expires_at"]),
            str(data["instance"]),
            int(data["epoch"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None

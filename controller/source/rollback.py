"""`serveops rollback`: a revert commit that puts deployment files back as they were (GitOps).

Git stays the truth: a rollback never touches Serve. It writes a commit on the checked-out
branch that restores the deployment files of an environment (or of one deployment) to an
earlier revision; the controller then moves Serve there like any other commit (for a
progressive deployment, a rollout back to the previous version).

Which revision: with `--to REV`, that one (an ancestor of the branch). Without it, the state
before the last change of the files: the newest commit that touched them is undone. Rollback
commits name what they undid in a `Serveops-Rollback-Of:` trailer, and those commits (and the
rollbacks themselves) are passed over, so a second rollback goes one change further back instead
of undoing the first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import git
import yaml

from controller.errors import BadInput, ServeopsError, ValidationFailed
from controller.source.git import DEPLOYMENTS_DIR, open_repo, resolve_commit
from controller.spec.manifest import is_deployment_file, load_manifests

TRAILER = "Serveops-Rollback-Of"
_TRAILER_LINE = re.compile(rf"^{TRAILER}:\s*([0-9a-f]{{40}})\s*$", re.MULTILINE)


class NothingToRollBack(ServeopsError):
    """The files are already as they were at the revision a rollback would restore."""


@dataclass(frozen=True)
class FileChange:
    path: str
    head: str | None  # text at the branch head; None: the file does not exist there
    restored: str | None  # text the rollback writes; None: the rollback deletes it

    def summary(self) -> str:
        before, after = _model(self.head), _model(self.restored)
        name = _name(self.restored) or _name(self.head) or self.path
        if self.head is None:
            return f"{name}: restored ({self.path}, {after or 'no model'})"
        if self.restored is None:
            return f"{name}: removed ({self.path})"
        if before != after:
            return f"{name}: model {before} -> {after} ({self.path})"
        return f"{name}: {self.path} restored (model unchanged: {after})"


@dataclass(frozen=True)
class RollbackPlan:
    repo: str
    branch: str
    head: str  # sha of the branch head the rollback starts from
    environment: str
    deployment: str | None  # None: every deployment file of the environment
    target: str  # sha whose files are restored
    target_subject: str
    undone: list[tuple[str, str]]  # (sha, subject) of the changes the rollback undoes
    changes: list[FileChange]

    @property
    def scope(self) -> str:
        return f"{self.environment}/{self.deployment}" if self.deployment else self.environment

    def message(self, reason: str) -> str:
        """The commit message: what is rolled back, to what, undoing what, and why."""
        lines = [f"Roll back {self.scope} to {self.target[:12]}", ""]
        lines += [c.summary() for c in self.changes]
        lines += [
            "",
            f'Restores the deployment files as of {self.target[:12]} ("{self.target_subject}"),',
        ]
        lines.append("undoing:" if self.undone else "undoing nothing newer.")
        lines += [f'  {sha[:12]} "{subject}"' for sha, subject in self.undone]
        lines += ["", f"Why: {reason}", ""]
        lines += [f"{TRAILER}: {sha}" for sha, _ in self.undone]
        return "\n".join(lines).rstrip() + "\n"


@dataclass(frozen=True)
class RollbackResult:
    plan: RollbackPlan
    commit: str
    message: str
    pushed_to: str | None  # `origin/main` when pushed


def plan_rollback(
    repo_dir: str | Path, environment: str, deployment: str | None = None, to: str | None = None
) -> RollbackPlan:
    """What a rollback would write; raises with a clear message when it cannot or need not."""
    repo = _work_repo(repo_dir)
    head = repo.head.commit
    branch = repo.active_branch.name
    folder = f"{DEPLOYMENTS_DIR}/{environment}"
    head_files = _files(head, folder)
    if deployment is not None:
        path = _path_of(head_files, deployment)
        if path is None:
            raise BadInput(
                f"{repo_dir}: no deployment named {deployment!r} in {folder}/ at {branch} "
                f"({head.hexsha[:12]})"
            )
        scope = path
    elif not head_files and to is None:
        raise BadInput(f"{repo_dir}: {folder}/ has no deployment files at {branch}")
    else:
        scope = folder

    if to is not None:
        target = resolve_commit(repo, to)
        if not repo.is_ancestor(target, head):
            raise BadInput(
                f"{repo_dir}: revision {to!r} ({target.hexsha[:12]}) is not an ancestor of "
                f"{branch}: a rollback restores an earlier state of the branch"
            )
        undone = list(repo.iter_commits(f"{target.hexsha}..{head.hexsha}", paths=scope))
    else:
        last = _last_change(repo, head, scope)
        if last is None or not last.parents:
            first = f" ({last.hexsha[:12]}, its first)" if last is not None else ""
            raise NothingToRollBack(
                f"nothing to roll back: {scope} has no revision before the current one{first}"
            )
        target, undone = last.parents[0], [last]

    target_files = _files(target, folder)
    if deployment is not None:
        if scope not in target_files:
            raise NothingToRollBack(
                f"nothing to roll back: {scope} did not exist at {target.hexsha[:12]}; "
                "to delete the deployment, remove its file"
            )
        head_files = {scope: head_files[scope]}
        target_files = {scope: target_files[scope]}
    changes = [
        FileChange(p, head_files.get(p), target_files.get(p))
        for p in sorted(head_files.keys() | target_files.keys())
        if head_files.get(p) != target_files.get(p)
    ]
    if not changes:
        raise NothingToRollBack(
            f"nothing to roll back: {scope} at {target.hexsha[:12]} is the same as at {branch}"
        )
    _check_valid(repo, head, folder, changes, target.hexsha)
    return RollbackPlan(
        repo=str(repo_dir),
        branch=branch,
        head=head.hexsha,
        environment=environment,
        deployment=deployment,
        target=target.hexsha,
        target_subject=_subject(target),
        undone=[(c.hexsha, _subject(c)) for c in undone],
        changes=changes,
    )


def write_rollback(plan: RollbackPlan, reason: str, *, push: bool = False) -> RollbackResult:
    """Write the files, commit them on the branch, and push when asked."""
    repo = _work_repo(plan.repo)
    if repo.head.commit.hexsha != plan.head or repo.active_branch.name != plan.branch:
        raise BadInput(
            f"{plan.repo}: {plan.branch} moved since the rollback was planned; run it again"
        )
    root = Path(repo.working_dir)
    written, removed = [], []
    for change in plan.changes:
        if change.restored is None:
            removed.append(change.path)
        else:
            target = root / change.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(change.restored, encoding="utf-8")
            written.append(change.path)
    if written:
        repo.index.add(written)
    if removed:
        repo.index.remove(removed, working_tree=True)
    message = plan.message(reason)
    commit = repo.index.commit(message)
    pushed_to = _push(repo, plan.branch, commit.hexsha) if push else None
    return RollbackResult(plan, commit.hexsha, message, pushed_to)


# --- helpers ----------------------------------------------------------------------------------


def _work_repo(repo_dir: str | Path) -> git.Repo:
    """A repository a commit can be written in: a work tree, on a branch, with nothing pending."""
    repo = open_repo(repo_dir)
    if repo.bare:
        raise BadInput(f"{repo_dir}: a bare repository; run rollback in a clone with a work tree")
    if not repo.head.is_valid():
        raise BadInput(f"{repo_dir}: the repository has no commits yet")
    if repo.head.is_detached:
        raise BadInput(f"{repo_dir}: HEAD is detached; check out the branch to roll back first")
    pending = sorted(
        {str(d.a_path or d.b_path) for d in repo.index.diff(None)}
        | {str(d.a_path or d.b_path) for d in repo.index.diff("HEAD")}
    )
    if pending:
        shown = ", ".join(pending[:5]) + (
            f" and {len(pending) - 5} more" if len(pending) > 5 else ""
        )
        raise BadInput(
            f"{repo_dir}: the working tree has uncommitted changes ({shown}); commit or stash "
            "them first: rollback writes a commit"
        )
    return repo


def _files(commit: git.Commit, folder: str) -> dict[str, str]:
    """Deployment files under `folder` at `commit`."""
    try:
        tree = commit.tree / folder
    except KeyError:
        return {}
    return {
        str(item.path): item.data_stream.read().decode("utf-8")
        for item in tree.traverse()
        if isinstance(item, git.Blob) and is_deployment_file(str(item.path))
    }


def _doc(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _name(text: str | None) -> str | None:
    meta = _doc(text).get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else None


def _model(text: str | None) -> str | None:
    spec = _doc(text).get("spec")
    model = spec.get("model") if isinstance(spec, dict) else None
    return model if isinstance(model, str) else None


def _path_of(files: dict[str, str], deployment: str) -> str | None:
    for path, text in sorted(files.items()):
        if _name(text) == deployment:
            return path
    return None


def _subject(commit: git.Commit) -> str:
    message = commit.message if isinstance(commit.message, str) else commit.message.decode()
    return message.strip().splitlines()[0] if message.strip() else ""


def _last_change(repo: git.Repo, head: git.Commit, scope: str) -> git.Commit | None:
    """The newest commit that changed `scope`, passing over rollbacks and what they undid."""
    undone: set[str] = set()
    for commit in repo.iter_commits(head.hexsha, paths=scope):
        message = commit.message if isinstance(commit.message, str) else commit.message.decode()
        rolled_back = _TRAILER_LINE.findall(message)
        if rolled_back:
            undone.update(rolled_back)
            continue
        if commit.hexsha in undone:
            continue
        return commit
    return None


def _check_valid(
    repo: git.Repo, head: git.Commit, folder: str, changes: list[FileChange], target: str
) -> None:
    """The environment's files after the rollback must validate, as any commit's must."""
    files = _files(head, folder)
    for change in changes:
        if change.restored is None:
            files.pop(change.path, None)
        else:
            files[change.path] = change.restored
    try:
        load_manifests(files, folder.rsplit("/", 1)[-1])
    except ValidationFailed as err:
        raise BadInput(
            f"{repo.working_dir}: rolling back to {target[:12]} would commit invalid deployment "
            f"files (nothing was changed): {err.message}"
        ) from None


def _push(repo: git.Repo, branch: str, sha: str) -> str:
    remotes = repo.remotes
    if not remotes:
        raise ServeopsError(
            f"the rollback commit {sha[:12]} is on your local {branch}, but the repository has "
            "no remote to push it to"
        )
    remote = next((r for r in remotes if r.name == "origin"), remotes[0])
    refspec = f"refs/heads/{branch}:refs/heads/{branch}"
    try:
        infos = remote.push(refspec=refspec)
        bad = (
            git.PushInfo.ERROR
            | git.PushInfo.REJECTED
            | git.PushInfo.REMOTE_REJECTED
            | git.PushInfo.REMOTE_FAILURE
        )
        failed = [i for i in infos if i.flags & bad]
        if failed or not infos:
            why = failed[0].summary.strip() if failed else "no reply"
            raise ServeopsError(
                f"pushing to {remote.name}/{branch} failed ({why}): the rollback commit "
                f"{sha[:12]} is on your local {branch}; pull, then push it"
            )
    except git.GitCommandError as err:
        raise ServeopsError(
            f"pushing to {remote.name}/{branch} failed ({err.stderr.strip() or err}): the "
            f"rollback commit {sha[:12]} is on your local {branch}; pull, then push it"
        ) from None
    return f"{remote.name}/{branch}"

"""`serveops propose`: a new model version, as a commit on a branch of the deployments repository.

Flux's image automation in MLflow's terms: a scan of the registry (the model's versions), a
selection rule (an explicit version, an alias, a tag, a metric of the version's run above or
below a threshold, or the newest READY version: controller/monitor/versions.py), and an
update of the `model:` field of one deployment file, committed to its own branch with the drift
evidence in the message. Nothing is applied: the branch becomes a pull request and goes the usual
way (policy check, simulation against recorded traffic, canary).

The commit is built with Git's plumbing on a private index: the work tree, the checked-out
branch and the user's index are never touched. Only the `model:` line changes, so comments and
layout stay as the author wrote them, and the new file is validated before anything is written.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from git import GitCommandError

from controller.errors import BadInput, ServeopsError
from controller.monitor.drift_report import DriftReport
from controller.monitor.versions import Rule, VersionInfo
from controller.redact import redact
from controller.source.git import DEPLOYMENTS_DIR, open_repo, resolve_commit
from controller.spec.manifest import parse_manifest
from controller.spec.models import parse_model_uri

TRAILER_MODEL = "Serveops-Proposed-Model"
TRAILER_WINDOW = "Serveops-Drift-Window"
DEFAULT_AUTHOR = ("serveops", "serveops@localhost")
MAX_EVIDENCE = 3  # windows quoted in the message


class NothingToPropose(ServeopsError):
    """The deployment already serves the version the rule selects (or a newer one)."""

    exit_code = 0


@dataclass(frozen=True)
class Proposal:
    repo: str
    base: str  # sha the branch starts from
    path: str
    environment: str
    deployment: str
    current: str  # model URI now
    proposed: str  # model URI proposed
    branch: str
    text: str  # the deployment file as proposed
    message: str


def current_model(repo_dir: str | Path, environment: str, deployment: str, rev: str) -> str:
    """The model URI the deployment's file names at `rev`."""
    commit = resolve_commit(open_repo(repo_dir), rev)
    path, text = _deployment_file(commit, environment, deployment, repo_dir)
    manifest, problems = parse_manifest(path, text)
    if manifest is None:
        raise BadInput(f"{path} is not valid at {commit.hexsha[:12]}: {problems[0]}")
    return manifest.deployment.spec.model


def plan_proposal(
    repo_dir: str | Path,
    environment: str,
    deployment: str,
    versions: Sequence[VersionInfo],
    rule: Rule,
    *,
    rev: str = "HEAD",
    evidence: Sequence[DriftReport] = (),
    branch: str | None = None,
    branch_prefix: str = "serveops/propose",
) -> Proposal:
    """The commit that would move `deployment` to the version `rule` selects."""
    repo = open_repo(repo_dir)
    base = resolve_commit(repo, rev)
    path, text = _deployment_file(base, environment, deployment, repo_dir)
    manifest, problems = parse_manifest(path, text)
    if manifest is None:
        raise BadInput(f"{path} is not valid at {base.hexsha[:12]}: {problems[0]}")
    current = manifest.deployment.spec.model
    name, version, alias = parse_model_uri(current)
    if version is None:
        raise BadInput(
            f"{path}: {deployment} follows the alias @{alias}: move the alias in MLflow (the "
            "controller follows it), or pin a version before proposing one"
        )
    chosen = rule.select(versions)
    if chosen is None:
        raise BadInput(f"model {name!r}: no registered version is {rule.describe()}")
    if int(chosen.version) <= int(version) and rule.version is None:
        raise NothingToPropose(
            f"{environment}/{deployment} serves {current}; {rule.describe()} is v{chosen.version}: "
            "nothing to propose"
        )
    if chosen.version == version:
        raise NothingToPropose(f"{environment}/{deployment} already serves {current}")
    proposed = f"models:/{name}/{chosen.version}"
    new_text = _replace_model(text, manifest.line_of("spec", "model"), current, proposed, path)
    again, problems = parse_manifest(path, new_text)
    if again is None or again.deployment.spec.model != proposed:
        raise BadInput(f"{path}: the proposed file does not validate: {problems[:1]}")
    branch = branch or f"{branch_prefix}/{environment}/{deployment}-v{chosen.version}"
    message = _message(environment, deployment, path, current, proposed, rule, evidence, chosen)
    return Proposal(
        str(repo_dir),
        base.hexsha,
        path,
        environment,
        deployment,
        current,
        proposed,
        branch,
        new_text,
        message,
    )


def write_proposal(
    proposal: Proposal, *, author: tuple[str, str] = DEFAULT_AUTHOR, push: str | None = None
) -> str:
    """Commit the proposal to its branch (created; an existing branch that already holds the
    same change is left as it is) and return the commit's sha. `push` names a remote to push
    the branch to."""
    repo = open_repo(proposal.repo)
    git = repo.git
    ref = f"refs/heads/{proposal.branch}"
    existing = _branch_sha(repo, ref)
    if existing is not None:
        head = repo.commit(existing)
        try:
            held = (head.tree / proposal.path).data_stream.read().decode()
        except KeyError:
            held = None
        if held != proposal.text:
            raise BadInput(
                f"branch {proposal.branch} exists with other content; delete it or pass --branch"
            )
        sha = existing  # proposed before: level-triggered, nothing new (a push is tried again)
    else:
        sha = _commit(git, proposal, ref, author)
    if push is not None:
        try:
            git.push(push, f"{ref}:{ref}")
        except GitCommandError as err:
            raise ServeopsError(
                f"the proposal is committed ({sha[:12]} on {proposal.branch}) but pushing it to "
                f"{push!r} failed: {redact(str(err.stderr or err).strip())}"
            ) from None
    return sha


def _commit(git: Any, proposal: Proposal, ref: str, author: tuple[str, str]) -> str:
    """The proposal's commit, built on a private index, and its branch created."""
    name, email = author
    with tempfile.TemporaryDirectory(prefix="serveops-propose-") as tmp:
        env = {
            "GIT_INDEX_FILE": str(Path(tmp) / "index"),
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }
        file = Path(tmp) / "file"
        file.write_text(proposal.text, encoding="utf-8")
        message = Path(tmp) / "message"
        message.write_text(proposal.message, encoding="utf-8")
        try:
            git.read_tree(proposal.base, env=env)
            blob = git.hash_object("-w", "--no-filters", str(file), env=env)
            mode = _mode(git, proposal.base, proposal.path)
            git.update_index("--cacheinfo", f"{mode},{blob},{proposal.path}", env=env)
            tree = git.write_tree(env=env)
            sha: str = git.commit_tree(tree, "-p", proposal.base, "-F", str(message), env=env)
            git.update_ref(ref, sha, "0" * 40)  # only when the branch does not exist yet
        except GitCommandError as err:
            raise ServeopsError(
                f"{proposal.repo}: writing branch {proposal.branch} failed (nothing was changed "
                f"unless the branch now exists): {redact(str(err.stderr or err).strip())}"
            ) from None
    return sha


# --- helpers ----------------------------------------------------------------------------------


def _deployment_file(
    commit: Any, environment: str, deployment: str, repo_dir: str | Path
) -> tuple[str, str]:
    folder = f"{DEPLOYMENTS_DIR}/{environment}"
    try:
        tree = commit.tree / folder
    except KeyError:
        raise BadInput(f"{repo_dir}: no {folder}/ at {commit.hexsha[:12]}") from None
    for blob in tree.traverse():
        if blob.type != "blob" or not blob.path.endswith((".yaml", ".yml")):
            continue
        if blob.size > 1024 * 1024:
            continue
        text = blob.data_stream.read().decode("utf-8", errors="replace")
        manifest, _ = parse_manifest(blob.path, text)
        if manifest is not None and manifest.name == deployment:
            return str(blob.path), text
    raise BadInput(f"{repo_dir}: no deployment named {deployment!r} in {folder}/")


def _replace_model(text: str, line: int | None, current: str, proposed: str, path: str) -> str:
    lines = text.splitlines(keepends=True)
    if line is None or not 1 <= line <= len(lines) or current not in lines[line - 1]:
        raise BadInput(
            f"{path}: cannot find {current} on the line of spec.model; write it on one line"
        )
    pattern = re.compile(rf"(?<![\w/.@-]){re.escape(current)}(?![\w/.@-])")
    new_line, n = pattern.subn(proposed, lines[line - 1], count=1)
    if n != 1:
        raise BadInput(f"{path}:{line}: cannot replace {current} on this line")
    lines[line - 1] = new_line
    return "".join(lines)


def _message(
    env: str,
    deployment: str,
    path: str,
    current: str,
    proposed: str,
    rule: Rule,
    evidence: Sequence[DriftReport],
    chosen: VersionInfo,
) -> str:
    old, new = current.rsplit("/", 1)[1], proposed.rsplit("/", 1)[1]
    selected = rule.describe()
    if rule.metric is not None:
        selected += f" ({rule.metric.name} = {chosen.metric(rule.metric.name):g})"
    lines = [
        f"{env}/{deployment}: propose model v{new} (serving v{old})",
        "",
        f"{path}: {current} -> {proposed}",
        f"Selected: {selected}.",
        "",
    ]
    if evidence:
        lines.append("Drift evidence (serveops monitor), newest first:")
        for report in evidence[:MAX_EVIDENCE]:
            lines.append(f"  {report.summary()}")
        lines.append("")
    else:
        lines += ["No drift evidence was given (no monitoring report in the state).", ""]
    lines += [
        "Nothing was applied: this branch goes through the usual gate (policy check,",
        "simulation against recorded traffic, the rollout's canary) like any change.",
        "",
        f"{TRAILER_MODEL}: {proposed}",
    ]
    if evidence:
        first = evidence[0]
        lines.append(
            f"{TRAILER_WINDOW}: {first.window_start.isoformat()}/{first.window_end.isoformat()}"
        )
    return "\n".join(lines) + "\n"


def _branch_sha(repo: Any, ref: str) -> str | None:
    try:
        return str(repo.git.rev_parse("--verify", "--quiet", ref))
    except Exception:  # git exits 1: no such branch
        return None


def _mode(git: Any, base: str, path: str) -> str:
    listed = str(git.ls_tree(base, "--", path)).split()
    return listed[0] if listed else "100644"

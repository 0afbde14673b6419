"""Options shared by `serveops controller` and `serveops sync`, and the controller's parts built
from them (trust anchors, registry, notifier, source, hooks, secrets to mask)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from controller.errors import BadInput
from controller.gitops.notify import Notifier, WebhookNotifier
from controller.gitops.settings import DRIFT_MODES, DriftMode
from controller.policy.evidence import EvidenceStore, open_store
from controller.policy.source import PoliciesFollowed, PoliciesInDirectory, PolicySource
from controller.redact import (
    register_environment_secrets,
    register_url_credentials,
    register_webhook_urls,
)
from controller.registry.mlflow import MlflowRegistry, Registry
from controller.rollout.hooks import HOOK_ENV, PIN_KEY_FILE, Hooks, load_pin_signer
from controller.source.repository import RepoSource

CacheOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir", help="Where repository URLs are mirrored (default: next to --state)."
    ),
]
DriftOpt = Annotated[
    str,
    typer.Option(
        "--drift",
        envvar="SERVEOPS_DRIFT",
        help="When live Serve drifts from Git: enabled (restore Git's state), warn, disabled.",
    ),
]
NotifyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--notify-webhook",
        envvar="SERVEOPS_NOTIFY_WEBHOOK",
        help="POST a JSON event here on deployed, degraded, sync failed, rollout aborted, "
        "drift detected (repeatable).",
    ),
]
PoliciesOpt = Annotated[
    str | None,
    typer.Option(
        "--policies",
        envvar="SERVEOPS_POLICIES",
        help="The platform team's policies, apart from the repository judged: a directory, or "
        "a repository (directory or URL) followed at --policies-branch. Default: the policies/ "
        "of the revision admitted last.",
    ),
]
PoliciesBranchOpt = Annotated[
    str | None,
    typer.Option("--policies-branch", help="With a --policies repository: the branch followed."),
]
BootstrapOpt = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-policies",
        help="Without --policies: a reviewed revision whose policies/ judge the first admission "
        "(nothing admitted yet, or a lost state file).",
    ),
]
EvidenceOpt = Annotated[
    str | None,
    typer.Option(
        "--evidence",
        envvar="SERVEOPS_EVIDENCE",
        help="Simulation evidence store (a directory or file:// URI) the gate reads; records "
        "are checked with $SERVEOPS_EVIDENCE_KEY (or the file $SERVEOPS_EVIDENCE_KEY_FILE).",
    ),
]
HookCommandsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-hook-command",
        envvar="SERVEOPS_ALLOW_HOOK_COMMANDS",
        help="A program rollout `command` hooks may run (repeatable; an absolute path, or a "
        "name on /usr/local/bin:/usr/bin:/bin). None by default: Git cannot allow one.",
    ),
]
SlackOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--notify-slack",
        envvar="SERVEOPS_SLACK_WEBHOOK",
        help="Slack incoming-webhook URL for the same events (repeatable).",
    ),
]


def trust_settings(
    policies: str | None,
    policies_branch: str | None,
    bootstrap: str | None,
    evidence: str | None,
    hook_commands: list[str] | None,
    state: Path,
) -> dict[str, Any]:
    trust = Trust.from_options(
        policies, policies_branch, bootstrap, evidence, hook_commands, state.parent / "policies"
    )
    return {
        "policies": trust.policies,
        "bootstrap_policies": trust.bootstrap,
        "evidence": trust.evidence,
        "hook_commands": trust.hook_commands,
    }


def drift_mode(text: str) -> DriftMode:
    for mode in DRIFT_MODES:
        if text == mode:
            return mode
    raise BadInput(f"--drift must be one of {', '.join(DRIFT_MODES)}, not {text!r}")


def registry_factory(uri: str | None) -> Callable[[], Registry]:
    if not uri:
        raise BadInput("no MLflow registry: pass --registry-uri or set MLFLOW_TRACKING_URI")
    from controller.registry.mlflow import absolute_tracking_uri

    tracking_uri = absolute_tracking_uri(uri)
    return lambda: MlflowRegistry(tracking_uri)


def notifier_from(webhooks: list[str] | None, slack: list[str] | None) -> Notifier | None:
    if not webhooks and not slack:
        return None
    return WebhookNotifier(webhooks or [], slack or [])


def repo_source(
    repo: str, branch: str | None, rev: str | None, state: Path, cache: Path | None
) -> RepoSource:
    return RepoSource(repo, branch=branch, rev=rev, cache_dir=cache or state.parent / "repos")


@dataclass(frozen=True)
class Trust:
    """The gate's anchors, from the controller's own configuration (never from Git)."""

    policies: PolicySource | None
    bootstrap: str | None
    evidence: EvidenceStore | None
    hook_commands: frozenset[str]

    @classmethod
    def from_options(
        cls,
        policies: str | None,
        policies_branch: str | None,
        bootstrap: str | None,
        evidence: str | None,
        hook_commands: list[str] | None,
        cache: Path,
    ) -> Trust:
        source: PolicySource | None = None
        if policies is not None:
            path = Path(policies)
            is_repo = (path / ".git").exists() or "://" in policies or policies.endswith(".git")
            if policies_branch is not None or is_repo:
                followed = RepoSource(policies, branch=policies_branch or "main", cache_dir=cache)
                source = PoliciesFollowed(followed)
            elif path.is_dir():
                source = PoliciesInDirectory(path)
            else:
                raise BadInput(f"--policies {policies}: no such directory or repository")
        if bootstrap is not None and source is not None:
            raise BadInput("--bootstrap-policies is for a controller without --policies")
        return cls(
            source,
            bootstrap,
            open_store(evidence) if evidence else None,
            frozenset(hook_commands or ()),
        )


def guard_secrets(*urls: str | None, webhooks: list[str] | None = None) -> None:
    """The controller's own secrets (its environment's, the URLs' userinfo, notification
    URLs) are masked in everything it says from now on (controller/redact.py)."""
    register_environment_secrets(os.environ)
    register_url_credentials(*urls)
    register_webhook_urls(*(webhooks or []))


def pass_hooks(source: RepoSource, state: Path, allowed: frozenset[str]) -> Hooks:
    """Hooks that run the programs the operator allows, with the pin key kept next to the
    state file (or $SERVEOPS_PIN_KEY), and the variables $SERVEOPS_HOOK_ENV names passed to
    command hooks."""
    names = [n.strip() for n in os.environ.get(HOOK_ENV, "").split(",") if n.strip()]
    return Hooks(
        cwd=None if source.mirror else source.path,
        allowed=allowed,
        signer=load_pin_signer(state.parent / PIN_KEY_FILE),
        pass_env=names,
    )


# --- monitoring options: `--monitor-*-dir`, `--alert-target` ---

ReferenceDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--monitor-reference-dir",
        envvar="SERVEOPS_MONITOR_REFERENCE_DIR",
        help="Where the reference files `spec.monitoring.reference.path` names live; a "
        "deployment's path cannot leave it.",
    ),
]
RecordingsDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--monitor-recordings-dir",
        envvar="SERVEOPS_MONITOR_RECORDINGS_DIR",
        help="Where the controller reads the routers' recordings (default: each deployment's "
        "`recording.dir`, as seen from this host).",
    ),
]
LabelsDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--monitor-labels-dir",
        envvar="SERVEOPS_MONITOR_LABELS_DIR",
        help="Where the label files `spec.monitoring.labels.path` names live (delayed ground "
        "truth, for live quality); a deployment's path cannot leave it.",
    ),
]
AlertTargetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--alert-target",
        envvar="SERVEOPS_ALERT_TARGETS",
        help="NAME=URL: a JSON webhook `spec.monitoring.alert_targets` may name (repeatable). "
        "`default` is the controller's own notifications.",
    ),
]


def alert_targets(values: list[str] | None) -> tuple[tuple[str, str], ...]:
    """`NAME=URL` options as (name, url) pairs; bad input names the option."""
    pairs = []
    for value in values or []:
        name, sep, url = value.partition("=")
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise BadInput(
                f"--alert-target must be NAME=http(s)://..., not {value.split('=')[0]!r}=..."
            )
        if name == "default":
            raise BadInput("--alert-target: 'default' is the controller's own notifications")
        pairs.append((name, url))
    return tuple(pairs)


def monitor_settings(
    reference_dir: Path | None,
    recordings_dir: Path | None,
    targets: list[str] | None,
    labels_dir: Path | None = None,
) -> dict[str, Any]:
    """The ControllerSettings fields of the monitoring options."""
    return {
        "monitor_reference_dir": str(reference_dir) if reference_dir else None,
        "monitor_recordings_dir": str(recordings_dir) if recordings_dir else None,
        "monitor_labels_dir": str(labels_dir) if labels_dir else None,
        "alert_targets": alert_targets(targets),
    }


def target_urls(targets: list[str] | None) -> list[str]:
    """The URLs of `--alert-target` options (secrets: masked in everything said)."""
    return [v.partition("=")[2] for v in targets or [] if "=" in v]

"""`serveops controller`, `serveops sync` and `serveops history`: registered by controller/cli/main.py."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from controller.cli.display import plan_text, print_to
from controller.cli.logs import setup_logging
from controller.cli.monitor import (
    AlertTargetOpt,
    RecordingsDirOpt,
    ReferenceDirOpt,
    monitor_settings,
    target_urls,
)
from controller.cli.options import (
    DEFAULT_ADDRESS,
    DEFAULT_STATE,
    ActorOpt,
    AddressOpt,
    AllowEmptyOpt,
    EnvOpt,
    HttpPortOpt,
    LogFormatOpt,
    OutputOpt,
    PruneOpt,
    RegistryOpt,
    RepoOpt,
    ServingCodeOpt,
    StateOpt,
    TimeoutOpt,
    VerboseOpt,
    check_output,
    err,
    out,
    seconds,
)
from controller.cli.options import run as run_command
from controller.cluster.serve_api import ServeClient
from controller.cluster.serving_code import parse_serving_code
from controller.errors import BadInput
from controller.gitops.loop import Wakeup, run_forever, run_until_settled
from controller.gitops.notify import Notifier, WebhookNotifier
from controller.gitops.outcome import PassResult
from controller.gitops.reconciler import Controller
from controller.gitops.settings import DRIFT_MODES, ControllerSettings, DriftMode
from controller.gitops.state import StateStore
from controller.gitops.telemetry import serve as serve_metrics
from controller.gitops.webhook import SECRET_ENV, PushEvent, WebhookServer
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

log = logging.getLogger("serveops.controller")

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


def _trust(
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


def _drift_mode(text: str) -> DriftMode:
    for mode in DRIFT_MODES:
        if text == mode:
            return mode
    raise BadInput(f"--drift must be one of {', '.join(DRIFT_MODES)}, not {text!r}")


def _registry_factory(uri: str | None) -> Callable[[], Registry]:
    if not uri:
        raise BadInput("no MLflow registry: pass --registry-uri or set MLFLOW_TRACKING_URI")
    from controller.registry.mlflow import absolute_tracking_uri

    tracking_uri = absolute_tracking_uri(uri)
    return lambda: MlflowRegistry(tracking_uri)


def _notifier(webhooks: list[str] | None, slack: list[str] | None) -> Notifier | None:
    if not webhooks and not slack:
        return None
    return WebhookNotifier(webhooks or [], slack or [])


def _source(
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


def _print_result(result: PassResult) -> None:
    style = {
        "applied": "green",
        "healed": "green",
        "in_sync": "green",
        "ignored": "yellow",
        "drift": "yellow",
        "waiting": "yellow",
    }.get(result.outcome, "red")
    if result.outcome in ("applied", "healed") and result.plan is not None:
        print_to(out, plan_text(result.plan))
    stream = out if result.exit_code == 0 else err
    stream.print(f"[{style}]{result.outcome}[/]: {escape(result.message)}", markup=True)


def _result_json(result: PassResult) -> dict[str, Any]:
    data = {
        k: v for k, v in dataclasses.asdict(result).items() if k != "plan"
    }  # asdict cannot copy a pydantic model faithfully
    data["plan"] = result.plan.model_dump(mode="json") if result.plan else None
    data["exit_code"] = result.exit_code
    return data


def _guard_secrets(*urls: str | None, webhooks: list[str] | None = None) -> None:
    """The controller's own secrets (its environment's, the URLs' userinfo, notification
    URLs) are masked in everything it says from now on (controller/redact.py)."""
    register_environment_secrets(os.environ)
    register_url_credentials(*urls)
    register_webhook_urls(*(webhooks or []))


def _hooks(source: RepoSource, state: Path, allowed: frozenset[str]) -> Hooks:
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


def controller_command(
    env: EnvOpt,
    repo: RepoOpt,
    branch: Annotated[str, typer.Option("--branch", help="Branch to follow.")] = "main",
    address: AddressOpt = DEFAULT_ADDRESS,
    interval: Annotated[
        str, typer.Option("--interval", help="Polling interval (10s, 1m, ...).")
    ] = "10s",
    jitter: Annotated[
        float, typer.Option("--jitter", help="Spread of each wait, as a fraction (0.1: +-10%).")
    ] = 0.1,
    state: StateOpt = DEFAULT_STATE,
    cache_dir: CacheOpt = None,
    drift: DriftOpt = "warn",
    registry_uri: RegistryOpt = None,
    serving_code: ServingCodeOpt = "installed",
    prune: PruneOpt = False,
    allow_empty: AllowEmptyOpt = False,
    timeout: TimeoutOpt = "300s",
    http_port: HttpPortOpt = 8000,
    actor: ActorOpt = None,
    webhook_port: Annotated[
        int | None,
        typer.Option(
            "--webhook-port", help=f"Serve a GitHub push webhook here (secret: ${SECRET_ENV})."
        ),
    ] = None,
    webhook_host: Annotated[
        str, typer.Option("--webhook-host", help="Address the webhook listens on.")
    ] = "127.0.0.1",
    metrics_port: Annotated[
        int,
        typer.Option(
            "--metrics-port",
            envvar="SERVEOPS_METRICS_PORT",
            help="Serve the controller's Prometheus metrics at /metrics on this port (0: off).",
        ),
    ] = 0,
    metrics_host: Annotated[
        str, typer.Option("--metrics-host", help="Address the metrics endpoint listens on.")
    ] = "127.0.0.1",
    notify_webhook: NotifyOpt = None,
    notify_slack: SlackOpt = None,
    policies: PoliciesOpt = None,
    policies_branch: PoliciesBranchOpt = None,
    bootstrap_policies: BootstrapOpt = None,
    evidence: EvidenceOpt = None,
    hook_command: HookCommandsOpt = None,
    monitor_reference_dir: ReferenceDirOpt = None,
    monitor_recordings_dir: RecordingsDirOpt = None,
    alert_target: AlertTargetOpt = None,
    lease_in_git: Annotated[
        bool,
        typer.Option(
            "--lease-in-git",
            help="Also hold the environment's lease as a ref in the repository (pushed to its "
            "remote), so controllers with other state files see it and wait.",
        ),
    ] = False,
    verbose: VerboseOpt = False,
    log_format: LogFormatOpt = "text",
) -> None:
    """Run the GitOps loop: every interval (or on a push), fetch, plan, gate, apply, record."""

    def run() -> None:
        setup_logging(verbose, log_format)
        _guard_secrets(
            repo,
            registry_uri,
            webhooks=(notify_webhook or []) + (notify_slack or []) + target_urls(alert_target),
        )
        if not 0 <= jitter < 1:
            raise BadInput(f"--jitter must be in [0, 1), not {jitter}")
        settings = ControllerSettings(
            environment=env,
            interval_s=seconds("--interval", interval),
            drift=_drift_mode(drift),
            prune=prune,
            allow_empty=allow_empty,
            apply_timeout_s=seconds("--timeout", timeout),
            actor=actor or "",
            serving_code=parse_serving_code(serving_code),
            lease_in_git=lease_in_git,
            **_trust(policies, policies_branch, bootstrap_policies, evidence, hook_command, state),
            **monitor_settings(monitor_reference_dir, monitor_recordings_dir, alert_target),
        )
        secret = os.environ.get(SECRET_ENV, "").encode()
        if webhook_port is not None and not secret:
            raise BadInput(f"--webhook-port needs a shared secret in ${SECRET_ENV}")
        if not 0 <= metrics_port <= 65535:
            raise BadInput(f"--metrics-port must be a port number (0: off), not {metrics_port}")
        registry = _registry_factory(registry_uri)
        source = _source(repo, branch, None, state, cache_dir)
        notifier = _notifier(notify_webhook, notify_slack)
        wakeup = Wakeup()
        signal.signal(signal.SIGTERM, lambda *_: wakeup.stop())
        with StateStore(state) as store, ServeClient(address, http_port=http_port) as client:
            hooks = _hooks(source, state, settings.hook_commands)
            ctl = Controller(
                source, client, store, registry, settings, notifier=notifier, hooks=hooks
            )
            log.info(
                "controller %s: %s@%s -> %r on %s, every %s, drift %s, state %s, serving code %s",
                ctl.holder,
                source.display,
                branch,
                env,
                address,
                interval,
                settings.drift,
                state,
                settings.serving_code.describe(),
            )
            metrics_server = None
            if metrics_port:
                try:
                    metrics_server = serve_metrics(metrics_port, metrics_host)
                except OSError as e:
                    raise BadInput(
                        f"--metrics-port {metrics_port}: cannot listen on {metrics_host}: {e}"
                    ) from None
                log.info("metrics at http://%s:%d/metrics", metrics_host, metrics_port)
            server = None
            if webhook_port is not None:

                def on_push(_push: PushEvent) -> None:
                    wakeup.wake("webhook")

                server = WebhookServer(
                    secret, branch, on_push, host=webhook_host, port=webhook_port
                ).start()
                log.info("webhook listening on %s", server.url)
            last: list[tuple[str, str | None, int | None]] = []

            def on_result(result: PassResult) -> None:
                # One line per decision: a new outcome, commit or audit row; repeats are debug.
                key = (result.outcome, result.commit, result.pass_id)
                level = logging.INFO if result.exit_code == 0 else logging.WARNING
                if result.outcome == "waiting":
                    level = logging.INFO
                if last and last[0] == key:
                    level = logging.DEBUG
                log.log(level, "%s: %s", result.outcome, result.message)
                last[:] = [key]

            try:
                run_forever(ctl, wakeup, jitter=jitter, on_result=on_result)
            except KeyboardInterrupt:
                wakeup.stop()
                raise
            finally:
                if server is not None:
                    server.stop()
                if metrics_server is not None:
                    metrics_server.shutdown()

    run_command(run)


def sync_command(
    env: EnvOpt,
    repo: RepoOpt,
    branch: Annotated[
        str | None, typer.Option("--branch", help="Branch to sync (default main).")
    ] = None,
    rev: Annotated[
        str | None, typer.Option("--rev", help="A revision instead of a branch.")
    ] = None,
    retry: Annotated[
        bool, typer.Option("--retry", help="Attempt a revision that failed before again.")
    ] = False,
    address: AddressOpt = DEFAULT_ADDRESS,
    state: StateOpt = DEFAULT_STATE,
    cache_dir: CacheOpt = None,
    drift: DriftOpt = "warn",
    registry_uri: RegistryOpt = None,
    serving_code: ServingCodeOpt = "installed",
    prune: PruneOpt = False,
    allow_empty: AllowEmptyOpt = False,
    timeout: TimeoutOpt = "300s",
    http_port: HttpPortOpt = 8000,
    actor: ActorOpt = None,
    notify_webhook: NotifyOpt = None,
    notify_slack: SlackOpt = None,
    policies: PoliciesOpt = None,
    policies_branch: PoliciesBranchOpt = None,
    bootstrap_policies: BootstrapOpt = None,
    evidence: EvidenceOpt = None,
    hook_command: HookCommandsOpt = None,
    monitor_reference_dir: ReferenceDirOpt = None,
    monitor_recordings_dir: RecordingsDirOpt = None,
    alert_target: AlertTargetOpt = None,
    output: OutputOpt = "text",
) -> None:
    """One controller pass, recorded like the loop's. Exit 0 in sync, 1 not, 2 bad input."""

    def run() -> int:
        check_output(output)
        if branch is not None and rev is not None:
            raise BadInput("pass --branch or --rev, not both")
        settings = ControllerSettings(
            environment=env,
            drift=_drift_mode(drift),
            prune=prune,
            allow_empty=allow_empty,
            apply_timeout_s=seconds("--timeout", timeout),
            actor=actor or "",
            serving_code=parse_serving_code(serving_code),
            **_trust(policies, policies_branch, bootstrap_policies, evidence, hook_command, state),
            **monitor_settings(monitor_reference_dir, monitor_recordings_dir, alert_target),
        )
        _guard_secrets(
            repo,
            registry_uri,
            webhooks=(notify_webhook or []) + (notify_slack or []) + target_urls(alert_target),
        )
        registry = _registry_factory(registry_uri)
        followed = branch if rev is None else None
        source = _source(repo, followed or ("main" if rev is None else None), rev, state, cache_dir)
        with StateStore(state) as store, ServeClient(address, http_port=http_port) as client:
            ctl = Controller(
                source,
                client,
                store,
                registry,
                settings,
                notifier=_notifier(notify_webhook, notify_slack),
                hooks=_hooks(source, state, settings.hook_commands),
            )
            try:
                result = run_until_settled(ctl, retry=retry, trigger="sync")
            finally:
                ctl.release()  # only ours: another controller's lease is left alone
        if output == "json":
            print(json.dumps(_result_json(result), indent=2))
        else:
            _print_result(result)
        return result.exit_code

    code = run_command(run)
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add the controller's commands to the `serveops` app."""
    app.command("controller")(controller_command)
    app.command("sync")(sync_command)

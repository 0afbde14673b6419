"""`serveops controller`: the GitOps loop, registered by controller/cli/main.py."""

from __future__ import annotations

import logging
import os
import signal
from typing import Annotated

import typer

from controller.cli.gitops_options import (
    AlertTargetOpt,
    BootstrapOpt,
    CacheOpt,
    DriftOpt,
    EvidenceOpt,
    HookCommandsOpt,
    LabelsDirOpt,
    NotifyOpt,
    PoliciesBranchOpt,
    PoliciesOpt,
    RecordingsDirOpt,
    ReferenceDirOpt,
    SlackOpt,
    drift_mode,
    guard_secrets,
    monitor_settings,
    notifier_from,
    pass_hooks,
    registry_factory,
    repo_source,
    target_urls,
    trust_settings,
)
from controller.cli.logs import setup_logging
from controller.cli.options import (
    DEFAULT_ADDRESS,
    DEFAULT_STATE,
    ActorOpt,
    AddressOpt,
    AllowEmptyOpt,
    EnvOpt,
    HttpPortOpt,
    LogFormatOpt,
    PruneOpt,
    RegistryOpt,
    RepoOpt,
    ServingCodeOpt,
    StateOpt,
    TimeoutOpt,
    VerboseOpt,
    seconds,
)
from controller.cli.options import run as run_command
from controller.cli.propose import (
    ForgeApiOpt,
    ForgeBaseOpt,
    ForgeOpt,
    ForgeTokenOpt,
    ProposeEveryOpt,
    ProposePushOpt,
    automation_settings,
)
from controller.cli.retrain import (
    HtmlDirOpt,
    RetrainApiOpt,
    RetrainTargetOpt,
    RetrainTokenOpt,
    retrain_settings,
)
from controller.cluster.serve_api import ServeClient
from controller.cluster.serving_code import parse_serving_code
from controller.errors import BadInput
from controller.gitops.loop import Wakeup, run_forever
from controller.gitops.outcome import PassResult
from controller.gitops.reconciler import Controller
from controller.gitops.settings import ControllerSettings
from controller.gitops.state import StateStore
from controller.gitops.telemetry import serve as serve_metrics
from controller.gitops.webhook import SECRET_ENV, PushEvent, WebhookServer
from controller.monitor.forge import DEFAULT_FORGE_API, DEFAULT_TOKEN_ENV
from controller.monitor.retrain_targets import DEFAULT_GITHUB_API

log = logging.getLogger("serveops.controller")


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
    monitor_labels_dir: LabelsDirOpt = None,
    alert_target: AlertTargetOpt = None,
    retrain_target: RetrainTargetOpt = None,
    retrain_github_api: RetrainApiOpt = DEFAULT_GITHUB_API,
    retrain_token_env: RetrainTokenOpt = None,
    monitor_html_dir: HtmlDirOpt = None,
    propose_every: ProposeEveryOpt = None,
    propose_push: ProposePushOpt = None,
    forge: ForgeOpt = None,
    forge_api: ForgeApiOpt = DEFAULT_FORGE_API,
    forge_token_env: ForgeTokenOpt = DEFAULT_TOKEN_ENV,
    forge_base: ForgeBaseOpt = "main",
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
        guard_secrets(
            repo,
            registry_uri,
            webhooks=(notify_webhook or []) + (notify_slack or []) + target_urls(alert_target),
        )
        if not 0 <= jitter < 1:
            raise BadInput(f"--jitter must be in [0, 1), not {jitter}")
        settings = ControllerSettings(
            environment=env,
            interval_s=seconds("--interval", interval),
            drift=drift_mode(drift),
            prune=prune,
            allow_empty=allow_empty,
            apply_timeout_s=seconds("--timeout", timeout),
            actor=actor or "",
            serving_code=parse_serving_code(serving_code),
            lease_in_git=lease_in_git,
            **trust_settings(
                policies, policies_branch, bootstrap_policies, evidence, hook_command, state
            ),
            **monitor_settings(
                monitor_reference_dir, monitor_recordings_dir, alert_target, monitor_labels_dir
            ),
            **retrain_settings(
                retrain_target, retrain_github_api, retrain_token_env, monitor_html_dir
            ),
            **automation_settings(
                repo, propose_every, propose_push, forge, forge_api, forge_token_env, forge_base
            ),
        )
        secret = os.environ.get(SECRET_ENV, "").encode()
        if webhook_port is not None and not secret:
            raise BadInput(f"--webhook-port needs a shared secret in ${SECRET_ENV}")
        if not 0 <= metrics_port <= 65535:
            raise BadInput(f"--metrics-port must be a port number (0: off), not {metrics_port}")
        registry = registry_factory(registry_uri)
        source = repo_source(repo, branch, None, state, cache_dir)
        notifier = notifier_from(notify_webhook, notify_slack)
        wakeup = Wakeup()
        signal.signal(signal.SIGTERM, lambda *_: wakeup.stop())
        with StateStore(state) as store, ServeClient(address, http_port=http_port) as client:
            hooks = pass_hooks(source, state, settings.hook_commands)
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


def register(app: typer.Typer) -> None:
    """Add `serveops controller` to the `serveops` app."""
    app.command("controller")(controller_command)

"""`serveops sync`: one controller pass by hand, registered by controller/cli/main.py."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any

import typer
from rich.markup import escape

from controller.cli.display import plan_text, print_to
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
from controller.cli.options import (
    DEFAULT_ADDRESS,
    DEFAULT_STATE,
    ActorOpt,
    AddressOpt,
    AllowEmptyOpt,
    EnvOpt,
    HttpPortOpt,
    OutputOpt,
    PruneOpt,
    RegistryOpt,
    RepoOpt,
    ServingCodeOpt,
    StateOpt,
    TimeoutOpt,
    check_output,
    err,
    out,
    seconds,
)
from controller.cli.options import run as run_command
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
from controller.gitops.loop import run_until_settled
from controller.gitops.outcome import PassResult
from controller.gitops.reconciler import Controller
from controller.gitops.settings import ControllerSettings
from controller.gitops.state import StateStore
from controller.monitor.retrain_targets import DEFAULT_GITHUB_API


def print_result(result: PassResult) -> None:
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


def result_json(result: PassResult) -> dict[str, Any]:
    data = {
        k: v for k, v in dataclasses.asdict(result).items() if k != "plan"
    }  # asdict cannot copy a pydantic model faithfully
    data["plan"] = result.plan.model_dump(mode="json") if result.plan else None
    data["exit_code"] = result.exit_code
    return data


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
    monitor_labels_dir: LabelsDirOpt = None,
    alert_target: AlertTargetOpt = None,
    retrain_target: RetrainTargetOpt = None,
    retrain_github_api: RetrainApiOpt = DEFAULT_GITHUB_API,
    retrain_token_env: RetrainTokenOpt = None,
    monitor_html_dir: HtmlDirOpt = None,
    output: OutputOpt = "text",
) -> None:
    """One controller pass, recorded like the loop's. Exit 0 in sync, 1 not, 2 bad input."""

    def run() -> int:
        check_output(output)
        if branch is not None and rev is not None:
            raise BadInput("pass --branch or --rev, not both")
        settings = ControllerSettings(
            environment=env,
            drift=drift_mode(drift),
            prune=prune,
            allow_empty=allow_empty,
            apply_timeout_s=seconds("--timeout", timeout),
            actor=actor or "",
            serving_code=parse_serving_code(serving_code),
            **trust_settings(
                policies, policies_branch, bootstrap_policies, evidence, hook_command, state
            ),
            **monitor_settings(
                monitor_reference_dir, monitor_recordings_dir, alert_target, monitor_labels_dir
            ),
            **retrain_settings(
                retrain_target, retrain_github_api, retrain_token_env, monitor_html_dir
            ),
        )
        guard_secrets(
            repo,
            registry_uri,
            webhooks=(notify_webhook or []) + (notify_slack or []) + target_urls(alert_target),
        )
        registry = registry_factory(registry_uri)
        followed = branch if rev is None else None
        source = repo_source(
            repo, followed or ("main" if rev is None else None), rev, state, cache_dir
        )
        with StateStore(state) as store, ServeClient(address, http_port=http_port) as client:
            ctl = Controller(
                source,
                client,
                store,
                registry,
                settings,
                notifier=notifier_from(notify_webhook, notify_slack),
                hooks=pass_hooks(source, state, settings.hook_commands),
            )
            try:
                result = run_until_settled(ctl, retry=retry, trigger="sync")
            finally:
                ctl.release()  # only ours: another controller's lease is left alone
        if output == "json":
            print(json.dumps(result_json(result), indent=2))
        else:
            print_result(result)
        return result.exit_code

    code = run_command(run)
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add `serveops sync` to the `serveops` app."""
    app.command("sync")(sync_command)

"""`serveops propose`: a new model version as a commit on a branch of the deployments repository
(controller/monitor/propose.py), pushed and opened as a pull request when asked
(controller/monitor/forge.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from controller.cli.options import (
    EnvOpt,
    OutputOpt,
    RegistryOpt,
    RepoPathOpt,
    check_output,
    out,
)
from controller.cli.options import run as run_command
from controller.errors import BadInput
from controller.gitops.state import StateStore
from controller.monitor.drift_report import DriftReport
from controller.monitor.forge import DEFAULT_FORGE_API, DEFAULT_TOKEN_ENV, Forge
from controller.redact import register_secret
from controller.source.repository import is_url
from controller.spec.durations import parse_duration

ForgeOpt = Annotated[
    str | None,
    typer.Option(
        "--forge",
        help="github:OWNER/REPO: open a pull request for the pushed branch (needs the branch "
        "pushed; an open one for the branch is reused).",
    ),
]
ForgeApiOpt = Annotated[
    str, typer.Option("--forge-api", help="The forge's REST API (GitHub's, or compatible).")
]
ForgeTokenOpt = Annotated[
    str, typer.Option("--forge-token-env", help="Environment variable holding the token.")
]
ForgeBaseOpt = Annotated[
    str, typer.Option("--forge-base", help="The branch the pull request merges into.")
]
ProposeEveryOpt = Annotated[
    str | None,
    typer.Option(
        "--propose-every",
        help="Scan the MLflow registry this often (a duration) for versions a deployment's "
        "`spec.model_updates` selects, and propose each as a branch. Off by default.",
    ),
]
ProposePushOpt = Annotated[
    str | None,
    typer.Option("--propose-push", help="With --propose-every: push proposals to this remote."),
]


def forge_of(
    forge: str | None,
    api: str,
    token_env: str,
    push: str | None,
    push_option: str,
    *,
    needs_token: bool = True,
) -> Forge | None:
    """`--forge` parsed, for a branch pushed by `push_option`; its token, when it will be used,
    checked before anything is written and masked in everything said from then on."""
    if forge is None:
        return None
    where = Forge.parse(forge, api, token_env)
    if push is None:
        raise BadInput(f"--forge opens a pull request for a pushed branch: pass {push_option} too")
    if needs_token:
        register_secret(where.token())
    return where


def automation_settings(
    repo: str,
    every: str | None,
    push: str | None,
    forge: str | None,
    forge_api: str = DEFAULT_FORGE_API,
    forge_token_env: str = DEFAULT_TOKEN_ENV,
    forge_base: str = "main",
) -> dict[str, Any]:
    """The ControllerSettings fields of the model update automation options."""
    if every is None:
        if push is not None or forge is not None:
            raise BadInput("--propose-push and --forge need --propose-every")
        return {}
    every_s = parse_duration(every)
    if every_s < 60:
        raise BadInput(f"--propose-every must be at least 1m (a registry scan), not {every!r}")
    if is_url(repo) and push is None:
        raise BadInput(
            "--propose-every on a repository URL: its mirror drops unpushed branches at each "
            "fetch; pass --propose-push origin"
        )
    where = forge_of(forge, forge_api, forge_token_env, push, "--propose-push")
    return {
        "propose_every_s": every_s,
        "propose_push": push,
        "forge": where,
        "forge_base": forge_base,
    }


def propose(
    deployment: Annotated[str, typer.Argument(help="The deployment (metadata.name).")],
    env: EnvOpt,
    repo: RepoPathOpt = Path("."),
    registry_uri: RegistryOpt = None,
    version: Annotated[
        str | None, typer.Option("--version", help="Propose this registered version.")
    ] = None,
    alias: Annotated[
        str | None, typer.Option("--alias", help="Propose the version this alias points at.")
    ] = None,
    tag: Annotated[
        str | None,
        typer.Option("--tag", help="KEY=VALUE: propose the newest READY version with this tag."),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(
            "--metric",
            help="NAME>=X (or <=, >, <): propose the newest READY version whose MLflow run "
            "logged metric NAME meeting the threshold.",
        ),
    ] = None,
    rev: Annotated[str, typer.Option("--rev", help="Revision the branch starts from.")] = "HEAD",
    branch: Annotated[
        str | None,
        typer.Option("--branch", help="Branch to write (default serveops/propose/ENV/NAME-vN)."),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option("--state", help="Controller state whose drift reports go in the message."),
    ] = None,
    push: Annotated[
        str | None, typer.Option("--push", help="Push the branch to this remote.")
    ] = None,
    forge: ForgeOpt = None,
    forge_api: ForgeApiOpt = DEFAULT_FORGE_API,
    forge_token_env: ForgeTokenOpt = DEFAULT_TOKEN_ENV,
    forge_base: ForgeBaseOpt = "main",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the commit; write nothing.")
    ] = False,
    output: OutputOpt = "text",
) -> None:
    """Propose a new model version through Git: a commit on its own branch that bumps the
    deployment's `model:` (drift evidence in the message). Nothing is applied: the branch goes
    through the usual gate as a pull request."""
    from controller.monitor.forge import ForgeError, open_pull_request
    from controller.monitor.propose import (
        NothingToPropose,
        current_model,
        plan_proposal,
        write_proposal,
    )
    from controller.monitor.versions import MetricRule, Rule, list_versions
    from controller.registry.mlflow import absolute_tracking_uri
    from controller.spec.models import parse_model_uri

    def run() -> None:
        check_output(output)
        if sum(x is not None for x in (version, alias, tag, metric)) > 1:
            raise BadInput("pass at most one of --version, --alias, --tag, --metric")
        if not registry_uri:
            raise BadInput("no MLflow registry: pass --registry-uri or set MLFLOW_TRACKING_URI")
        pair = None
        if tag is not None:
            key, sep, value = tag.partition("=")
            if not sep or not key:
                raise BadInput(f"--tag must be KEY=VALUE, not {tag!r}")
            pair = (key, value)
        rule = Rule(version, alias, pair, MetricRule.parse(metric) if metric else None)
        where = forge_of(forge, forge_api, forge_token_env, push, "--push", needs_token=not dry_run)
        evidence: list[DriftReport] = []
        if state is not None:
            if not state.exists():
                raise BadInput(f"{state}: no controller state here")
            with StateStore(state) as store:
                evidence = store.drift_history(env, deployment, 3)
        name, _, _ = parse_model_uri(current_model(repo, env, deployment, rev))
        wanted = [rule.metric.name] if rule.metric is not None else []
        versions = list_versions(absolute_tracking_uri(registry_uri), name, wanted)
        try:
            proposal = plan_proposal(
                repo, env, deployment, versions, rule, rev=rev, evidence=evidence, branch=branch
            )
        except NothingToPropose as err:
            out.print(err.message, markup=False)
            return
        sha = None if dry_run else write_proposal(proposal, push=push)
        pull = None
        if sha is not None and where is not None:
            title, _, text = proposal.message.partition("\n")
            try:
                pull = open_pull_request(where, proposal.branch, forge_base, title, text.strip())
            except ForgeError as err:
                raise ForgeError(
                    f"the proposal is pushed ({sha[:12]} on {proposal.branch}) but opening its "
                    f"pull request failed: {err.message}"
                ) from None
        if output == "json":
            body = {
                "branch": proposal.branch,
                "commit": sha,
                "path": proposal.path,
                "from": proposal.current,
                "to": proposal.proposed,
                "message": proposal.message,
                "pushed_to": push,
                "pull_request": None
                if pull is None
                else {"number": pull.number, "url": pull.url, "created": pull.created},
            }
            out.print_json(json.dumps(body))
            return
        said = f"commit {sha[:12]} on branch {proposal.branch}" if sha else "(dry run)"
        out.print(f"proposed {proposal.current} -> {proposal.proposed}: {said}", markup=False)
        if pull is not None:
            opened = "opened" if pull.created else "already open"
            out.print(f"pull request #{pull.number} {opened}: {pull.url}", markup=False)
        out.print(proposal.message, markup=False)

    run_command(run)


def register(app: typer.Typer) -> None:
    app.command("propose")(propose)

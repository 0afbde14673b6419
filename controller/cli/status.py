"""`serveops status`: where each deployment stands, registered by controller/cli/main.py."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Annotated

import typer

from controller.cli.options import (
    DEFAULT_ADDRESS,
    DEFAULT_STATE,
    AddressOpt,
    EnvOpt,
    OutputOpt,
    RegistryOpt,
    RevOpt,
    ServingCodeOpt,
    StateOpt,
    check_output,
    err,
    out,
    seconds,
)
from controller.cli.options import run as run_command
from controller.cli.views import load_view, print_view, status_renderable
from controller.cluster.serve_api import ServeClient
from controller.cluster.serving_code import parse_serving_code
from controller.gitops.state import DesiredRevision, EnvironmentState
from controller.gitops.view import EnvironmentView, environment_view
from controller.registry.mlflow import registry_from_uri
from controller.sync.read import Revision, read_desired


def status(
    env: EnvOpt,
    address: AddressOpt = DEFAULT_ADDRESS,
    state: StateOpt = DEFAULT_STATE,
    repo: Annotated[
        Path | None,
        typer.Option(
            "--repo", help="Compare with Git at --rev instead of what the controller admitted."
        ),
    ] = None,
    rev: RevOpt = "HEAD",
    registry_uri: RegistryOpt = None,
    serving_code: ServingCodeOpt = "installed",
    output: OutputOpt = "text",
    wait: Annotated[
        str | None,
        typer.Option(
            "--wait",
            help="Poll until every deployment is Synced and Healthy with no rollout in flight "
            "(kubectl wait's role), at most this long (3m, 90s); exit 1 if it is not by then.",
        ),
    ] = None,
) -> None:
    """Where each deployment stands: sync against what the controller admitted (its --state)
    or against Git (--repo), health from Serve, and what a rollout or apply waits for.
    Exit 1 when a deployment is Degraded or Missing."""

    def read() -> EnvironmentView:
        with ServeClient(address) as client:
            live = client.get()
            if repo is not None:
                read = read_desired(
                    Revision(str(repo), rev, env),
                    registry_from_uri(registry_uri),
                    serving_code=parse_serving_code(serving_code),
                )
                admitted = DesiredRevision(
                    read.commit, read.digest, read.desired, read.specs, dt.datetime.now(dt.UTC)
                )
                view = environment_view(
                    env,
                    dt.datetime.now(dt.UTC),
                    live=live,
                    state=EnvironmentState(env, admitted=admitted),
                )
            else:
                view, _ = load_view(env, state=state, address=None, live=live)
        return view

    def run() -> None:
        check_output(output)
        limit = seconds("--wait", wait) if wait is not None else None
        view = read()
        if limit is not None:
            deadline = time.monotonic() + limit
            while not settled(view) and time.monotonic() < deadline:
                time.sleep(STATUS_POLL_S)
                view = read()
        if output == "json":
            print(view.model_dump_json(indent=2))
        else:
            print_view(out, status_renderable(view, out.is_terminal))
        if limit is not None and not settled(view):
            err.print(f"not settled after {wait}: {view.summary}")
            raise typer.Exit(1)
        if any(d.health in ("Degraded", "Missing") for d in view.deployments):
            raise typer.Exit(1)

    run_command(run)


STATUS_POLL_S = 2.0


def settled(view: EnvironmentView) -> bool:
    """What `status --wait` waits for: deployments, all Synced and Healthy, none rolling out."""
    return bool(view.deployments) and all(
        d.sync == "Synced" and d.health == "Healthy" and d.rollout is None for d in view.deployments
    )


def register(app: typer.Typer) -> None:
    app.command("status")(status)

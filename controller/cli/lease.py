"""`serveops lease`: who acts on an environment, and breaking a lease whose holder is gone.

A controller that is killed keeps its lease until it expires; restarted with the same
identity (host and state file) it takes it back at once. A holder that will not come back
(its host is gone, its state file moved) is broken here, by an operator. With `--in-git`, the
lease controllers started with `--lease-in-git` keep in the repository (a ref every controller
following it sees) is shown or broken instead.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from controller.cli.options import DEFAULT_STATE, EnvOpt, StateOpt
from controller.cli.options import run as run_command
from controller.errors import BadInput
from controller.gitops.git_lease import RefLeases, lease_ref
from controller.gitops.state import Lease, StateStore
from controller.redact import redact
from controller.source.repository import RepoSource


def lease_command(
    env: EnvOpt,
    state: StateOpt = DEFAULT_STATE,
    in_git: Annotated[
        bool,
        typer.Option(
            "--in-git",
            help="The lease kept in the repository (controllers run with --lease-in-git).",
        ),
    ] = False,
    repo: Annotated[
        str | None,
        typer.Option("--repo", help="With --in-git: the repository (a directory or a URL)."),
    ] = None,
    break_it: Annotated[
        bool,
        typer.Option(
            "--break",
            help="Remove the lease whoever holds it; the holder, if alive, stops writing at its "
            "next pass (fencing) and waits.",
        ),
    ] = False,
) -> None:
    """Show the environment's lease (holder, process, until when), or break it."""

    def run() -> None:
        if in_git:
            _in_git(env, repo, state, break_it)
            return
        if not state.exists():
            raise BadInput(f"{state}: no controller state here (pass --state)")
        with StateStore(state) as store:
            if break_it:
                broken = store.break_lease(env)
                typer.echo(
                    f"{env}: broke the lease of {_describe(broken)}"
                    if broken
                    else f"{env}: no lease to break"
                )
                return
            lease, now = store.lease(env), store.now()
        if lease is None:
            typer.echo(f"{env}: no lease (no controller acts on it now)")
        elif lease.expires_at <= now:
            typer.echo(f"{env}: free (the lease of {_describe(lease)} expired)")
        else:
            typer.echo(f"{env}: held by {_describe(lease)}")

    run_command(run)


def _in_git(env: str, repo: str | None, state: Path, break_it: bool) -> None:
    if repo is None:
        raise BadInput("--in-git needs --repo (the repository the controllers follow)")
    leases = RefLeases(RepoSource(repo, branch="main", cache_dir=state.parent / "repos"))
    where = f"{lease_ref(env)} in {redact(repo)}"
    if break_it:
        broken = leases.break_lease(env)
        typer.echo(
            f"{env}: broke the lease of {_describe(broken)} ({where})"
            if broken
            else f"{env}: no lease to break ({where})"
        )
        return
    _, lease = leases.read(env)
    now = dt.datetime.now(dt.UTC)
    if lease is None:
        typer.echo(f"{env}: no lease in {where}")
    elif lease.expires_at <= now:
        typer.echo(f"{env}: free (the lease of {_describe(lease)} expired; {where})")
    else:
        typer.echo(f"{env}: held by {_describe(lease)} ({where})")


def _describe(lease: Lease) -> str:
    return (
        f"{lease.holder} (process {lease.instance or '?'}, epoch {lease.epoch}) until "
        f"{lease.expires_at:%Y-%m-%d %H:%M:%S} UTC"
    )


def register(app: typer.Typer) -> None:
    app.command("lease")(lease_command)

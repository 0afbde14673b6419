"""`serveops lease`: who acts on an environment, and breaking a lease whose holder is gone.

A controller that is killed keeps its lease until it expires; restarted with the same
identity (host and state file) it takes it back at once. A holder that will not come back
(its host is gone, its state file moved) is broken here, by an operator.
"""

from __future__ import annotations

from typing import Annotated

import typer

from controller.cli.options import DEFAULT_STATE, EnvOpt, StateOpt
from controller.cli.options import run as run_command
from controller.errors import BadInput
from controller.gitops.state import Lease, StateStore


def lease_command(
    env: EnvOpt,
    state: StateOpt = DEFAULT_STATE,
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


def _describe(lease: Lease) -> str:
    return (
        f"{lease.holder} (process {lease.instance or '?'}, epoch {lease.epoch}) until "
        f"{lease.expires_at:%Y-%m-%d %H:%M:%S} UTC"
    )


def register(app: typer.Typer) -> None:
    app.command("lease")(lease_command)

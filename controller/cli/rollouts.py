"""`serveops promote|abort|pause|resume|rollouts`: manual judgement on rollouts in flight;
`serveops rollback`: a revert commit (controller/source/rollback.py).

The commands never touch Serve. They write a command into the controller's state store
(`--state`, the file the controller uses); the controller folds it into the rollout at its next
pass (at most one interval later; `serveops sync` runs a pass at once) and the pass records what
it did. So a command given while the controller is down is acted on when it comes back, and the
rollout's progress stays in one place.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live

from controller.cli.options import (
    DEFAULT_STATE,
    EnvOpt,
    OutputOpt,
    StateOpt,
    check_output,
    out,
    seconds,
)
from controller.cli.options import run as _run
from controller.cli.views import load_view, print_view, rollouts_renderable
from controller.errors import BadInput, ServeopsError
from controller.gitops.settings import default_actor
from controller.gitops.state import StateStore
from controller.gitops.view import EnvironmentView
from controller.rollout.state import Command, RolloutState
from controller.source.rollback import RollbackPlan, plan_rollback, write_rollback

DeploymentArg = Annotated[str, typer.Argument(help="The deployment (metadata.name).")]


class NoRollout(ServeopsError):
    """There is no rollout in flight to act on."""


def _store(state: Path) -> StateStore:
    if not state.exists():
        raise BadInput(f"{state}: no controller state here (pass --state)")
    return StateStore(state)


def send(state: Path, env: str, deployment: str, command: Command, note: str) -> RolloutState:
    """Queue `command` for the controller; refuses when no rollout of `deployment` is active."""
    with _store(state) as store:
        current = store.rollouts(env).get(deployment)
        if current is None or not current.state.active:
            what = f"its last one is {current.state.phase}" if current else "none was started"
            raise NoRollout(f"no rollout of {deployment!r} is in flight in {env!r} ({what})")
        store.add_rollout_command(env, deployment, command, note)
        return current.state


def _command(command: Command, done: str) -> Any:
    def run_command(
        deployment: DeploymentArg,
        env: EnvOpt,
        state: StateOpt = DEFAULT_STATE,
        reason: Annotated[str, typer.Option("--reason", help="Why, for the audit.")] = "",
        actor: Annotated[
            str | None, typer.Option("--actor", help="Who (default user@host).")
        ] = None,
    ) -> None:
        who = actor or default_actor()
        note = f"{who}: {reason}" if reason else who
        current = _run(lambda: send(state, env, deployment, command, note))
        out.print(
            f"{done} {deployment} ({current.strategy} to v{current.candidate_version}, now "
            f"{current.phase}, {current.weight:g}%): the controller acts at its next pass"
        )

    return run_command


def promote_command(
    deployment: DeploymentArg,
    env: EnvOpt,
    state: StateOpt = DEFAULT_STATE,
    full: Annotated[
        bool, typer.Option("--full", help="Skip every remaining step: 100% to the candidate.")
    ] = False,
    actor: Annotated[str | None, typer.Option("--actor", help="Who (default user@host).")] = None,
) -> None:
    """Move a rollout on: past its current step (or pause), or with --full to 100% at once."""
    who = actor or default_actor()
    current = _run(lambda: send(state, env, deployment, "promote_full" if full else "promote", who))
    out.print(
        f"promote{' --full' if full else ''} queued for {deployment} (now {current.phase}, "
        f"{current.weight:g}%): the controller acts at its next pass"
    )


def rollouts_command(
    env: EnvOpt,
    state: StateOpt = DEFAULT_STATE,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            envvar="SERVEOPS_ADDRESS",
            help="Ray dashboard, for the versions' weights and health (default: state only).",
        ),
    ] = None,
    deployment: Annotated[
        str | None, typer.Option("--deployment", help="Only this deployment.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="Steps to show, newest first.")] = 20,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            "-w",
            help="Redraw live until no rollout is in flight; exit 1 if one aborted.",
        ),
    ] = False,
    interval: Annotated[
        str, typer.Option("--interval", help="Redraw every (with --watch).")
    ] = "1s",
    output: OutputOpt = "text",
) -> None:
    """Rollouts in flight: where each stands (step, weights), what it waits for and why, its
    analyses (requests, error rates, latencies per version, the thresholds, the decision), and
    the steps taken."""

    def snapshot() -> EnvironmentView:
        if not state.exists():
            raise BadInput(f"{state}: no controller state here (pass --state)")
        view, _problem = load_view(env, state=state, address=address)
        return view

    def run() -> int:
        check_output(output)
        if watch:
            return _watch(snapshot, deployment, seconds("--interval", interval))
        view = snapshot()
        with _store(state) as store:
            events = store.rollout_events(env, deployment, limit)
        if output == "json":
            data = json.loads(view.model_dump_json())
            data["events"] = [{**e.__dict__, "at": e.at.isoformat()} for e in events]
            print(json.dumps(data, indent=2))
            return 0
        print_view(out, rollouts_renderable(view, out.is_terminal, deployment))
        for e in events:
            out.print(
                f"{e.at:%Y-%m-%d %H:%M:%S} {e.deployment} {e.commit[:12]} {e.action} "
                f"{e.phase} {e.weight:g}%: {e.message}",
                highlight=False,
                markup=False,
            )
        return 0

    code = _run(run)
    if code:
        raise typer.Exit(code)


def _watch(load: Callable[[], EnvironmentView], deployment: str | None, every_s: float) -> int:
    """Redraw until no rollout of interest is in flight (like `kubectl argo rollouts get
    --watch` then `status`): exit 0 when they completed, 1 when one aborted."""
    with Live(console=out, auto_refresh=False) as live:
        while True:
            view = load()
            live.update(rollouts_renderable(view, out.is_terminal, deployment), refresh=True)
            current = [
                d.rollout
                for d in view.deployments
                if d.rollout is not None and (deployment is None or d.name == deployment)
            ]
            if all(r.phase in ("aborted", "completed") for r in current):
                return 1 if any(r.phase == "aborted" for r in current) else 0
            time.sleep(every_s)


def rollback_reason(plan: RollbackPlan, state: Path, given: str, actor: str) -> str:
    """Why, for the commit message: the reason given, else the abort of a rollout of a
    deployment rolled back (from the controller's state, when there is one), else who."""
    if given:
        return f"{given} ({actor})"
    names = {c.summary().split(":", 1)[0] for c in plan.changes}
    aborts: list[str] = []
    if state.exists():
        with StateStore(state) as store:
            for name, stored in sorted(store.rollouts(plan.environment).items()):
                s = stored.state
                if name in names and s.phase == "aborted":
                    aborts.append(f"rollout of {name} to v{s.candidate_version} {s.message}")
    if aborts:
        return f"{'; '.join(aborts)} (rolled back by {actor})"
    return f"rolled back by {actor}"


def rollback_command(
    env: EnvOpt,
    repo: Annotated[
        Path, typer.Option("--repo", help="Git work tree holding deployments/ (a clone).")
    ] = Path("."),
    deployment: Annotated[
        str | None,
        typer.Option("--deployment", help="Only this deployment (default: the environment)."),
    ] = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="Restore the files as of this revision (default: before their last change).",
        ),
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why, for the commit message.")] = "",
    push: Annotated[
        bool, typer.Option("--push/--no-push", help="Push the commit to the branch's remote.")
    ] = False,
    state: StateOpt = DEFAULT_STATE,
    actor: Annotated[str | None, typer.Option("--actor", help="Who (default user@host).")] = None,
) -> None:
    """Write a revert commit restoring deployment files to an earlier revision (Git stays the
    truth: the controller then moves Serve back)."""

    def run() -> None:
        plan = plan_rollback(repo, env, deployment, to)
        why = rollback_reason(plan, state, reason, actor or default_actor())
        result = write_rollback(plan, why, push=push)
        out.print(
            f"rolled back {plan.scope} to {plan.target[:12]} in commit {result.commit[:12]} on {plan.branch}:"
        )
        for change in plan.changes:
            out.print(f"  {change.summary()}")
        out.print(f"  why: {why}")
        if result.pushed_to:
            out.print(f"pushed to {result.pushed_to}; the controller applies it at its next pass")
        else:
            out.print(
                "not pushed: `git push` it (or pass --push); the controller follows what is pushed"
            )

    _run(run)


def register(app: typer.Typer) -> None:
    app.command("promote")(promote_command)
    app.command("abort", help="Abort a rollout: traffic back to the stable version at once.")(
        _command("abort", "abort queued for")
    )
    app.command("pause", help="Hold a rollout at its current step until resume or promote.")(
        _command("pause", "pause queued for")
    )
    app.command("resume", help="Resume a paused rollout (inconclusive counts start over).")(
        _command("resume", "resume queued for")
    )
    app.command("rollouts")(rollouts_command)
    app.command("rollback")(rollback_command)

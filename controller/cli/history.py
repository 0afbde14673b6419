"""`serveops history`: the controller's audit, newest first, with where the environment stands now."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from controller.cli.options import DEFAULT_STATE, OutputOpt, StateOpt, check_output, out
from controller.cli.options import run as run_command
from controller.cli.views import load_view
from controller.errors import BadInput
from controller.gitops.state import PassRecord, StateStore
from controller.gitops.state.batch import BatchRun
from controller.gitops.view_batch import BatchRunView


def history_command(
    env: Annotated[
        str | None, typer.Option("--env", help="Only this environment (default: all).")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", help="How many passes (and batch runs), newest first.")
    ] = 20,
    state: StateOpt = DEFAULT_STATE,
    output: OutputOpt = "text",
) -> None:
    """The controller's audit: passes that changed something or failed, and batch runs,
    newest first."""

    def run() -> None:
        check_output(output)
        if limit < 1:
            raise BadInput("--limit must be at least 1")
        if not state.exists():
            raise BadInput(f"{state}: no controller state here (pass --state)")
        with StateStore(state) as store:
            records = store.history(env, limit)
            runs = store.batch_history(env, limit)
        if output == "json":
            print(json.dumps([record_json(r) for r in records], indent=2))
            return
        if env is not None:  # where the environment stands now, as status says it
            view, _ = load_view(env, state=state, address=None)
            out.print(f"now: {view.summary}", highlight=False, markup=False)
        out.print(history_table(records, terminal=out.is_terminal), highlight=False)
        if runs:
            out.print(batch_table(runs, terminal=out.is_terminal), highlight=False)

    run_command(run)


def record_json(record: PassRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "environment": record.environment,
        "repo": record.repo,
        "rev": record.rev,
        "commit": record.commit,
        "actor": record.actor,
        "trigger": record.trigger,
        "result": record.result,
        "message": record.message,
        "started_at": record.started_at.isoformat(),
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        "repeats": record.repeats,
        "plan": record.plan.model_dump(mode="json") if record.plan else None,
    }


def history_table(records: list[PassRecord], terminal: bool = True) -> Table | Text:
    """A table on a terminal; elsewhere one plain line per pass, never cut to a width."""
    if not records:
        return Text("no passes recorded")
    if not terminal:
        return Text(
            "\n".join(
                f"#{r.id} {r.started_at:%Y-%m-%d %H:%M:%S} {r.environment} "
                f"{(r.commit or '-')[:12]} {r.result}"
                + (f" x{r.repeats}" if r.repeats > 1 else "")
                + f" by {r.actor} ({r.trigger}): {r.message.splitlines()[0] if r.message else ''}"
                for r in records
            )
        )
    table = Table(show_lines=False)
    for column in ("#", "started (UTC)", "env", "commit", "result", "actor", "trigger"):
        table.add_column(column, no_wrap=True)
    table.add_column("message", overflow="fold", min_width=20)
    styles = {
        "applied": "green",
        "healed": "green",
        "drift": "yellow",
        "interrupted": "yellow",
        "recovered": "green",
    }
    for r in records:
        result = r.result + (f" x{r.repeats}" if r.repeats > 1 else "")
        message = r.message.splitlines()[0] if r.message else ""
        table.add_row(
            str(r.id),
            f"{r.started_at:%Y-%m-%d %H:%M:%S}",
            r.environment,
            (r.commit or "")[:12],
            f"[{styles.get(r.result, 'red')}]{result}[/]",
            r.actor,
            r.trigger,
            message,
        )
    return table


def batch_table(runs: list[BatchRun], terminal: bool = True) -> Table | Text:
    """Batch runs, newest first: result, rows, duration, model, why."""
    views = [(r, BatchRunView.of(r)) for r in runs]

    def figures(v: BatchRunView) -> str:
        rows = f"{v.rows:,} rows" if v.rows is not None else "-"
        return rows + (f" in {v.duration_s:.0f}s" if v.duration_s is not None else "")

    if not terminal:
        return Text(
            "\n".join(
                f"batch {r.created_at:%Y-%m-%d %H:%M:%S} {r.environment}/{r.deployment} "
                f"{v.run} {v.status} (attempt {v.attempt}, {v.trigger}) {figures(v)} "
                f"{v.model} {r.commit[:12]}"
                + (f": {v.message.splitlines()[0]}" if v.message else "")
                for r, v in views
            )
        )
    table = Table(title="batch runs", title_justify="left")
    for column in ("created (UTC)", "batch", "run", "result", "rows", "model", "commit"):
        table.add_column(column, no_wrap=True)
    table.add_column("message", overflow="fold", min_width=20)
    for r, v in views:
        style = "green" if v.status == "succeeded" else "yellow" if r.active else "red"
        table.add_row(
            f"{r.created_at:%Y-%m-%d %H:%M:%S}",
            f"{r.environment}/{r.deployment}",
            f"{v.run} ({v.trigger})",
            f"[{style}]{v.status}[/]",
            figures(v),
            v.model,
            r.commit[:12],
            v.message.splitlines()[0] if v.message else "",
        )
    return table


def register(app: typer.Typer) -> None:
    app.command("history")(history_command)

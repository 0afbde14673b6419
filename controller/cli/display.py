"""Human-readable renderings of plans and statuses (the JSON forms are the models themselves)."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from controller.cluster.status import DeploymentStatus
from controller.sync.plan import Action, Plan

_SYMBOL = {
    "create": ("+", "green"),
    "update": ("~", "yellow"),
    "delete": ("-", "red"),
    "orphan": ("!", "magenta"),
}
_HEALTH_STYLE = {"Healthy": "green", "Progressing": "yellow", "Degraded": "red", "Missing": "red"}


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, sort_keys=True, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def plan_text(plan: Plan) -> Text:
    out = Text()
    src = plan.source
    out.append(
        f"Plan for environment {plan.environment!r} at {src.rev} ({src.commit[:12]}) on {plan.address}\n",
        style="bold",
    )
    for m in plan.models:
        pinned = "" if m.uri.endswith(f"/{m.version}") else f" -> version {m.version}"
        out.append(f"  model {m.deployment}: {m.uri}{pinned}\n", style="dim")
    if not plan.actions:
        out.append("\nNo changes. Live Serve matches Git.\n", style="green")
        return out
    out.append("\n")
    for action in plan.actions:
        _action_text(out, action)
    counts = {
        op: sum(1 for a in plan.actions if a.op == op)
        for op in ("create", "update", "delete", "orphan")
    }
    restarts = sum(1 for a in plan.actions if a.op == "update" and a.effect == "restart")
    out.append(
        f"\nPlan: {counts['create']} to create, {counts['update']} to update "
        f"({restarts} restarting replicas), {counts['delete']} to delete",
        style="bold",
    )
    if counts["orphan"]:
        out.append(
            f", {counts['orphan']} orphaned (kept; --prune deletes them)", style="bold magenta"
        )
    out.append(".\n")
    for rollout in plan.rollouts:
        out.append(
            f"\n{rollout.deployment}: {rollout.strategy} rollout from {rollout.stable} to "
            f"{rollout.candidate}, driven by the controller (the actions above are its start):\n",
            style="bold",
        )
        for i, step in enumerate(rollout.steps, 1):
            out.append(f"  {i}. {step}\n")
        if rollout.analysis:
            out.append(f"  analysis: {rollout.analysis}\n", style="dim")
    return out


def _action_text(out: Text, action: Action) -> None:
    symbol, style = _SYMBOL[action.op]
    out.append(f"  {symbol} {action.op:<7} {action.app:<32}", style=style)
    out.append(f" {action.role:<8} {action.effect}\n")
    for change in action.changes:
        out.append(f"      {change.path}: ", style="dim")
        out.append(_short(change.old), style="red")
        out.append(" -> ")
        out.append(_short(change.new), style="green")
        out.append(f"  ({change.effect})\n", style="dim")


def status_table(rows: list[DeploymentStatus], environment: str) -> Table:
    table = Table(title=f"serveops status: environment {environment!r}", title_justify="left")
    for column in (
        "DEPLOYMENT",
        "ROUTE",
        "SYNC",
        "REVISION",
        "HEALTH",
        "VERSIONS (weight, status)",
        "MESSAGE",
    ):
        table.add_column(column, overflow="fold")
    for r in rows:
        versions = (
            ", ".join(
                f"v{v.version} {'fallback' if v.fallback else f'{v.weight:g}%'} {v.status}"
                for v in r.versions
            )
            or "-"
        )
        table.add_row(
            r.name,
            r.route or "-",
            Text(r.sync, style="green" if r.sync == "Synced" else "yellow"),
            (r.revision or "-")[:12],
            Text(r.health, style=_HEALTH_STYLE[r.health]),
            versions,
            r.message,
        )
    return table


def print_to(console: Console, renderable: Any) -> None:
    console.print(renderable, highlight=False, soft_wrap=True)


def print_error(console: Console, message: str) -> None:
    """`error: <message>`; the message is escaped, so `deployments[Router]` prints as written."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)

"""The environment's one model (controller.gitops.view), loaded and printed for the commands.

`serveops status`, `rollouts` and `history` print fields of the same `EnvironmentView`, built
the same way. Tables are for terminals; without one (CI logs, pipes) every row is a plain line,
so nothing is cut to a width.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from controller.cluster.live import LiveState
from controller.cluster.serve_api import ServeClient
from controller.errors import ServeopsError
from controller.gitops.state import StateStore
from controller.gitops.view import (
    AnalysisView,
    DeploymentView,
    EnvironmentView,
    environment_view,
    rollout_line,
    waiting_text,
)
from controller.rollout.analysis import queue_figures

_HEALTH_STYLE = {
    "Healthy": "green",
    "Progressing": "yellow",
    "Degraded": "red",
    "Missing": "red",
    "Unknown": "dim",
}


def load_view(
    environment: str,
    *,
    state: Path | None,
    address: str | None,
    http_port: int | None = None,
    live: LiveState | None = None,
    now: dt.datetime | None = None,
) -> tuple[EnvironmentView, str | None]:
    """The view from the controller's state file (when it exists) and Serve (when `address`
    answers). Returns the view and, when Serve could not be read, why."""
    problem = None
    if live is None and address is not None:
        try:
            with ServeClient(address, http_port=http_port or 8000) as client:
                live = client.get()
        except ServeopsError as err:
            problem = err.message
    env_state = rollouts = lease = batches = batch_runs = None
    if state is not None and state.exists():
        with StateStore(state) as store:
            env_state = store.environment(environment)
            rollouts = {name: r.state for name, r in store.rollouts(environment).items()}
            lease = store.lease(environment)
            batches = store.batch_schedules(environment)
            batch_runs = store.last_batch_runs(environment)
    view = environment_view(
        environment,
        now or dt.datetime.now(dt.UTC),
        live=live,
        state=env_state,
        rollouts=rollouts,
        lease=lease,
        batches=batches,
        batch_runs=batch_runs,
    )
    return view, problem


def _versions(d: DeploymentView) -> str:
    parts = []
    for v in d.versions:
        share = "fallback" if v.role == "fallback" else f"{v.weight:g}%"
        role = f" {v.role}" if v.role in ("stable", "candidate") else ""
        parts.append(f"v{v.version} {share}{role} {v.status}")
    return ", ".join(parts) or "-"


def header(view: EnvironmentView) -> list[str]:
    lines = [
        f"environment {view.environment}: admitted {(view.admitted or '-')[:12]}, "
        f"applied {(view.applied or '-')[:12]}"
    ]
    lines += [f"waiting for {w}" for w in view.waiting]
    if view.failed is not None:
        lines.append(f"head {view.failed.commit[:12]} not admitted: {view.failed.message}")
    return lines


def status_renderable(view: EnvironmentView, terminal: bool) -> RenderableType:
    """The environment, one row per deployment: sync, health, versions, and where it stands."""
    head = [Text(line) for line in header(view)]
    batches = batch_renderable(view, terminal)
    if not view.deployments:
        return Group(*head, Text("no deployments"), *batches)
    if not terminal:
        rows = [
            Text(
                f"{d.name}: {d.sync} {d.health}, revision {(d.revision or '-')[:12]}, "
                f"versions {_versions(d)}; {d.summary}"
            )
            for d in view.deployments
        ]
        return Group(*head, *rows, *batches)
    table = Table(title_justify="left", show_lines=False)
    for column in ("DEPLOYMENT", "SYNC", "HEALTH", "REVISION", "VERSIONS", "NOW"):
        table.add_column(column, overflow="fold")
    for d in view.deployments:
        table.add_row(
            d.name,
            Text(d.sync, style="green" if d.sync == "Synced" else "yellow"),
            Text(d.health, style=_HEALTH_STYLE[d.health]),
            (d.revision or "-")[:12],
            _versions(d),
            d.summary,
        )
    return Group(*head, table, *batches)


_BATCH_STYLE = {"succeeded": "green", "running": "yellow", "pending": "yellow"}


def batch_renderable(view: EnvironmentView, terminal: bool) -> list[RenderableType]:
    """Batch deployments: last run (result, rows, duration) and next run."""
    if not view.batches:
        return []
    if not terminal:
        return [Text(f"batch {b.name} ({b.model or '-'}): {b.summary}") for b in view.batches]
    table = Table(title="batch", title_justify="left")
    for column in ("BATCH", "MODEL", "LAST RUN", "RESULT", "ROWS", "DURATION", "NEXT (UTC)"):
        table.add_column(column, overflow="fold")
    for b in view.batches:
        last = b.last
        table.add_row(
            b.name,
            last.model if last is not None else (b.model or "-"),
            last.run if last is not None else "-",
            Text(last.status, style=_BATCH_STYLE.get(last.status, "red")) if last else "-",
            f"{last.rows:,}" if last is not None and last.rows is not None else "-",
            f"{last.duration_s:.0f}s" if last is not None and last.duration_s is not None else "-",
            f"{b.next_at:%Y-%m-%d %H:%M}" if b.next_at is not None else "by hand",
        )
    return [table]


def _figures(side: dict[str, float | int | None]) -> str:
    p95, shed = side.get("p95_ms"), side.get("shed")
    queue = queue_figures(side.get("wait_ms"), side.get("own_p95_ms"))
    return (
        f"{side.get('requests', 0)} req, {side.get('error_rate_pct', 0)}% err, "
        f"p95 {'n/a' if p95 is None else f'{p95} ms'}"
        + (f", {queue}" if queue else "")
        + (f", {shed} shed" if shed else "")
    )


def _thresholds(t: dict[str, float | int | None]) -> str:
    parts = [f"min {t.get('min_requests')} req", f"err +{t.get('max_error_rate_increase')} pt"]
    if t.get("max_p95_latency_ms") is not None:
        parts.append(f"p95 <= {t['max_p95_latency_ms']} ms")
    if t.get("max_p95_regression_pct") is not None:
        parts.append(f"p95 <= stable +{t['max_p95_regression_pct']}%")
    return ", ".join(parts)


def analysis_line(a: AnalysisView) -> str:
    why = f": {'; '.join(a.reasons)}" if a.reasons else ""
    return (
        f"{a.at[11:19]} step {a.step} ({a.weight:g}%) {a.verdict}{why} | candidate "
        f"{_figures(a.candidate)} | stable {_figures(a.stable)} | held to {_thresholds(a.thresholds)}"
    )


def rollouts_renderable(
    view: EnvironmentView, terminal: bool, deployment: str | None = None, analyses: int = 5
) -> RenderableType:
    """Each rollout: where it stands, what it waits for, its last analyses."""
    shown = [
        d
        for d in view.deployments
        if d.rollout is not None and (deployment is None or d.name == deployment)
    ]
    parts: list[RenderableType] = [Text(line) for line in header(view)]
    if not shown:
        parts.append(Text("no rollouts in flight"))
        return Group(*parts)
    for d in shown:
        r = d.rollout
        assert r is not None
        parts.append(Text(f"{d.name}: {rollout_line(r, view.at)}", style="bold"))
        parts.append(Text(f"  versions: {_versions(d)}; health {d.health}"))
        parts.append(Text(f"  last: {r.message}"))
        recent = r.analyses[-analyses:]
        if not recent:
            continue
        if terminal:
            table = Table(show_lines=False, box=None, padding=(0, 1))
            for column in ("at", "step", "verdict", "candidate", "stable", "held to", "why"):
                table.add_column(column, overflow="fold")
            for a in recent:
                table.add_row(
                    a.at[11:19],
                    f"{a.step} ({a.weight:g}%)",
                    a.verdict,
                    _figures(a.candidate),
                    _figures(a.stable),
                    _thresholds(a.thresholds),
                    "; ".join(a.reasons),
                )
            parts.append(table)
        else:
            parts += [Text(f"  analysis {analysis_line(a)}") for a in recent]
    return Group(*parts)


def print_view(console: Console, renderable: RenderableType) -> None:
    console.print(renderable, highlight=False, soft_wrap=not console.is_terminal)


__all__ = [
    "load_view",
    "print_view",
    "rollouts_renderable",
    "status_renderable",
    "waiting_text",
]

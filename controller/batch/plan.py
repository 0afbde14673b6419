"""What runs, what changed: a pure function from the admitted batch deployments, the runs the
store holds and the time, to a BatchPlan. No Git, Ray or MLflow here (step.py and the CLI are
the edges); the clock is a parameter."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from controller.batch.schedule import last_at_or_before, next_after
from controller.gitops.state.batch import BatchRun
from controller.spec.batch import BatchInference

# A scheduled time reached less than this long ago is on time; older, it was missed (the
# controller was down) and the deployment's `missed` setting decides.
DEFAULT_GRACE_S = 300.0
Action = Literal["run", "wait", "running", "skip", "manual"]
Trigger = Literal["schedule", "model-change"]


def run_key(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


@dataclass(frozen=True)
class BatchItem:
    name: str
    action: Action  # run: submit now; running: a run is under way; wait: nothing due; ...
    reason: str
    model: str  # as the spec says
    due: dt.datetime | None = None  # the scheduled time to run now (action "run")
    next_at: dt.datetime | None = None  # the next scheduled time after now
    promoted: str | None = None  # the version of the last committed run
    changes: tuple[str, ...] = ()  # what changed since the last run: "new", "model", ...
    trigger: Trigger = "schedule"  # what makes the run due (action "run")

    @property
    def key(self) -> str | None:
        if self.due is None:
            return None
        return run_key(self.due) if self.trigger == "schedule" else f"model-{run_key(self.due)}"


@dataclass(frozen=True)
class BatchPlan:
    environment: str
    now: dt.datetime
    items: list[BatchItem] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # deployments with runs, gone from Git

    @property
    def due(self) -> list[BatchItem]:
        return [i for i in self.items if i.action == "run"]

    def requeue_after(self, poll_s: float) -> float | None:
        """Seconds until the plan changes by itself: a run to poll, or the next scheduled time."""
        waits = [poll_s for i in self.items if i.action in ("running", "run")]
        waits += [
            max(0.0, (i.next_at - self.now).total_seconds())
            for i in self.items
            if i.next_at is not None
        ]
        return min(waits) if waits else None


def plan_batches(
    environment: str,
    batches: list[BatchInference],
    *,
    now: dt.datetime,
    since: Mapping[str, dt.datetime],
    latest: Mapping[str, BatchRun],
    active: list[BatchRun],
    promoted: Mapping[str, str],
    resolved: Mapping[str, str] | None = None,
    last: Mapping[str, BatchRun] | None = None,
    grace_s: float = DEFAULT_GRACE_S,
) -> BatchPlan:
    """`since`: when each deployment was first seen (runs never fall due before); `latest`: the
    latest scheduled run of each; `active`: runs pending or running; `promoted`: the model
    version of each one's latest committed run; `resolved`: the version each spec's model
    resolves to now (a changed version means a promotion check, and a run when the spec asks
    `on_model_change`); `last`: each one's newest run, whatever started it."""
    busy = {r.deployment: r for r in active}
    items = []
    for b in sorted(batches, key=lambda b: b.metadata.name):
        name = b.metadata.name
        item = _item(b, now, since, latest.get(name), busy, promoted, resolved, grace_s)
        if item.action in ("wait", "manual", "skip") and b.spec.on_model_change:
            item = _model_change(item, (resolved or {}).get(name), (last or {}).get(name), now)
        items.append(item)
    names = {b.metadata.name for b in batches}
    gone = sorted({r.deployment for r in [*latest.values(), *active]} - names)
    return BatchPlan(environment, now, items, gone)


def _item(
    b: BatchInference,
    now: dt.datetime,
    since: Mapping[str, dt.datetime],
    previous: BatchRun | None,
    busy: Mapping[str, BatchRun],
    promoted: Mapping[str, str],
    resolved: Mapping[str, str] | None,
    grace_s: float,
) -> BatchItem:
    name, spec = b.metadata.name, b.spec
    version = (resolved or {}).get(name)
    before = promoted.get(name)
    changes: tuple[str, ...] = ()
    if before is None:
        changes = ("new",)
    elif version is not None and version != before:
        changes = (f"model {before} -> {version} (sample check first)",)
    upcoming = (
        None
        if spec.schedule is None
        else next_after(spec.schedule.cron, spec.schedule.timezone, now)
    )

    def item(action: Action, reason: str, due: dt.datetime | None = None) -> BatchItem:
        return BatchItem(name, action, reason, spec.model, due, upcoming, before, changes)

    if name in busy:
        return item("running", _running(busy[name]))
    if spec.schedule is None or upcoming is None:
        if spec.on_model_change:
            return item("manual", "runs when its model resolves to a new version, or by hand")
        return item("manual", "runs by hand only (serveops batch run)")
    last_due = last_at_or_before(spec.schedule.cron, spec.schedule.timezone, now)
    at = f"{last_due:%Y-%m-%d %H:%M} UTC"
    if last_due < since.get(name, now):
        return item("wait", f"new: first run at {upcoming:%Y-%m-%d %H:%M} UTC")
    if previous is not None and previous.scheduled_at >= last_due:
        return item(
            "wait",
            f"run {previous.run_key} {previous.status}; next at {upcoming:%Y-%m-%d %H:%M} UTC",
        )
    if (now - last_due).total_seconds() <= grace_s:
        return item("run", f"due at {at}", last_due)
    if spec.schedule.missed == "run_once":
        return item("run", f"missed at {at}: running it once (missed: run_once)", last_due)
    return item("skip", f"missed at {at}: skipped (missed: skip)")


def _model_change(
    item: BatchItem, version: str | None, newest: BatchRun | None, now: dt.datetime
) -> BatchItem:
    """Run now for a version that has no run yet; once per version: a version whose run
    failed or was rejected waits for the next version (or a run by hand)."""
    if version is None or version == item.promoted:
        return item
    if newest is not None and newest.model_uri == version:
        return replace(
            item,
            reason=f"{item.reason}; {version} ran already ({newest.run_key} {newest.status})",
        )
    why = (
        f"model changed: {item.promoted} -> {version} (sample check first)"
        if item.promoted is not None
        else f"model-change: first run, for {version}"
    )
    return replace(item, action="run", reason=why, due=now, trigger="model-change")


def _running(run: BatchRun) -> str:
    return f"run {run.run_key} {run.status} (attempt {run.attempt + 1}, job {run.submission_id})"

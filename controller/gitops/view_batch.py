"""The batch part of the environment view (gitops/view.py): each batch deployment of the
admitted commit, its last run and its next, as `serveops status` and `history` print them."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from controller.gitops.state.batch import BatchRun, BatchSchedule


class BatchRunView(BaseModel):
    run: str = Field(description="The run key: the scheduled time, or `manual-<time>`.")
    trigger: str
    status: str = Field(description="pending, running, succeeded, failed or rejected.")
    model: str = Field(description="The pinned model version it ran (or runs) with.")
    attempt: int = Field(description="Attempts made, from 1.")
    rows: int | None = None
    duration_s: float | None = Field(None, description="From submission to the end.")
    finished_at: dt.datetime | None = None
    message: str = ""

    @classmethod
    def of(cls, run: BatchRun) -> BatchRunView:
        duration = None
        if run.finished_at is not None:
            duration = (run.finished_at - (run.submitted_at or run.created_at)).total_seconds()
        return cls(
            run=run.run_key,
            trigger=run.trigger,
            status=run.status,
            model=run.model_uri,
            attempt=run.attempt + 1,
            rows=run.rows,
            duration_s=duration,
            finished_at=run.finished_at,
            message=run.message,
        )


class BatchView(BaseModel):
    """A batch deployment of the admitted commit: its last run and its next."""

    name: str
    model: str | None = Field(None, description="The model reference, as the file says.")
    next_at: dt.datetime | None = Field(None, description="The next scheduled run (None: by hand).")
    plan: str = Field("", description="What the controller's last batch step decided.")
    last: BatchRunView | None = None
    summary: str = Field(description="The one line every view prints for this deployment.")


def batch_view(schedule: BatchSchedule, run: BatchRun | None) -> BatchView:
    """A batch deployment's line in every view: its last run and its next."""
    last = BatchRunView.of(run) if run is not None else None
    parts = []
    if last is None:
        parts.append("no run yet")
    else:
        done = f"{last.rows:,} rows" if last.rows is not None else ""
        if last.duration_s is not None:
            done += f" in {last.duration_s:.0f}s"
        parts.append(
            f"last run {last.run} {last.status}"
            + (f" (attempt {last.attempt})" if last.attempt > 1 else "")
            + (f", {done.strip()}" if done.strip() else "")
            + (
                f": {last.message.splitlines()[0]}"
                if last.message and last.status != "succeeded"
                else ""
            )
        )
    if schedule.next_at is not None:
        parts.append(f"next {schedule.next_at:%Y-%m-%d %H:%M} UTC")
    else:  # by hand, or on a model change: the plan says which
        parts.append(schedule.plan or "by hand only")
    return BatchView(
        name=schedule.deployment,
        model=schedule.model,
        next_at=schedule.next_at,
        plan=schedule.plan,
        last=last,
        summary="; ".join(parts),
    )

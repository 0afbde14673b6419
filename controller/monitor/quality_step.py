"""Live quality in the controller's monitoring step: delayed ground truth, joined.

Labels arrive after the requests they grade (a chargeback a week later, a human review the
next day), so quality is never computed for the window just ended: with each window it judges,
the step scores the window that ended `labels.delay` earlier, aligned like every window, and
stores the result with the judged window's report (`extra["quality"]`), where `serveops
monitor`, the gauges and the HTML report find it. The labels are files under the operator's labels directory
(`--monitor-labels-dir`): a pull request names a path below it, never a path of its own.
Nothing here raises: a problem becomes the quality's `error`, and drift is judged regardless.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from controller.errors import ServeopsError
from controller.monitor.labels import LabelLimits, join_labels, read_labels
from controller.monitor.recordings import ReadLimits
from controller.monitor.reference import inside
from controller.redact import redact
from controller.spec.models import ModelDeployment


def quality_window(
    window: tuple[dt.datetime, dt.datetime], delay_s: float, window_s: float
) -> tuple[dt.datetime, dt.datetime]:
    """The window that ended `delay_s` before `window` ended, on the same grid."""
    end_ts = ((window[1].timestamp() - delay_s) // window_s) * window_s
    end = dt.datetime.fromtimestamp(end_ts, dt.UTC)
    return end - dt.timedelta(seconds=window_s), end


def score_labels(
    deployment: ModelDeployment,
    window: tuple[dt.datetime, dt.datetime],
    *,
    labels_dir: str | None,
    recordings_dir: str | None,
    budget_s: float,
) -> dict[str, Any]:
    """The quality of the window whose labels are due, per model version (what
    `QualityJoin.report` says), with that window; or the window and an `error`."""
    mon, recording = deployment.spec.monitoring, deployment.spec.recording
    assert mon is not None
    assert mon.labels is not None
    assert recording is not None
    start, end = quality_window(window, mon.labels.delay_s, mon.window_s)
    said: dict[str, Any] = {
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "delay": mon.labels.delay,
    }
    if labels_dir is None:
        return said | {"error": "this controller has no labels directory (--monitor-labels-dir)"}
    budget_s = max(budget_s, 0.1)
    try:
        path = inside(Path(labels_dir), mon.labels.path, what="labels")
        truth = read_labels(path, LabelLimits(deadline_s=budget_s / 2))
        join = join_labels(
            Path(recordings_dir or recording.dir).expanduser(),
            deployment.metadata.name,
            start.timestamp(),
            end.timestamp(),
            truth,
            ReadLimits(max_rows=mon.max_rows, deadline_s=budget_s / 2),
        )
    except ServeopsError as err:
        return said | {"error": redact(err.message)}
    return said | join.report(mon.labels.task)

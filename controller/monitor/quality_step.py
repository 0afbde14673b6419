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
from controller.monitor.reference import inside
from controller.monitor.selection import ReadLimits
from controller.redact import redact
from controller.spec.models import ModelDeployment
from controller.spec.monitoring import LabelSource


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
    return judge_quality(said | join.report(mon.labels.task), mon.labels)


def judge_quality(quality: dict[str, Any], labels: LabelSource) -> dict[str, Any]:
    """`quality` with its `status` (`low`, `ok`, `insufficient`) and why, judged on the
    version that answered most of the window's labelled requests; as it was when `labels`
    sets no threshold."""
    if labels.min_accuracy is None and labels.max_mae is None:
        return quality
    versions: dict[str, dict[str, Any]] = quality.get("versions") or {}
    served = max(versions, key=lambda v: versions[v].get("joined", 0), default=None)
    figures = versions.get(served, {}) if served is not None else {}
    joined = int(figures.get("joined", 0))
    if served is None or joined < labels.min_labelled:
        why = f"{joined} labelled request(s), fewer than min_labelled {labels.min_labelled}"
        return quality | {"status": "insufficient", "judged": served, "message": why}
    broken = []
    accuracy, mae = figures.get("accuracy"), figures.get("mae")
    if labels.min_accuracy is not None and accuracy is not None and accuracy < labels.min_accuracy:
        broken.append(f"accuracy {accuracy:.3f} below min_accuracy {labels.min_accuracy:g}")
    if labels.max_mae is not None and mae is not None and mae > labels.max_mae:
        broken.append(f"MAE {mae:.4g} above max_mae {labels.max_mae:g}")
    status = "low" if broken else "ok"
    message = "; ".join(broken) or "quality within its thresholds"
    return quality | {"status": status, "judged": served, "message": f"v{served}: {message}"}

"""The monitoring step of a controller pass: judge each monitored deployment's window once.

Level-triggered like the rest of the pass: windows are aligned to the epoch (`window` 1h: every
whole hour), and a deployment is due when its latest ended window has no stored report. A
pass judges that window (a window missed while the controller was down is not caught up: the
newest one speaks for now), stores the report, updates the gauges, and alerts when a drift or
a live-quality episode opens or closes (alerts.py); an opening drift episode also queues the
retraining requests the deployment asks for (retrain_step.py), sent in the same pass and
retried in later ones. With `--monitor-html-dir`, each judged window is also written as an
HTML page. It never blocks the pass: the whole step gets `monitor_budget_s`, the reading of
each window what remains of it, and what does not fit waits for the next pass. Nothing here
raises: a failure is stored as the window's `error` report.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from controller.errors import ServeopsError
from controller.gitops.context import PassContext
from controller.gitops.notify import Event
from controller.gitops.state import DesiredRevision
from controller.gitops.telemetry import METRICS, ControllerMetrics
from controller.monitor.alerts import alert_drift, alert_quality, send_alert
from controller.monitor.drift import ReferenceProfile, WindowCounts, judge_window
from controller.monitor.drift_report import DriftReport
from controller.monitor.quality_step import score_labels
from controller.monitor.recordings import RecordHook
from controller.monitor.reference import load_reference
from controller.monitor.report_html import write_report_html
from controller.monitor.retrain_step import send_due, unknown_targets
from controller.monitor.schema import SchemaCheck
from controller.monitor.selection import ReadLimits
from controller.monitor.window import read_window
from controller.redact import redact
from controller.spec.models import ModelDeployment

log = logging.getLogger("serveops.controller")

MAX_CACHED_REFERENCES = 64
HTML_HISTORY = 48  # earlier windows drawn in an HTML report's scores over time
_references: dict[tuple[object, ...], ReferenceProfile] = {}


def due_window(
    window_s: float, now: dt.datetime, last_end: dt.datetime | None
) -> tuple[dt.datetime, dt.datetime] | None:
    """The newest ended window [start, end) when it has not been judged yet, else None."""
    end_ts = (now.timestamp() // window_s) * window_s
    end = dt.datetime.fromtimestamp(end_ts, dt.UTC)
    if last_end is not None and last_end >= end:
        return None
    return end - dt.timedelta(seconds=window_s), end


def run_monitor_step(
    ctx: PassContext,
    admitted: DesiredRevision | None,
    now: dt.datetime,
    *,
    metrics: ControllerMetrics | None = None,
) -> list[DriftReport]:
    """Judge the due windows of the admitted revision's monitored deployments (gauges go to
    `metrics`, by default the controller's registry)."""
    if admitted is None:
        return []
    metrics = metrics or METRICS
    env, store = ctx.environment, ctx.store
    deadline = time.monotonic() + ctx.settings.monitor_budget_s
    reports: list[DriftReport] = []
    for name in sorted(admitted.specs):
        spec = admitted.specs[name]
        mon = spec.spec.monitoring
        if mon is None or spec.spec.recording is None:
            continue
        window = due_window(mon.window_s, now, store.last_drift_window(env, name))
        if window is None:
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            log.info("%s: monitoring budget spent; %s waits for the next pass", env, name)
            break
        try:
            report = judge(ctx, admitted, name, window, remaining)
        except ServeopsError as err:
            report = _error(admitted, env, name, window, err.message)
        except Exception as err:  # a bug must not stop the pass (or the next windows)
            log.exception("%s: monitoring %s failed", env, name)
            report = _error(admitted, env, name, window, f"{type(err).__name__}: {err}")
        report = replace(report, computed_at=store.now())
        if unknown := unknown_targets(ctx, spec):
            problem = (
                f"retrain target(s) {', '.join(map(repr, unknown))} not configured on this "
                "controller (--retrain-target): no retraining is requested of them"
            )
            log.error("%s: %s: %s", env, name, problem)
            report = replace(report, problems=(*report.problems, problem))
        try:
            store.record_drift(report)
            metrics.record_drift(report)
            alert_drift(ctx, spec, report)
            alert_quality(ctx, spec, report)
        except Exception:
            log.exception("%s: storing the monitoring report of %s failed", env, name)
            continue
        log.info("monitor %s", report.summary())
        _write_html(ctx, report)
        reports.append(report)
    try:
        send_due(ctx, notify=lambda event, name: _notify_all(ctx, admitted, event, name))
    except Exception:  # a broken store must not fail the pass
        log.exception("%s: sending retraining requests failed", env)
    return reports


def _write_html(ctx: PassContext, report: DriftReport) -> None:
    """The window's HTML page under --monitor-html-dir (with the deployment's recent windows
    for the scores over time)."""
    directory = ctx.settings.monitor_html_dir
    if directory is None:
        return
    try:
        history = ctx.store.drift_history(report.environment, report.deployment, HTML_HISTORY)
        write_report_html(Path(directory).expanduser(), report, history)
    except Exception:
        log.exception(
            "%s: writing the HTML report of %s failed", ctx.environment, report.deployment
        )


def _notify_all(ctx: PassContext, admitted: DesiredRevision, event: Event, name: str) -> None:
    """To the alert targets the deployment names (the controller's notifier when it is gone)."""
    spec = admitted.specs.get(name)
    mon = spec.spec.monitoring if spec is not None else None
    for target in mon.alert_targets if mon is not None else ["default"]:
        try:
            send_alert(ctx, target, event, name)
        except Exception:
            log.exception("%s: %s to %r failed", event.environment, event.kind, target)


def judge(
    ctx: PassContext,
    admitted: DesiredRevision,
    name: str,
    window: tuple[dt.datetime, dt.datetime],
    budget_s: float,
) -> DriftReport:
    """One deployment's window judged against its reference; with `labels`, the quality of the
    window whose labels are due too (quality_step.py)."""
    deadline = time.monotonic() + budget_s
    deployment = admitted.specs[name]
    model = admitted.desired.deployments[name].model
    profile = _reference(ctx, name, deployment, model.name, model.version)
    report = judge_recordings(
        ctx.environment,
        deployment,
        profile,
        window,
        version=model.version,
        commit=admitted.commit,
        recordings_dir=ctx.settings.monitor_recordings_dir,
        budget_s=budget_s,
    )
    mon = deployment.spec.monitoring
    if mon is None or mon.labels is None:
        return report
    quality = score_labels(
        deployment,
        window,
        labels_dir=ctx.settings.monitor_labels_dir,
        recordings_dir=ctx.settings.monitor_recordings_dir,
        budget_s=deadline - time.monotonic(),
    )
    return replace(report, extra={**report.extra, "quality": quality})


def judge_recordings(
    environment: str,
    deployment: ModelDeployment,
    profile: ReferenceProfile,
    window: tuple[dt.datetime, dt.datetime],
    *,
    version: str | None,
    commit: str | None,
    recordings_dir: str | None = None,
    budget_s: float = 30.0,
) -> DriftReport:
    """The recorded requests of `window` (answered by `version`, when given) judged against
    `profile` with the deployment's tests: what the controller and `serveops monitor --check`
    both do."""
    spec, name = deployment.spec, deployment.metadata.name
    mon, recording = spec.monitoring, spec.recording
    assert mon is not None
    assert recording is not None
    directory = Path(recordings_dir or recording.dir).expanduser()
    start, end = window
    counts = WindowCounts(profile)
    schema = SchemaCheck(profile.signature) if profile.signature is not None else None
    hooks: list[RecordHook] = [counts.predictions] if _has_predictions(profile) else []
    hooks += [schema] if schema is not None else []
    rows = read_window(
        directory,
        name,
        start.timestamp(),
        end.timestamp(),
        version=version,
        features=list(profile.features),
        limits=ReadLimits(max_rows=mon.max_rows, deadline_s=max(budget_s, 0.1)),
        sink=counts,
        outputs=_each(hooks),
    )
    counts.predictions.flush()
    for feature, n in rows.missing.items():  # not `name`: that is the deployment's
        counts.add_missing(feature, n)
    status, message, features = judge_window(profile, counts, rows.rows, mon.tests, mon.min_rows)
    if schema is not None and status in ("ok", "drift"):
        limit = mon.tests.schema_violations
        if limit is not None and schema.share > limit.max_share:
            status, message = "drift", f"{schema.summary()} (max {limit.max_share:.1%}); {message}"
        elif schema.violating:
            message = f"{message}; {schema.summary()}"
    if rows.truncated:
        message = f"{message}; {rows.truncated}"
    return DriftReport(
        environment=environment,
        deployment=name,
        version=version,
        commit=commit,
        window_start=start,
        window_end=end,
        status=status,
        message=message,
        rows=rows.rows,
        features=features,
        reference=profile.source,
        skipped_lines=rows.skipped_lines,
        problems=tuple(rows.problems),
        truncated=rows.truncated,
        extra=_extra(profile, counts, schema),
    )


def _has_predictions(profile: ReferenceProfile) -> bool:
    return profile.prediction is not None or profile.prediction_classes is not None


def _each(hooks: list[RecordHook]) -> RecordHook | None:
    """One hook calling each of `hooks` (None for none: the reader's hot path skips it)."""
    if len(hooks) <= 1:
        return hooks[0] if hooks else None

    def each(record: dict[str, Any]) -> None:
        for hook in hooks:
            hook(record)

    return each


def _extra(
    profile: ReferenceProfile, counts: WindowCounts, schema: SchemaCheck | None
) -> dict[str, object]:
    """What the report says beyond the features: the predictions (why they were not judged,
    or how many answer items could not be read as one) and the schema check (its counts, or
    why there is none)."""
    extra: dict[str, object] = {}
    if not _has_predictions(profile):
        if profile.prediction_note:
            extra["prediction_skipped"] = profile.prediction_note
    else:
        extra["prediction_unreadable"] = counts.predictions.unreadable
    if schema is not None:
        extra["schema"] = schema.to_dict()
    elif profile.signature_note:
        extra["schema_skipped"] = profile.signature_note
    return extra


def _reference(
    ctx: PassContext, name: str, deployment: ModelDeployment, model_name: str, version: str
) -> ReferenceProfile:
    mon = deployment.spec.monitoring
    assert mon is not None
    root = ctx.settings.monitor_reference_dir
    stamp: tuple[int, int] | None = None
    if mon.reference.path is not None and root is not None:
        try:
            st = (Path(root).expanduser() / mon.reference.path).stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
    key = (ctx.environment, name, mon.model_dump_json(), model_name, version, root, stamp)
    profile = _references.get(key)
    if profile is None:
        registry = ctx.registry() if mon.reference.kind == "mlflow" else None
        profile = load_reference(
            mon,
            reference_dir=Path(root) if root is not None else None,
            registry=registry,
            model_name=model_name,
            version=version,
        )
        if len(_references) >= MAX_CACHED_REFERENCES:
            _references.pop(next(iter(_references)))
        _references[key] = profile
    return profile


def _error(
    admitted: DesiredRevision,
    env: str,
    name: str,
    window: tuple[dt.datetime, dt.datetime],
    message: str,
) -> DriftReport:
    model = admitted.desired.deployments[name].model
    return DriftReport(
        env, name, model.version, admitted.commit, window[0], window[1], "error", redact(message)
    )

"""`serveops monitor`: the latest drift report per deployment, from the controller's state
(the controller's monitoring options: controller/cli/gitops_options.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from controller.cli.display import print_error
from controller.cli.gitops_options import RecordingsDirOpt, ReferenceDirOpt
from controller.cli.options import (
    DEFAULT_STATE,
    EnvOpt,
    OutputOpt,
    RegistryOpt,
    StateOpt,
    check_output,
    err,
    out,
)
from controller.cli.options import run as run_command
from controller.cli.retrain import (
    RetrainApiOpt,
    RetrainTargetOpt,
    RetrainTokenOpt,
    request_retraining,
    retrain_settings,
)
from controller.errors import BadInput
from controller.gitops.state import StateStore, Trigger
from controller.monitor.drift_report import DriftReport
from controller.monitor.report_html import write_report_html
from controller.monitor.retrain_targets import DEFAULT_GITHUB_API

# --- serveops monitor ---------------------------------------------------------------------------


def report_line(report: DriftReport) -> str:
    window = f"{report.window_start:%Y-%m-%d %H:%M}-{report.window_end:%H:%M} UTC"
    head = f"{report.deployment}  v{report.version or '?'}  {report.status:<12} {window}  "
    head += f"{report.rows} rows"
    worst = [f for f in report.worst(3) if f.rows]
    if report.status in ("drift", "ok") and worst:
        figures = ", ".join(
            f"{f.name} PSI {f.psi:.3f} KS p {f.ks_p_value:.2g}{' *' if f.drifted else ''}"
            for f in worst
        )
        return f"{head}  {figures}"
    return f"{head}  {report.message}"


def monitor(
    env: EnvOpt,
    state: StateOpt = DEFAULT_STATE,
    deployment: Annotated[
        str | None, typer.Option("--deployment", help="Only this deployment.")
    ] = None,
    history: Annotated[
        int, typer.Option("--history", help="Windows shown per deployment, newest first.")
    ] = 1,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Judge now, by hand, from the deployment files at --rev of --repo and the "
            "recordings (nothing stored), instead of printing the controller's reports.",
        ),
    ] = False,
    repo: Annotated[
        Path, typer.Option("--repo", help="With --check: the deployments repository.")
    ] = Path("."),
    rev: Annotated[str, typer.Option("--rev", help="With --check: the revision read.")] = "HEAD",
    window: Annotated[
        str | None,
        typer.Option("--window", help="With --check: the window, ending now (default: spec's)."),
    ] = None,
    reference_dir: ReferenceDirOpt = None,
    recordings_dir: RecordingsDirOpt = None,
    registry_uri: RegistryOpt = None,
    html: Annotated[
        Path | None,
        typer.Option("--html", help="Also write each report shown as an HTML page here."),
    ] = None,
    retrain_target: RetrainTargetOpt = None,
    retrain_github_api: RetrainApiOpt = DEFAULT_GITHUB_API,
    retrain_token_env: RetrainTokenOpt = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels",
            help="With --check: delayed ground truth, a CSV or JSON Lines file (or a directory "
            "of them) with `request_id` and `label`, joined with the window's recorded requests "
            "for live quality per model version.",
        ),
    ] = None,
    task: Annotated[
        str,
        typer.Option(
            "--task",
            help="With --labels: auto (default), classification (accuracy, ROC AUC) or "
            "regression (MAE).",
        ),
    ] = "auto",
    output: OutputOpt = "text",
) -> None:
    """The latest drift report of each monitored deployment, as the controller judged it (or,
    with --check, judged now by hand). Exit 1 when a deployment's latest window drifted, 2 when
    a deployment names a retraining target --retrain-target does not configure or (--check) a
    retraining request failed."""
    retrain_names: dict[str, list[str]] = {}
    requests: dict[str, list[dict[str, Any]]] = {}
    quality: dict[str, dict[str, Any]] = {}

    def stored() -> dict[str, list[DriftReport]]:
        if not 1 <= history <= 1000:
            raise BadInput(f"--history must be within 1..1000, not {history}")
        if not state.exists():
            raise BadInput(f"{state}: no controller state here (pass --state)")
        with StateStore(state) as store:
            latest = store.latest_drift(env)
            names = [deployment] if deployment else sorted(latest)
            if deployment and deployment not in latest:
                raise BadInput(f"no monitoring report for {deployment!r} in {env!r}")
            admitted = store.environment(env).admitted
            for n in names:
                spec = admitted.specs.get(n) if admitted is not None else None
                mon = spec.spec.monitoring if spec is not None else None
                retrain_names[n] = list(mon.actions.retrain) if mon is not None else []
                requests[n] = [_trigger_dict(t) for t in store.triggers(env, n, 5)]
            return {n: store.drift_history(env, n, max(history, 48 if html else 1)) for n in names}

    def run() -> int:
        check_output(output)
        config = retrain_settings(retrain_target, retrain_github_api, retrain_token_env)["retrain"]
        if labels is not None and not check:
            raise BadInput("--labels joins recorded requests: pass --check too")
        if task not in ("auto", "classification", "regression"):
            raise BadInput(f"--task must be auto, classification or regression, not {task!r}")
        if check:
            judged = check_now(
                repo,
                rev,
                env,
                deployment,
                window,
                reference_dir,
                recordings_dir,
                registry_uri,
                labels=(labels, task) if labels is not None else None,
                quality=quality,
            )
            reports = {r.deployment: [r] for r in judged}
            retrain_names.update(_retrain_names(repo, rev, env))
        else:
            reports = stored()
        if html is not None:
            for rs in reports.values():
                for r in rs[:history]:
                    write_report_html(html, r, rs)
            reports = {n: rs[:history] for n, rs in reports.items()}
        drifted = sorted(n for n, rs in reports.items() if rs and rs[0].drifted)
        problems = []
        for n in sorted(reports):
            unknown = config.unknown(retrain_names.get(n, [])) if config.targets else []
            if unknown:
                problems.append(
                    f"{env}/{n} names retrain target(s) {', '.join(map(repr, unknown))}, not "
                    "configured here (--retrain-target NAME=...)"
                )
            if check and n in drifted and config.targets and retrain_names.get(n):
                done = request_retraining(config, reports[n][0], retrain_names[n])
                requests[n] = [{"target": t, "ok": ok, "said": said} for t, ok, said in done]
                problems += [f"{env}/{n}: retrain {t}: {said}" for t, ok, said in done if not ok]
        if output == "json":
            body = {
                "environment": env,
                "drifted": drifted,
                "deployments": {n: [r.to_dict() for r in rs] for n, rs in reports.items()},
                "retrain_requests": requests,
                "problems": problems,
            }
            if labels is not None:
                body["quality"] = quality
            out.print_json(json.dumps(_strict_json(body), default=str, allow_nan=False))
        elif not reports:
            out.print(f"no monitoring report in {env!r} yet")
        else:
            for n, rs in reports.items():
                for r in rs:
                    out.print(report_line(r), markup=False)
                    for line in scored_lines(r.extra.get("quality")):
                        out.print(line, markup=False)
                for req in requests.get(n, []):
                    out.print(_request_line(req), markup=False)
                for line in quality_lines(quality.get(n)):
                    out.print(line, markup=False)
        for problem in problems:
            print_error(err, problem)
        return 2 if problems else 1 if drifted else 0

    code = run_command(run)
    if code:
        raise typer.Exit(code)


def quality_lines(q: dict[str, Any] | None) -> list[str]:
    """Live quality per version, and what was joined, as text."""
    if q is None:
        return []
    lines = [
        f"  labels: {q['joined']} of {q['labels']} joined ({q['unjoined_labels']} unjoined, "
        f"{q['multi_row']} multi-row, {q['unanswered']} unanswered; {q['requests']} requests)"
    ]
    for version, v in q["versions"].items():
        if v["task"] == "regression":
            figure = f"MAE {_fmt(v['mae'])}"
        else:
            figure = f"accuracy {_fmt(v['accuracy'])}"
            figure += f", ROC AUC {_fmt(v['roc_auc'])}" if v.get("roc_auc") is not None else ""
        lines.append(f"  v{version}: {v['task']}, {v['joined']} labelled rows: {figure}")
    return lines


def scored_lines(q: Any) -> list[str]:
    """The quality the controller stored with a report: of the window whose labels were due."""
    if not isinstance(q, dict):
        return []
    head = f"  quality of {q['window_start']} .. {q['window_end']} (labels after {q['delay']})"
    if "error" in q:
        return [f"{head}: {q['error']}"]
    return [f"{head}:", *quality_lines(q)]


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _trigger_dict(t: Trigger) -> dict[str, Any]:
    return {
        "target": t.target,
        "episode": t.episode.isoformat(),
        "status": t.status,
        "attempts": t.attempts,
        "next_attempt": t.next_attempt.isoformat() if t.next_attempt else None,
        "last_error": t.last_error,
    }


def _request_line(req: dict[str, Any]) -> str:
    """A retraining request: stored (status, attempts) or sent now (ok, what was said)."""
    if "status" in req:
        line = f"  retrain {req['target']}: {req['status']} ({req['attempts']} attempt(s))"
        if req["status"] == "pending" and req["next_attempt"]:
            line += f", next {req['next_attempt']}"
        return line + (f": {req['last_error']}" if req["last_error"] else "")
    return f"  retrain {req['target']}: {'sent' if req['ok'] else 'failed'}: {req['said']}"


def _retrain_names(repo: Path, rev: str, env: str) -> dict[str, list[str]]:
    """The retraining targets each monitored deployment of `env` at `rev` names."""
    from controller.sync.read import read_manifests

    _, manifests = read_manifests(str(repo), rev, env)
    return {
        m.name: list(m.deployment.spec.monitoring.actions.retrain)
        for m in manifests
        if m.deployment.spec.monitoring is not None
    }


def _strict_json(value: Any) -> Any:
    """NaN and infinities (a feature with no rows in a window) as null: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict_json(v) for v in value]
    return value


def check_now(
    repo: Path,
    rev: str,
    env: str,
    only: str | None,
    window: str | None,
    reference_dir: Path | None,
    recordings_dir: Path | None,
    registry_uri: str | None,
    *,
    labels: tuple[Path, str] | None = None,
    quality: dict[str, dict[str, Any]] | None = None,
) -> list[DriftReport]:
    """`monitor --check`: each monitored deployment of `env` at `rev`, its window ending now;
    with `labels` (path, task), each window's requests joined with them into `quality`."""
    import datetime as dt

    from controller.cli.options import seconds
    from controller.monitor.labels import join_labels, read_labels
    from controller.monitor.reference import load_reference
    from controller.monitor.step import judge_recordings
    from controller.registry.mlflow import registry_from_uri
    from controller.spec.models import parse_model_uri
    from controller.sync.read import read_manifests

    commit, manifests = read_manifests(str(repo), rev, env)
    chosen = [m for m in manifests if m.deployment.spec.monitoring is not None]
    if only is not None:
        chosen = [m for m in chosen if m.name == only]
        if not chosen:
            raise BadInput(f"{env}/{only} is not a monitored deployment at {rev}")
    registry = registry_from_uri(registry_uri) if registry_uri else None
    truth = read_labels(labels[0]) if labels is not None else None
    now = dt.datetime.now(dt.UTC)
    reports = []
    for m in chosen:
        mon = m.deployment.spec.monitoring
        assert mon is not None
        name, version, alias = parse_model_uri(m.deployment.spec.model)
        if version is None:
            if registry is None:
                raise BadInput(f"{m.path}: model follows @{alias}: pass --registry-uri")
            version = registry.resolve(m.deployment.spec.model).version
        length = seconds("--window", window) if window else mon.window_s
        profile = load_reference(
            mon, reference_dir=reference_dir, registry=registry, model_name=name, version=version
        )
        start = now - dt.timedelta(seconds=length)
        reports.append(
            judge_recordings(
                env,
                m.deployment,
                profile,
                (start, now),
                version=version,
                commit=commit,
                recordings_dir=str(recordings_dir) if recordings_dir else None,
            )
        )
        if truth is not None and labels is not None and quality is not None:
            recording = m.deployment.spec.recording
            assert recording is not None
            where = Path(recordings_dir or recording.dir).expanduser()
            join = join_labels(where, m.name, start.timestamp(), now.timestamp(), truth)
            quality[m.name] = join.report(labels[1])  # type: ignore[arg-type]
    return reports


def register(app: typer.Typer) -> None:
    app.command("monitor")(monitor)

"""The retraining and HTML report options, shared by `serveops controller`, `serveops sync` and
`serveops monitor`, and what `serveops monitor` does with them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from controller.monitor.drift_report import DriftReport
from controller.monitor.retrain import RetrainFailed, retrain_payload, send_retrain
from controller.monitor.retrain_targets import DEFAULT_GITHUB_API, RetrainConfig, retrain_config
from controller.redact import register_secret, register_webhook_urls

RetrainTargetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--retrain-target",
        envvar="SERVEOPS_RETRAIN_TARGETS",
        help="NAME=webhook:URL, NAME=github-dispatch:OWNER/REPO[:EVENT] or NAME=command:PATH: "
        "a retraining target `spec.monitoring.actions.retrain` may name (repeatable); sent the "
        "drift report once per drift episode.",
    ),
]
RetrainApiOpt = Annotated[
    str,
    typer.Option(
        "--retrain-github-api", help="GitHub's API for github-dispatch targets (Enterprise: yours)."
    ),
]
RetrainTokenOpt = Annotated[
    str | None,
    typer.Option(
        "--retrain-token-env",
        help="The environment variable holding the GitHub token github-dispatch targets use.",
    ),
]
HtmlDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--monitor-html-dir",
        envvar="SERVEOPS_MONITOR_HTML_DIR",
        help="Write an HTML report of each judged window here (one file per deployment, "
        "version and window; the newest 200 per deployment kept).",
    ),
]


def retrain_settings(
    targets: list[str] | None,
    github_api: str = DEFAULT_GITHUB_API,
    token_env: str | None = None,
    html_dir: Path | None = None,
) -> dict[str, Any]:
    """The ControllerSettings fields of these options; their secrets (webhook URLs, the
    token) are masked in everything said from now on."""
    config = retrain_config(targets, github_api, token_env)
    register_webhook_urls(*(t.where for t in config.targets if t.kind == "webhook"))
    if token_env:
        register_secret(os.environ.get(token_env))
    return {"retrain": config, "monitor_html_dir": str(html_dir) if html_dir else None}


def request_retraining(
    config: RetrainConfig, report: DriftReport, names: list[str]
) -> list[tuple[str, bool, str]]:
    """`serveops monitor --check`: one attempt per named target, now (nothing queued or
    retried); (name, ok, what happened)."""
    payload = retrain_payload(report)
    done = []
    for name in names:
        target = config.target(name)
        if target is None:
            done.append((name, False, "not configured (--retrain-target)"))
            continue
        try:
            done.append((name, True, send_retrain(target, payload, config)))
        except RetrainFailed as err:
            done.append((name, False, str(err)))
    return done

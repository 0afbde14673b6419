"""Sending a retraining request for a drift episode: a JSON webhook, a GitHub
`repository_dispatch`, or a command the operator allowed.

Every call is bounded (a time limit, at most MAX_RESPONSE_BYTES of an answer read) and raises
only RetrainFailed, so the caller (a controller pass, `serveops monitor`) records a failure and
goes on. The payload is the drift report, redacted and cut to MAX_PAYLOAD_BYTES.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import httpx

from controller.command_env import command_env
from controller.httpread import read_capped
from controller.monitor.drift_report import DriftReport
from controller.monitor.retrain_targets import RetrainConfig, RetrainTarget
from controller.redact import redact, redact_data

MAX_PAYLOAD_BYTES = 60_000  # GitHub refuses dispatches much over 64 KB
MAX_RESPONSE_BYTES = 4096
OUTPUT_LIMIT = 300  # characters of an answer or a command's output kept in a message


class RetrainFailed(Exception):
    """A retraining request that did not go through; the message says why (redacted)."""


def retrain_payload(report: DriftReport, limit: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    """What a target receives: who drifted (deployment, environment, model version, Git
    revision) and the drift report, secrets redacted, at most `limit` bytes of JSON: the bins
    go first, then the least shifted features."""
    drift = _finite(redact_data(report.to_dict()))
    payload = {
        "source": "serveops",
        "event": "retrain",
        "environment": report.environment,
        "deployment": report.deployment,
        "model_version": report.version,
        "commit": report.commit,
        "drift_report": drift,
    }
    if _size(payload) <= limit:
        return payload
    features = drift.get("features", [])
    for f in features:
        for key in ("bin_edges", "reference_shares", "window_counts"):
            f.pop(key, None)
    total = len(features)
    while _size(payload) > limit and features:
        del features[len(features) // 2 :]  # the worst come first: they stay
        drift["features_omitted"] = total - len(features)
    if _size(payload) > limit:  # what is left is too big: keep the identity and the verdict
        drift.clear()
        drift.update(status=report.status, message=redact(report.message[:1000]), cut=True)
    return payload


def _size(data: Any) -> int:
    return len(json.dumps(data, separators=(",", ":")).encode())


def _finite(value: Any) -> Any:
    """NaN and infinities as null: strict JSON for any receiver."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def send_retrain(
    target: RetrainTarget,
    payload: dict[str, Any],
    config: RetrainConfig,
    *,
    environ: Mapping[str, str] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> str:
    """Send one request; what happened on success, RetrainFailed otherwise."""
    environ = os.environ if environ is None else environ
    if target.kind == "command":
        return _command(target, payload, config, environ)
    headers = {"User-Agent": "serveops"}
    if target.kind == "webhook":
        url, body = target.where, payload
    else:
        url = f"{config.github_api}/repos/{target.where}/dispatches"
        body = {"event_type": target.event, "client_payload": payload}
        headers["Accept"] = "application/vnd.github+json"
        if config.token_env:
            token = environ.get(config.token_env)
            if not token:
                raise RetrainFailed(f"no GitHub token: ${config.token_env} is not set")
            headers["Authorization"] = f"Bearer {token}"
    return _post(url, body, headers, config.timeout_s, transport)


def _post(
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    timeout_s: float,
    transport: httpx.BaseTransport | None,
) -> str:
    host = _host(url)
    deadline = time.monotonic() + timeout_s
    try:
        with (
            httpx.Client(timeout=timeout_s, transport=transport) as client,
            client.stream("POST", url, json=body, headers=headers) as response,
        ):
            said, _cut = read_capped(response, MAX_RESPONSE_BYTES, deadline)  # only quoted
    except httpx.HTTPError as err:
        raise RetrainFailed(f"{host}: {type(err).__name__}: {redact(str(err))}") from None
    if response.status_code >= 300:
        text = said.decode("utf-8", "replace").strip()[:OUTPUT_LIMIT]
        raise RetrainFailed(f"{host}: HTTP {response.status_code}: {redact(text)}".rstrip(": "))
    return f"{host}: HTTP {response.status_code}"


def _host(url: str) -> str:
    """Webhook URLs carry secrets in their path: only the host is said."""
    try:
        return httpx.URL(url).host or "?"
    except httpx.InvalidURL:
        return "?"


def _command(
    target: RetrainTarget,
    payload: dict[str, Any],
    config: RetrainConfig,
    environ: Mapping[str, str],
) -> str:
    """The operator's program, with the payload on stdin and a scrubbed environment (the
    controller's credentials stay with the controller)."""
    extra = {
        "SERVEOPS_ENVIRONMENT": str(payload.get("environment") or ""),
        "SERVEOPS_DEPLOYMENT": str(payload.get("deployment") or ""),
        "SERVEOPS_MODEL_VERSION": str(payload.get("model_version") or ""),
        "SERVEOPS_COMMIT": str(payload.get("commit") or ""),
        "SERVEOPS_RETRAIN_TARGET": target.name,
    }
    with tempfile.TemporaryFile() as output:  # a chatty program's output is never held whole
        try:
            done = subprocess.run(
                [target.where],
                input=json.dumps(payload).encode(),
                env=command_env((), extra, environ),
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=config.timeout_s,
                check=False,
            )
        except FileNotFoundError:
            raise RetrainFailed(f"command not found: {target.where}") from None
        except PermissionError:
            raise RetrainFailed(f"command not executable: {target.where}") from None
        except subprocess.TimeoutExpired:
            raise RetrainFailed(
                f"{target.where} did not finish within {config.timeout_s:g}s"
            ) from None
        except OSError as err:
            raise RetrainFailed(f"{target.where}: {err.strerror or err}") from None
        if done.returncode != 0:
            output.seek(max(output.tell() - MAX_RESPONSE_BYTES, 0))
            lines = output.read(MAX_RESPONSE_BYTES).decode("utf-8", "replace").strip().splitlines()
            said = f": {redact(lines[-1][:OUTPUT_LIMIT])}" if lines else ""
            raise RetrainFailed(f"{target.where} exited {done.returncode}{said}")
    return f"{target.where}: exit 0"

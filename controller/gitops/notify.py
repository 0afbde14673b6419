"""Notifications of what the controller did: a generic JSON webhook and a Slack-format webhook.

Delivery is best effort: a short timeout, failures logged, never fatal to a pass. What is sent
goes through controller/redact.py: a message quoting a registry's or Git's error never carries
their credentials to a chat channel.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx

from controller.redact import redact

log = logging.getLogger("serveops.controller")

EventKind = Literal[
    "deployed",
    "degraded",
    "sync_failed",
    "rollout_aborted",
    "drift_detected",
    "model_drift",
    "model_drift_resolved",
    "model_quality_low",
    "model_quality_recovered",
    "retrain_failed",
    "batch_failed",
    "model_proposed",
]
EVENT_KINDS: tuple[EventKind, ...] = (
    "deployed",  # a revision (or a new desired state) was applied
    "degraded",  # a deployment became Degraded (sent once, when it enters the state)
    "sync_failed",  # a pass failed, or the policy gate refused a revision
    "rollout_aborted",  # a rollout was aborted and traffic went back to the stable version
    "drift_detected",  # live Serve differs from Git (and, with drift enabled, was restored)
    "model_drift",  # a monitored deployment's inputs drifted from its reference (once per episode)
    "model_drift_resolved",  # the first healthy window after a drift episode
    "model_quality_low",  # live quality (delayed labels) below its thresholds (once per episode)
    "model_quality_recovered",  # the first scored window back within them
    "retrain_failed",  # a drift episode's retraining request failed every attempt
    "batch_failed",  # a batch run failed (its retries spent) or its sample check rejected it
    "model_proposed",  # a new model version was proposed through Git (`spec.model_updates`)
)
TIMEOUT_S = 5.0

_SLACK_ICON: dict[EventKind, str] = {
    "deployed": ":white_check_mark:",
    "degraded": ":red_circle:",
    "sync_failed": ":x:",
    "rollout_aborted": ":rewind:",
    "drift_detected": ":warning:",
    "model_drift": ":chart_with_downwards_trend:",
    "model_drift_resolved": ":chart_with_upwards_trend:",
    "model_quality_low": ":small_red_triangle_down:",
    "model_quality_recovered": ":white_check_mark:",
    "retrain_failed": ":x:",
    "batch_failed": ":x:",
    "model_proposed": ":inbox_tray:",
}


@dataclass(frozen=True)
class Event:
    kind: EventKind
    environment: str
    commit: str | None
    message: str
    at: dt.datetime
    repo: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "source": "serveops",
            "event": self.kind,
            "environment": self.environment,
            "commit": self.commit,
            "repo": redact(self.repo),
            "message": redact(self.message),
            "at": self.at.isoformat(),
        }

    def as_slack(self) -> dict[str, Any]:
        what = self.kind.replace("_", " ")
        commit = f" at `{self.commit[:12]}`" if self.commit else ""
        head = f"{_SLACK_ICON[self.kind]} serveops: *{what}* in `{self.environment}`{commit}"
        message = redact(self.message)
        return {"text": f"{head}\n{message}" if message else head}


class Notifier(Protocol):
    def notify(self, event: Event) -> None: ...


class WebhookNotifier:
    """POSTs each event to every URL: `json` URLs get the event object, `slack` URLs get a
    Slack incoming-webhook message (`{"text": ...}`)."""

    def __init__(
        self,
        json_urls: Sequence[str] = (),
        slack_urls: Sequence[str] = (),
        *,
        timeout_s: float = TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.targets = [(u, "json") for u in json_urls] + [(u, "slack") for u in slack_urls]
        self._client = httpx.Client(timeout=timeout_s, transport=transport)

    def close(self) -> None:
        self._client.close()

    def notify(self, event: Event) -> None:
        for url, fmt in self.targets:
            body = event.as_slack() if fmt == "slack" else event.as_json()
            try:
                response = self._client.post(url, json=body)
            except httpx.HTTPError as err:
                said = redact(str(err))
                log.warning("notification %s to %s failed: %s", event.kind, _host(url), said)
                continue
            if response.status_code >= 400:
                log.warning(
                    "notification %s to %s failed: HTTP %s",
                    event.kind,
                    _host(url),
                    response.status_code,
                )


class NoNotifier:
    def notify(self, event: Event) -> None:
        pass


def _host(url: str) -> str:
    """Webhook URLs carry secrets in their path: log only the host."""
    try:
        return httpx.URL(url).host or "?"
    except httpx.InvalidURL:
        return "?"

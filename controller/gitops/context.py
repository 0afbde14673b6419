"""What every step of a pass works with: the controller's edges and settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from controller.batch.jobs import JobsAPI
from controller.cluster.serve_api import ServeAPI
from controller.gitops.notify import Event, EventKind, Notifier
from controller.gitops.settings import ControllerSettings
from controller.gitops.state import StateStore
from controller.registry.mlflow import Registry
from controller.rollout.hooks import HookRunner
from controller.rollout.router_metrics import MetricsSource
from controller.source.repository import RepoSource


@dataclass(frozen=True)
class PassContext:
    source: RepoSource  # Git: the followed branch (or revision)
    client: ServeAPI  # Serve: the dashboard's REST API
    store: StateStore  # durable state and audit
    registry: Callable[[], Registry]  # a fresh one per pass: an alias that moved is seen
    settings: ControllerSettings
    notifier: Notifier
    hooks: HookRunner
    metrics: MetricsSource
    actor: str
    jobs: JobsAPI | None = None  # Ray Jobs for batch runs; None: the dashboard's, made per pass

    @property
    def environment(self) -> str:
        return self.settings.environment

    def notify(self, kind: EventKind, commit: str | None, message: str) -> None:
        """Best effort: a notification never fails a pass (the notifier logs its failures)."""
        event = Event(
            kind, self.environment, commit, message, self.store.now(), self.source.display
        )
        try:
            self.notifier.notify(event)
        except Exception:
            import logging

            logging.getLogger("serveops.controller").exception("notification %s failed", kind)

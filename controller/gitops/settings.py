"""How a controller runs: given by its operator (flags, environment), never by Git."""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass
from typing import Literal

from controller.cluster.serving_code import INSTALLED, ServingCode
from controller.monitor.forge import Forge
from controller.monitor.retrain_targets import NO_RETRAIN, RetrainConfig
from controller.policy.evidence import EvidenceStore
from controller.policy.source import PolicySource

DriftMode = Literal["enabled", "warn", "disabled"]
DRIFT_MODES: tuple[DriftMode, ...] = ("enabled", "warn", "disabled")


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class ControllerSettings:
    environment: str
    interval_s: float = 10.0
    drift: DriftMode = "warn"
    prune: bool = False
    allow_empty: bool = False  # with prune: may an empty desired state delete everything?
    apply_timeout_s: float = 300.0
    lease_ttl_s: float | None = None  # default: three intervals, at least 30 s
    # Also hold the lease as a ref in the repository (gitops/git_lease.py), where controllers
    # with other state files see it.
    lease_in_git: bool = False
    actor: str = ""
    # Rollouts: the progress deadline is apply_timeout_s (a candidate must run by then).
    inconclusive_limit: int = 3  # inconclusive analyses in a row before a rollout pauses
    serve_url: str | None = None  # Serve's HTTP proxy for smoke hooks (default: dashboard host)
    serving_code: ServingCode = INSTALLED  # where the nodes get serveops' serving code
    # The gate's trust anchors (docs/policy.md, "Trust model"): never read from the judged
    # revision. `policies` (a platform directory or repository) when given; else the policies/
    # of the revision admitted last, and for the very first admission those of
    # `bootstrap_policies`, a revision the operator reviewed. Neither: nothing is admitted.
    policies: PolicySource | None = None
    bootstrap_policies: str | None = None
    evidence: EvidenceStore | None = None  # signed simulation verdicts (`simulation` input)
    evidence_key: bytes | None = None  # None: $SERVEOPS_EVIDENCE_KEY(_FILE)
    hook_commands: frozenset[str] = frozenset()  # programs `command` hooks may run
    # Monitoring (docs/monitoring.md): where `spec.monitoring.reference.path` files live, where
    # the router's recordings are read (None: each deployment's `recording.dir`, as seen from
    # this host), how long one pass may spend judging windows, and the alert targets a
    # deployment may name (`--alert-target NAME=URL`; `default` is the controller's notifier).
    monitor_reference_dir: str | None = None
    monitor_recordings_dir: str | None = None
    monitor_labels_dir: str | None = None  # where `spec.monitoring.labels.path` files live
    monitor_budget_s: float = 10.0
    alert_targets: tuple[tuple[str, str], ...] = ()
    # Retraining targets `spec.monitoring.actions.retrain` may name (`--retrain-target`), and
    # where an HTML report of each judged window is written (None: none).
    retrain: RetrainConfig = NO_RETRAIN
    monitor_html_dir: str | None = None
    # Model update automation (`spec.model_updates`, docs/monitoring.md): how often the registry
    # is scanned (None: never), the remote proposal branches are pushed to (None: the branch
    # stays in the controller's repository), and the forge their pull requests open on.
    propose_every_s: float | None = None
    propose_push: str | None = None
    forge: Forge | None = None
    forge_base: str = "main"

    @property
    def lease_ttl(self) -> float:
        return self.lease_ttl_s if self.lease_ttl_s is not None else max(30.0, 3 * self.interval_s)

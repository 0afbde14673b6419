"""Live state: what Ray Serve runs now, as read from the dashboard's REST API.

Pure parsing of `GET /api/serve/applications/`; the HTTP client lives in serveapi.py.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from controller.serving.protocol import MARKER_KEY

# Serve warns about replicas slow "to be scheduled" (not "to initialize": a slow model load is
# fine) and names what a replica needs and what the cluster has free. Only a replica that does
# not fit is Degraded; one merely slow to start (a loaded machine) is still Progressing.
_SLOW_SCHEDULING = re.compile(
    r"to be scheduled.*Resources required for each replica: (\{.*?\}), "
    r"total resources available: (\{.*?\})",
    re.DOTALL,
)


def does_not_fit(message: str) -> bool:
    """True when Serve's message says a replica needs more of a resource than is free."""
    match = _SLOW_SCHEDULING.search(message)
    if match is None:
        return False
    try:
        required, available = json.loads(match[1]), json.loads(match[2])
    except ValueError:
        return False
    return any(float(available.get(k, 0)) < float(v) for k, v in required.items())


@dataclass(frozen=True)
class LiveDeployment:
    name: str
    status: str  # HEALTHY, UPDATING, UNHEALTHY, ...
    message: str
    replica_states: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LiveApp:
    name: str
    status: str  # RUNNING, DEPLOYING, DEPLOY_FAILED, UNHEALTHY, DELETING, NOT_STARTED
    message: str
    config: dict[str, Any]  # deployed_app_config, exactly as it was PUT
    deployments: dict[str, LiveDeployment] = field(default_factory=dict)

    @property
    def marker(self) -> dict[str, str] | None:
        value = (self.config.get("args") or {}).get(MARKER_KEY)
        return value if isinstance(value, dict) else None

    @property
    def route(self) -> str | None:
        """The HTTP route the application answers on (None: reached through a handle)."""
        route = self.config.get("route_prefix")
        return route if isinstance(route, str) else None

    @property
    def deleting(self) -> bool:
        return self.status == "DELETING"

    def managed_in(self, environment: str) -> bool:
        return self.marker is not None and self.marker.get("environment") == environment

    @property
    def unschedulable_message(self) -> str | None:
        for dep in self.deployments.values():
            if does_not_fit(dep.message):
                return dep.message
        return None

    @property
    def problem(self) -> str | None:
        """Why this application cannot serve, or None while it is fine or still starting."""
        if self.status in ("DEPLOY_FAILED", "UNHEALTHY"):
            details = [d.message for d in self.deployments.values() if d.message]
            return self.message or "; ".join(details) or self.status
        return self.unschedulable_message


@dataclass(frozen=True)
class LiveState:
    apps: dict[str, LiveApp]
    http_options: dict[str, Any] | None = None
    cpus: float | None = None  # the cluster's CPUs (alive nodes); None: unknown

    @classmethod
    def from_api(cls, payload: dict[str, Any], cpus: float | None = None) -> LiveState:
        apps: dict[str, LiveApp] = {}
        for name, raw in (payload.get("applications") or {}).items():
            deployments = {
                dname: LiveDeployment(
                    name=dname,
                    status=d.get("status", ""),
                    message=d.get("message", "") or "",
                    replica_states=_count_states(d.get("replicas") or []),
                )
                for dname, d in (raw.get("deployments") or {}).items()
            }
            apps[name] = LiveApp(
                name=name,
                status=raw.get("status", ""),
                message=raw.get("message", "") or "",
                config=raw.get("deployed_app_config") or {"name": name},
                deployments=deployments,
            )
        http = payload.get("http_options")
        http_options = {"host": http["host"], "port": http["port"]} if http else None
        return cls(apps=apps, http_options=http_options, cpus=cpus)

    def managed(self, environment: str) -> dict[str, LiveApp]:
        return {n: a for n, a in self.apps.items() if a.managed_in(environment)}

    def others(self, environment: str) -> list[LiveApp]:
        """Applications serveops must carry over untouched: unmanaged, or of other environments.

        An application being deleted is no one's any more: Serve has already dropped its config
        (the GET shows none), so it cannot be carried over, and its name is free to take.
        """
        return [a for a in self.apps.values() if not a.managed_in(environment) and not a.deleting]

    def fingerprint(self) -> str:
        """Hash of every application's config: a saved plan is stale when this moves.

        Applications being deleted are left out: Serve shows them without a config, no PUT
        carries them, and one finishing its deletion changes nothing a plan would write.
        """
        configs = {name: app.config for name, app in sorted(self.apps.items()) if not app.deleting}
        blob = json.dumps(configs, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _count_states(replicas: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in replicas:
        state = str(r.get("state", "UNKNOWN"))
        counts[state] = counts.get(state, 0) + 1
    return counts

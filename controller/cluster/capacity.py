"""The cluster's CPUs against what Serve applications reserve: does one more application fit?

Pure. Ray places a replica only where its `num_cpus` fit; one that does not stays pending, and
a rollout that adds a candidate to a full cluster would start a version that never runs (and
squeeze the stable one's machine). The controller checks before it adds the candidate: the CPUs
every live application reserves (its deployments' `ray_actor_options.num_cpus`, Serve's
default 1, times their replicas) plus the candidate's, against the cluster's total CPUs as the
dashboard lists them (`cluster_cpus`). CPUs taken by Ray work other than Serve applications are
not seen here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controller.cluster.live import LiveApp, LiveState

SERVE_DEFAULT_NUM_CPUS = 1.0  # what Serve reserves for a replica that does not say
EPSILON = 1e-6


def app_cpus(config: dict[str, Any], live: LiveApp | None = None) -> float:
    """CPUs an application's replicas reserve: per deployment, `num_cpus` times the replicas
    (`num_replicas`; for autoscaling the initial or minimum count, at least 1; or the replicas
    Serve reports, when more)."""
    total = 0.0
    for dep in config.get("deployments") or []:
        actor = dep.get("ray_actor_options") or {}
        cpus = float(actor.get("num_cpus", SERVE_DEFAULT_NUM_CPUS))
        replicas = _replicas(dep)
        if live is not None and (seen := live.deployments.get(str(dep.get("name")))):
            replicas = max(replicas, sum(seen.replica_states.values()))
        total += cpus * replicas
    return total


def _replicas(dep: dict[str, Any]) -> int:
    count = dep.get("num_replicas")
    if isinstance(count, int):
        return count
    auto = dep.get("autoscaling_config") or {}
    return max(1, int(auto.get("initial_replicas") or auto.get("min_replicas") or 1))


@dataclass(frozen=True)
class Room:
    """Whether an application fits: what it needs, what is free, of how many."""

    needs: float
    free: float
    total: float

    @property
    def fits(self) -> bool:
        return self.needs <= self.free + EPSILON

    def says(self, app: str) -> str:
        return (
            f"room on the cluster: {app} needs {self.needs:g} CPU, {max(0.0, self.free):g} of "
            f"{self.total:g} free (it starts when it fits)"
        )


def room_for(config: dict[str, Any], live: LiveState) -> Room | None:
    """Does the application `config` fit next to what runs? None when the cluster's CPUs are
    unknown (then nothing waits for room)."""
    if live.cpus is None:
        return None
    reserved = sum(
        app_cpus(app.config, app)
        for name, app in live.apps.items()
        if name != config.get("name") and not app.deleting
    )
    return Room(needs=app_cpus(config), free=live.cpus - reserved, total=live.cpus)


def alive_raylets(nodes: list[Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(node, its raylet) for each alive node of a dashboard's node list (`read_nodes`). An
    entry that is not a node as the dashboard writes one is skipped, not fatal: the one rule
    for the cluster's CPUs and its metrics ports (controller/rollout/router_metrics.py)."""
    alive = []
    for node in nodes:
        raylet = node.get("raylet") if isinstance(node, dict) else None
        if isinstance(raylet, dict) and raylet.get("state", "ALIVE") == "ALIVE":
            alive.append((node, raylet))
    return alive


def cluster_cpus(nodes: list[Any]) -> float | None:
    """Total CPUs of the alive nodes the dashboard lists (`read_nodes`); None when it lists
    none, or a node's CPUs are not a number."""
    try:
        total = sum(
            float((raylet.get("resourcesTotal") or {}).get("CPU", 0.0))
            for _, raylet in alive_raylets(nodes)
        )
    except (TypeError, ValueError, AttributeError):
        return None
    return total or None

"""The Ray dashboard's Serve REST API: `GET` and `PUT /api/serve/applications/`.

PUT replaces the whole declarative config, so every write carries the applications serveops does
not own exactly as they are live: it never deletes what it did not create.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Protocol

import httpx

from controller.cluster.capacity import cluster_cpus
from controller.cluster.live import LiveApp, LiveState
from controller.errors import ServeopsError, Unreachable
from controller.httpread import get_capped

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
APPLICATIONS_PATH = "/api/serve/applications/"
NODES_PATH = "/nodes?view=summary"
CPUS_READ_EVERY_S = 30.0  # the cluster's CPUs change with its nodes: read at most this often
MAX_NODES_BYTES = 32 * 1024 * 1024  # the node list of a large cluster, with room
NODES_TIMEOUT_S = 5.0  # the whole read of it


def read_nodes(
    client: httpx.Client, url: str, *, timeout_s: float, limit: int = MAX_NODES_BYTES
) -> list[Any]:
    """The node summaries the dashboard lists at `url` (NODES_PATH), read within `limit` bytes
    and `timeout_s` in all (controller/httpread.py): a large cluster's list is megabytes, and a
    dashboard that trickles must not hold a controller's pass. Unreachable when it cannot be
    read whole or is not a node list. The one reader of it: the cluster's CPUs (ServeClient)
    and its metrics ports (controller/rollout/router_metrics.py)."""
    body = get_capped(client, url, limit, timeout_s)
    try:
        nodes = json.loads(body)["data"]["summary"]
    except (ValueError, KeyError, TypeError) as err:
        raise Unreachable(f"{url} is not a node list: {err!r}") from None
    if not isinstance(nodes, list):
        raise Unreachable(f"{url} is not a node list: data.summary is not a list")
    return nodes


def default_address() -> str:
    return os.environ.get("SERVEOPS_ADDRESS", DEFAULT_ADDRESS)


class ServeAPI(Protocol):
    """What plan, apply and status need of a cluster; ServeClient in production, fakes in tests."""

    address: str

    def get(self) -> LiveState: ...

    def put(self, apps: list[dict[str, Any]], live: LiveState) -> None: ...


class ServeClient:
    """Talks to one Ray cluster's dashboard. Fails within `connect_timeout_s` when it is down."""

    def __init__(
        self,
        address: str,
        *,
        http_host: str = "127.0.0.1",
        http_port: int = 8000,
        connect_timeout_s: float = 3.0,
        timeout_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.address = address.rstrip("/")
        # Used only when Serve is not running yet; a running Serve keeps its own HTTP options.
        self.http_host = http_host
        self.http_port = http_port
        self._client = httpx.Client(
            base_url=self.address,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            transport=transport,
        )
        self._cpus: tuple[float, float | None] | None = None  # (monotonic read time, CPUs)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ServeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, json_body: Any = None) -> httpx.Response:
        try:
            response = self._client.request(method, APPLICATIONS_PATH, json=json_body)
        except httpx.TransportError as err:
            raise Unreachable(
                f"cannot reach the Ray dashboard at {self.address} ({err.__class__.__name__}: "
                f"{err}). Is Ray running there (`ray start --head --num-cpus N`)? "
                "Set --address or SERVEOPS_ADDRESS."
            ) from None
        if response.status_code >= 500 or response.status_code == 429:
            # Ray busy or restarting (the dashboard answers 5xx while its Serve controller
            # recovers): transient, retried at the next pass, never the revision's fault.
            raise Unreachable(
                f"the Ray dashboard at {self.address} answered {method} {APPLICATIONS_PATH} "
                f"with HTTP {response.status_code} (retried at the next pass): "
                f"{response.text.strip()[:500]}"
            )
        if response.status_code >= 400:
            raise ServeopsError(
                f"Ray rejected {method} {APPLICATIONS_PATH} at {self.address} "
                f"(HTTP {response.status_code}): {response.text.strip()[:2000]}"
            )
        return response

    def get(self) -> LiveState:
        try:
            payload = self._request("GET").json()
        except ValueError:
            raise ServeopsError(
                f"{self.address} did not answer with JSON: is it a Ray dashboard?"
            ) from None
        return LiveState.from_api(payload, self.cpus())

    def cpus(self) -> float | None:
        """The cluster's CPUs from the dashboard's node list, read at most every
        CPUS_READ_EVERY_S; None when it cannot say (then no rollout waits for room)."""
        now = time.monotonic()
        if self._cpus is not None and now - self._cpus[0] < CPUS_READ_EVERY_S:
            return self._cpus[1]
        try:
            cpus = cluster_cpus(read_nodes(self._client, NODES_PATH, timeout_s=NODES_TIMEOUT_S))
        except Unreachable:
            cpus = None
        self._cpus = (now, cpus)
        return cpus

    def put(self, apps: list[dict[str, Any]], live: LiveState) -> None:
        """Replace Serve's config with `apps` (which must already include every app to keep)."""
        http = live.http_options or {"host": self.http_host, "port": self.http_port}
        self._request("PUT", {"http_options": http, "applications": apps})


def merged_config(
    live: LiveState, environment: str, managed_apps: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The full application list for a PUT: ours as given, everyone else's as live."""
    return [app.config for app in live.others(environment)] + managed_apps


def live_configs(apps: dict[str, LiveApp]) -> dict[str, dict[str, Any]]:
    return {name: app.config for name, app in apps.items()}

"""The router: owns a deployment's route and splits its traffic across model versions.

Weights arrive in `user_config`, so a traffic shift is a `reconfigure()`: no replica restarts.
It routes only to versions whose Serve application is RUNNING, bounds each call by a timeout,
and names the version that answered in a response header.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import JSONResponse

from controller.serving.protocol import DEPLOYMENT_HEADER, VERSION_HEADER, RouterConfig, Target

logger = logging.getLogger("ray.serve")
STATUS_POLL_S = 0.5  # how soon a version that became RUNNING gets traffic


def pick(config: RouterConfig, running: set[str], rand: float) -> Target | None:
    """Weighted choice among RUNNING targets, else among RUNNING fallbacks; `rand` in [0, 1)."""
    return _weighted(config.targets, running, rand) or _weighted(config.fallback, running, rand)


def _weighted(targets: list[Target], running: set[str], rand: float) -> Target | None:
    live = [t for t in targets if t.app in running and t.weight > 0]
    total = sum(t.weight for t in live)
    if total <= 0:
        return None
    point = rand * total
    for t in live:
        point -= t.weight
        if point < 0:
            return t
    return live[-1]


@serve.deployment
class Router:
    def __init__(self, deployment: str) -> None:
        self._deployment = deployment
        self._config: RouterConfig | None = None
        self._handles: dict[str, DeploymentHandle[Any]] = {}
        self._running: set[str] = set()
        self._poller: asyncio.Task[None] | None = None

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        config = RouterConfig.model_validate(user_config)
        self._config = config
        logger.info(
            "router %s targets %s fallback %s",
            self._deployment,
            [t.model_dump() for t in config.targets],
            [t.model_dump() for t in config.fallback],
        )

    def _handle(self, app: str) -> DeploymentHandle[Any]:
        # Created on first use: the app is known to be RUNNING by then.
        if app not in self._handles:
            self._handles[app] = serve.get_app_handle(app)
        return self._handles[app]

    async def _poll_status(self) -> None:
        while True:
            try:
                status = await asyncio.to_thread(serve.status)
                self._running = {n for n, a in status.applications.items() if a.status == "RUNNING"}
            except Exception:  # keep the last known set; the next poll retries
                logger.exception("router %s could not read Serve status", self._deployment)
            await asyncio.sleep(STATUS_POLL_S)

    async def _ensure_poller(self) -> None:
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll_status())
            # The first request must not wait a whole poll period.
            status = await asyncio.to_thread(serve.status)
            self._running = {n for n, a in status.applications.items() if a.status == "RUNNING"}

    async def __call__(self, request: Request) -> JSONResponse:
        await self._ensure_poller()
        config = self._config
        if config is None:
            return _error(503, "router has no configuration yet", None)
        target = pick(config, self._running, random.random())
        if target is None:
            return _error(503, f"no running version of {self._deployment}", None)
        try:
            payload = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "request body is not valid JSON", target)
        handle = self._handle(target.app)
        try:
            result = await asyncio.wait_for(
                handle.predict.remote(payload), timeout=config.timeout_s
            )
        except TimeoutError:
            return _error(
                504, f"version {target.version} did not answer in {config.timeout_s}s", target
            )
        status, body = result["status"], result["body"]
        return JSONResponse(body, status_code=status, headers=_headers(self._deployment, target))


def _headers(deployment: str, target: Target | None) -> dict[str, str]:
    headers = {DEPLOYMENT_HEADER: deployment}
    if target is not None:
        headers[VERSION_HEADER] = target.version
    return headers


def _error(status: int, message: str, target: Target | None) -> JSONResponse:
    body = {"error_code": status, "message": message}
    return JSONResponse(body, status_code=status, headers=_headers("", target))


def build(args: dict[str, Any]) -> Any:
    return Router.bind(args["serveops"]["deployment"])  # type: ignore[attr-defined]

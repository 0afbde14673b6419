"""The router: owns a deployment's route and splits its traffic across model versions.

Weights arrive in `user_config`, so a traffic shift is a `reconfigure()`: no replica restarts.
It routes only to versions whose Serve application is RUNNING, bounds each call by a timeout,
and names the version that answered in a response header. Which version a request goes to is
decided in routing.py (pure, no Ray).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import JSONResponse

from controller.serving import answers, code_origin
from controller.serving.counters import RouterMetrics
from controller.serving.pinning import authentic, awaits_status, pinned
from controller.serving.pressure import (
    Admission,
    InFlight,
    MirrorGovernor,
    QueuePeaks,
    admit,
    movable,
    queue_view,
    second_chance,
    wait_budget_s,
)
from controller.serving.protocol import (
    REPLAY_HEADER,
    ROUTER_SHED_AT,
    ROUTING_HEADER,
    SLOT_WAIT_PEAK_S,
    STATUS_POLL_S,
    VARIANT_HEADER,
    RecordingConfig,
    RouterConfig,
    Target,
    routing_id,
)
from controller.serving.recorder import Recorder, exchange_of, replace_recorder
from controller.serving.routing import choose, mirrored, mirrors, routable
from controller.serving.serve_status import app_statuses
from controller.serving.slots import SlotDeadline, Slots

logger = logging.getLogger("ray.serve")
PIN_REFRESH_S = 0.1  # the least time between two status reads asked for by pinned requests
FIRST_READ_TRIES, FIRST_READ_RETRY_S = 10, 0.1  # a fresh replica's first read: at most ~1 s


@serve.deployment
class Router:
    def __init__(self, deployment: str) -> None:
        self._deployment = deployment
        self._config: RouterConfig | None = None
        self._routing = ""  # routing_id of self._config, echoed in every answer
        self._handles: dict[str, DeploymentHandle[Any]] = {}
        # Serve's handle factory; unit tests replace it (outside Serve it would start Ray).
        self._get_handle: Callable[[str], DeploymentHandle[Any]] = serve.get_app_handle
        self._running: set[str] = set()
        self._pin_refreshed = 0.0  # monotonic time of the last status read for a pin
        self._poller: asyncio.Task[None] | None = None
        self._first_read: asyncio.Task[None] | None = None  # every request before it waits
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._metrics = RouterMetrics()
        self._in_flight = InFlight()
        self._live = 0  # live and pinned requests this replica is answering (not mirrors)
        self._slots = Slots()
        self._governor = MirrorGovernor(time.monotonic)
        self._peaks = QueuePeaks(kept=round(SLOT_WAIT_PEAK_S / STATUS_POLL_S))
        self._recording: RecordingConfig | None = None
        self._recorder: Recorder | None = None
        logger.info("router %s (%s)", deployment, code_origin())

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        config = RouterConfig.model_validate(user_config)
        self._config, self._routing = config, routing_id(config.targets)
        self._recorder = replace_recorder(
            self._recorder, self._recording, config.recording, self._deployment
        )
        self._recording = config.recording
        self._governor.mirroring(mirrored(config, self._running))  # a new one ramps from 0
        logger.info(
            "router %s targets %s fallback %s",
            self._deployment,
            [t.model_dump() for t in config.targets],
            [t.model_dump() for t in config.fallback],
        )

    def _handle(self, app: str) -> DeploymentHandle[Any]:
        # Normally made by `_prepare_handles` as soon as the app is seen RUNNING; made here when
        # a request comes first (a blocking call to Serve's controller, on the event loop).
        if app not in self._handles:
            self._handles[app] = self._get_handle(app)
        return self._handles[app]

    async def _prepare_handles(self) -> None:
        """Handles to versions newly seen RUNNING, made in a thread: getting one asks Serve's
        controller, which would otherwise stall every request in flight on this replica the
        first time a canary's candidate is routed to."""
        for app in sorted(self._running - self._handles.keys()):
            try:
                self._handles[app] = await asyncio.to_thread(self._get_handle, app)
            except Exception:  # the first request makes it, or says why
                logger.exception("router %s could not get a handle to %s", self._deployment, app)

    async def _read_status(self) -> dict[str, str]:
        apps = sorted(self._config.apps) if self._config else []
        return await asyncio.to_thread(app_statuses, apps)

    async def _refresh(self) -> bool:
        """Read Serve's status; True when an application is DEPLOYING that this replica has
        never seen RUNNING (it cannot tell yet whether it serves)."""
        try:
            statuses = await self._read_status()
        except Exception:  # keep the last known set; the next read retries
            logger.exception("router %s could not read Serve status", self._deployment)
            return False
        self._running = routable(self._running, statuses)
        self._governor.mirroring(mirrored(self._config, self._running))
        await self._prepare_handles()
        return any(s == "DEPLOYING" and a not in self._running for a, s in statuses.items())

    async def _first_refresh(self) -> None:
        """The first read. Right after a config PUT, Serve reports every application DEPLOYING
        until its next control loop (about 0.1 s), changed or not, and a fresh replica has no
        earlier read to tell one that serves from one still starting: read again, briefly."""
        for _ in range(FIRST_READ_TRIES):
            if not await self._refresh():
                return
            await asyncio.sleep(FIRST_READ_RETRY_S)

    async def _poll_status(self, first: asyncio.Task[None]) -> None:
        await first
        while True:
            await asyncio.sleep(STATUS_POLL_S)
            await self._refresh()
            try:
                self._export_queues()
            except Exception:  # a metrics failure must not stop the status poll
                logger.exception("router %s could not export its queues", self._deployment)

    def _export_queues(self) -> None:
        """Each weighted version's longest estimated wait for a slot of the last
        SLOT_WAIT_PEAK_S (METRIC_SLOT_WAIT). Called every STATUS_POLL_S."""
        if self._config is not None:
            for target, peak in self._peaks.estimate(self._config.targets, self._in_flight):
                self._metrics.queue_now(self._deployment, target, peak)

    async def _refresh_for_pin(self) -> None:
        """Read Serve's status now for a pin to a version not seen RUNNING, at most every
        PIN_REFRESH_S: a read is a call to Serve's controller (and a token, though signed, may
        be replayed until it expires)."""
        now = time.monotonic()
        if now - self._pin_refreshed >= PIN_REFRESH_S:
            self._pin_refreshed = now
            await self._refresh()

    async def _ensure_poller(self) -> None:
        # The first requests must not wait a whole poll period, nor be told no version runs
        # before the first read of Serve's status ends: every request that arrives while it is
        # under way waits for it (only the first used to: a route handed to a fresh router
        # answered 11 of 200 requests 503, bench/route_handover.py).
        if self._poller is None:
            loop = asyncio.get_running_loop()
            self._first_read = loop.create_task(self._first_refresh())
            self._poller = loop.create_task(self._poll_status(self._first_read))
        first = self._first_read
        if first is not None and not first.done():
            await asyncio.shield(first)

    async def __call__(self, request: Request) -> JSONResponse:
        recorder = self._recorder
        if recorder is None or not recorder.sampled(random.random()):
            return await self._answer(request)
        headers, config = request.headers, self._config
        # Replays and smoke hooks are not live traffic (an unauthenticated pin header is).
        if REPLAY_HEADER in headers or (config is not None and authentic(config, headers)):
            return await self._answer(request)
        arrived, started = time.time(), time.perf_counter()
        try:
            response = await self._answer(request)
        except Exception:
            await self._record(recorder, request, arrived, started, None)
            raise
        await self._record(recorder, request, arrived, started, response)
        return response

    async def _record(
        self,
        recorder: Recorder,
        request: Request,
        arrived: float,
        started: float,
        response: JSONResponse | None,
    ) -> None:
        """Hand the exchange to the recorder's queue: no waiting for the sink, never raises."""
        try:
            if not recorder.offer(await exchange_of(request, arrived, started, response)):
                self._metrics.recording_dropped.inc(tags={"serveops_deployment": self._deployment})
        except Exception:
            logger.exception("router %s could not record a request", self._deployment)

    def recording_stats(self) -> dict[str, Any]:
        """Recorded, dropped (queue full) and failed writes of this replica, and its files."""
        if self._recorder is None:
            return {"enabled": False}
        return {"enabled": True, **dataclasses.asdict(self._recorder.stats())}

    def __del__(self) -> None:
        # Serve calls this on a graceful shutdown: write what is queued.
        recorder = getattr(self, "_recorder", None)
        if recorder is not None:
            recorder.close(timeout_s=2.0)

    async def _answer(self, request: Request) -> JSONResponse:
        await self._ensure_poller()
        config, routing = self._config, self._routing
        if config is None:
            return answers.error(503, "router has no configuration yet", None)
        # A request the controller pinned (a smoke hook's, token checked) goes to its version,
        # weight or not, and is counted apart. The controller may see the candidate RUNNING
        # before this router's poll does: read again.
        if awaits_status(config, self._running, request.headers):
            await self._refresh_for_pin()
        target = pinned(config, self._running, request.headers)
        traffic = "live" if target is None else "pinned"
        if target is None:
            target = choose(config, self._running, request.headers, random.random())
        if target is None:
            return answers.error(503, f"no running version of {self._deployment}", None)
        replica_full = self._live >= ROUTER_SHED_AT
        if replica_full:
            admission = Admission(None, target)
        else:
            admission = admit(
                config, self._running, target, self._in_flight, movable(config, traffic)
            )
        if admission.full is not None:
            counter = self._metrics.overflow if admission.moved else self._metrics.shed
            self._metrics.count(counter, self._deployment, admission.full, traffic)
        if admission.target is None:
            why = (
                f"this router replica is answering {self._live} requests"
                if replica_full
                else self._in_flight.why_full(target, wait_budget_s(config))
            )
            return answers.shed(target, why)
        target = admission.target
        try:
            payload = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return answers.error(400, "request body is not valid JSON", target)
        started = time.perf_counter()
        tried = [target]  # the versions it went to: two if it was moved at its queue deadline
        self._live += 1
        try:
            call = self._sent(tried, payload, traffic, config)
            result = await asyncio.wait_for(call, timeout=config.timeout_s)
        except SlotDeadline as late:  # could no longer be answered in time: shed, as above
            self._metrics.count(self._metrics.shed, self._deployment, tried[-1], traffic)
            return answers.shed(tried[-1], f"no slot in {late.waited:.1f}s, too late to answer")
        except TimeoutError:
            self._metrics.record(self._deployment, tried[-1], traffic, 504, started)
            return answers.timed_out(tried[-1], config.timeout_s)
        except Exception:  # reaches the client as Serve's 500, as before; counted as an error
            self._metrics.record(self._deployment, tried[-1], traffic, 500, started)
            raise
        finally:
            self._live -= 1
        target = tried[-1]
        status, body = result["status"], result["body"]
        self._metrics.record(self._deployment, target, traffic, status, started)
        if traffic == "live":
            latency_ms = (time.perf_counter() - started) * 1000.0
            self._governor.observe(latency_ms, self._in_flight.queued(target))
            self._send_mirrors(config, payload, body)
        headers = answers.headers(self._deployment, target)
        headers[ROUTING_HEADER] = routing
        if config.ab is not None and target.app in config.ab.variants:
            headers[VARIANT_HEADER] = config.ab.variants[target.app]
        return JSONResponse(body, status_code=status, headers=headers)

    async def _sent(
        self, tried: list[Target], payload: Any, traffic: str, config: RouterConfig
    ) -> Any:
        """The answer of `tried[0]`, or if its queue deadline passed in a canary step, of another
        version with time to answer (`second_chance`: appended to `tried`, counted as moved)."""
        sent, target = time.perf_counter(), tried[0]
        self._in_flight.acquire(target.app)
        try:
            return await self._call(target, payload, traffic, config.timeout_s)
        except SlotDeadline:
            left = config.timeout_s - (time.perf_counter() - sent)
            other = None
            if movable(config, traffic):
                other = second_chance(config, self._running, target, self._in_flight, left)
            if other is None:
                raise
        finally:
            self._in_flight.release(target.app)
        self._metrics.count(self._metrics.overflow, self._deployment, target, traffic)
        tried.append(other)
        self._in_flight.acquire(other.app)
        try:
            return await self._call(other, payload, traffic, left)
        finally:
            self._in_flight.release(other.app)

    async def _call(self, target: Target, payload: Any, traffic: str, timeout_s: float) -> Any:
        """The version's answer, once one of its `max_running` slots is free (the wait counts
        against the caller's timeout, and is counted, also when the timeout or
        `queue_deadline_s` ends it: then `SlotDeadline`)."""
        queued = time.perf_counter()
        deadline = functools.partial(self._in_flight.deadline_s, target.app, timeout_s)
        try:
            waited = await self._slots.acquire(target.app, target.max_running, deadline)
        except (asyncio.CancelledError, SlotDeadline):  # out of the queue: the wait counts
            self._metrics.waited(self._deployment, target, traffic, time.perf_counter() - queued)
            raise
        self._metrics.waited(self._deployment, target, traffic, waited)
        served = time.perf_counter()  # the version's own time starts (METRIC_SERVICE)
        slotted = target.max_running is not None
        token = self._in_flight.hold(target.app) if slotted else 0  # how fast the queue drains
        answered = False
        try:
            answer = await self._handle(target.app).predict.remote(payload)
            answered = True
            return answer
        finally:
            self._metrics.served(self._deployment, target, traffic, served)
            if slotted:
                self._in_flight.unhold(target.app, token, answered)
                self._slots.release(target.app)

    def _send_mirrors(self, config: RouterConfig, payload: Any, served: Any) -> None:
        """Copies of a live request to the shadow versions the config asks for, as tasks the
        answer never waits on; unless the governor's share says no (the stable version under
        pressure, or a new shadow version's ramp) or the shadow version is full: then
        dropped, and counted."""
        governor = self._governor
        for shadow in mirrors(config, self._running, random.random()):
            full = self._in_flight.full(shadow, wait_budget_s(config))
            if reason := governor.why_unsent(full, random.random()):
                self._metrics.mirror_unsent(self._deployment, shadow, reason)
                continue
            self._in_flight.acquire(shadow.app)
            task = asyncio.get_running_loop().create_task(
                self._mirror(shadow, payload, served, config.timeout_s)
            )
            self._shadow_tasks.add(task)
            task.add_done_callback(self._shadow_tasks.discard)

    def pressure_stats(self) -> dict[str, Any]:
        """The mirror governor's share and what it judges by, and per version application its
        queue here (`queue_view`): for an operator or a bench, through a handle."""
        c, g, held, slots = self._config, self._governor, self._in_flight, self._slots
        queues = {a: dataclasses.asdict(queue_view(held, slots, a)) for a in c.apps} if c else {}
        return {"share": g.share, "latency_ms": g.latency_ms, "baseline_ms": g.baseline_ms,
                "shadow_tasks": len(self._shadow_tasks), "live": self._live,
                "queues": queues}  # fmt: skip

    async def _mirror(self, target: Target, payload: Any, served: Any, timeout_s: float) -> None:
        """Send a copy to a shadow version (its in-flight slot taken by the caller); its answer
        is compared and counted, never returned."""
        started = time.perf_counter()
        status: int | None = 500
        try:
            call = self._call(target, payload, "shadow", timeout_s)
            result = await asyncio.wait_for(call, timeout_s)
            status = int(result["status"])
            self._metrics.agreement(self._deployment, target, result["body"] == served)
        except SlotDeadline:  # its version full after all: unsent, not its error
            status = None
            self._metrics.mirror_unsent(self._deployment, target, "full")
        except TimeoutError:
            status = 504
        except Exception:
            logger.exception("shadow request to %s failed", target.app)
        finally:
            self._in_flight.release(target.app)
            if status is not None:
                self._metrics.record(self._deployment, target, "shadow", status, started)


def build(args: dict[str, Any]) -> Any:
    return Router.bind(args["serveops"]["deployment"])  # type: ignore[attr-defined]

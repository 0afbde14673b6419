"""Open-loop replay of recorded traffic on Locust, used as a library.

Locust is closed loop: a user sends, waits for the answer, then sends again, so a slow server
slows the load down and hides its own slowness (coordinated omission). Here one Locust
`FastHttpUser`, started by a `LocalRunner` in a Locust `Environment`, runs a schedule instead:
request i is sent at `t0 + (ts_i - ts_0) / speed` on the monotonic clock (an absolute schedule,
never "sleep since the last one"), each in its own greenlet, so a stalled server cannot delay
the requests after it. Every request keeps its intended, sent and done times; latency counts
from the intended time. Generator lag (sent - intended) says whether the schedule was kept.

Paired mode sends each request to every target (baseline, candidate, optionally a second
baseline) at the same intended time, in a random order per request. A cap on requests in flight
drops what exceeds it and counts every drop. A request that times out is kept as a censored value
(its latency is at least what was measured). Latencies are kept raw, in float milliseconds:
Locust's own statistics round them.

Importing this module imports Locust, which monkey-patches the process for gevent: import it
only in the process that replays.
"""

from __future__ import annotations

import gc
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, Field

from simulator.traffic import TrafficRecord

ProgressFn = Callable[[int, int], None]
SPIN_S = 0.002  # the last stretch before a due time is spent yielding, not sleeping


class ReplayOptions(BaseModel):
    speed: float = Field(default=1.0, gt=0, description="1 = recorded pace, 10 = ten times faster.")
    max_in_flight: int = Field(default=512, ge=1, description="Cap on requests in flight.")
    timeout_s: float = Field(default=10.0, gt=0, description="Per request; beyond it, censored.")
    max_lag_p99_ms: float = Field(default=5.0, gt=0, description="Above it the run is invalid.")
    seed: int = 0
    keep_bodies: bool = Field(default=True, description="Parse and keep response bodies.")
    start_delay_s: float = Field(default=0.2, ge=0, description="t0 = now + this.")
    shard_index: int = 0
    shard_count: int = 1
    web_ui_port: int | None = None
    nice: int | None = Field(
        default=None,
        description="Set the replaying process's nice value (negative needs privilege): on a "
        "busy machine a higher priority keeps the schedule better.",
    )


class Outcome(BaseModel):
    """One request to one target. Times are seconds after t0 on the monotonic clock."""

    id: str
    target: str
    intended: float
    sent: float | None = None
    done: float | None = None
    status: int | None = None
    latency_ms: float | None = Field(default=None, description="done - intended.")
    service_ms: float | None = Field(default=None, description="done - sent.")
    timed_out: bool = False
    dropped: bool = False
    error: str | None = None
    version: str | None = None
    body: Any = None

    @property
    def lag_ms(self) -> float | None:
        return None if self.sent is None else (self.sent - self.intended) * 1000.0

    @property
    def failed(self) -> bool:
        return self.timed_out or self.status is None or not 200 <= self.status < 400


class ReplayResult(BaseModel):
    targets: dict[str, str]
    paired: bool
    speed: float
    scheduled: int
    started_at: float = Field(description="Wall-clock time of t0 (epoch seconds).")
    duration_s: float
    dropped: dict[str, int]
    timed_out: dict[str, int]
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    valid: bool
    problems: list[str] = Field(default_factory=list)
    outcomes: list[Outcome]

    def by_target(self, name: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.target == name]


def shard_of(key: str, count: int) -> int:
    """Stable shard for a request id (or ordering key): same key, same worker, in any process."""
    import zlib

    return zlib.crc32(key.encode()) % count


def quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    import numpy as np

    return float(np.quantile(np.asarray(values, dtype=float), q))


class _Schedule:
    """The replay plan that the Locust user runs, and the outcomes it gathers."""

    def __init__(
        self,
        records: Sequence[TrafficRecord],
        targets: dict[str, str],
        options: ReplayOptions,
        progress: ProgressFn | None,
    ) -> None:
        import gevent.event  # type: ignore[import-untyped]

        recs = sorted(records, key=lambda r: r.ts)
        if options.shard_count > 1:
            recs = [
                r
                for r in recs
                if shard_of(r.key or r.id, options.shard_count) == options.shard_index
            ]
        self.records = recs
        self.first_ts = min((r.ts for r in records), default=0.0)
        self.bodies = [
            r.body if isinstance(r.body, bytes | str) else json.dumps(r.body).encode()
            for r in self.records
        ]
        self.targets = targets
        self.options = options
        self.progress = progress
        self.outcomes: list[Outcome] = []
        self.in_flight = 0
        self.finished = gevent.event.Event()
        self.t0 = 0.0
        self.t0_wall = 0.0
        self.end = 0.0
        self.rng = random.Random(options.seed)

    def run(self, client: Any) -> None:
        import gevent
        import gevent.pool  # type: ignore[import-untyped]

        opts = self.options
        group = gevent.pool.Group()
        self._warm_up(client)
        # Recorded traffic is millions of objects; a full collection walking them takes tens of
        # milliseconds mid-schedule. Frozen, they are never scanned again.
        gc.collect()
        gc.freeze()
        self.t0 = time.monotonic() + opts.start_delay_s
        self.t0_wall = time.time() + opts.start_delay_s
        names = list(self.targets)
        total = len(self.records)
        step = max(1, total // 200)
        try:
            for i, rec in enumerate(self.records):
                offset = (rec.ts - self.first_ts) / opts.speed
                due = self.t0 + offset
                # Absolute schedule: sleep until just before the due time (the event loop's
                # timers are only about a millisecond exact), then yield until it has come.
                while (wait := due - time.monotonic()) > 0:
                    gevent.sleep(wait - SPIN_S if wait > SPIN_S else 0)
                order = names[:]
                if len(order) > 1:
                    self.rng.shuffle(order)
                for name in order:
                    if self.in_flight >= opts.max_in_flight:
                        self.outcomes.append(
                            Outcome(id=rec.id, target=name, intended=offset, dropped=True)
                        )
                        continue
                    self.in_flight += 1
                    group.spawn(self._send, client, i, name, offset)
                if self.progress is not None and (i % step == 0 or i == total - 1):
                    self.progress(i + 1, total)
            group.join()
        finally:
            gc.unfreeze()
            self.end = time.monotonic() - self.t0
            self.finished.set()

    def _warm_up(self, client: Any) -> None:
        """Open a connection to each target before t0 (Serve's proxy health path; any answer
        will do), so the first scheduled request does not pay for connection set-up."""
        for base in self.targets.values():
            try:
                with client.request(
                    "GET", base.rstrip("/") + "/-/healthz", name="warm-up", catch_response=True
                ) as resp:
                    resp.success()
            except Exception:  # a target that is down shows up in the replay itself
                pass

    def _send(self, client: Any, i: int, target: str, offset: float) -> None:
        rec = self.records[i]
        url = self.targets[target].rstrip("/") + rec.route
        out = Outcome(id=rec.id, target=target, intended=offset)
        t0 = self.t0
        out.sent = time.monotonic() - t0
        try:
            with client.request(
                rec.method,
                url,
                data=self.bodies[i],
                headers={"content-type": "application/json", **rec.headers},
                name=f"{target} {rec.route}",
                catch_response=True,
            ) as resp:
                done = time.monotonic() - t0
                out.done = done
                status = int(resp.status_code or 0)
                error = getattr(resp, "error", None)
                if status == 0:
                    out.status = None
                    out.error = f"{type(error).__name__}: {error}" if error else "no response"
                    out.timed_out = "timeout" in (out.error or "").lower() or (
                        done - (out.sent or 0) >= self.options.timeout_s * 0.999
                    )
                    resp.failure(out.error)
                else:
                    out.status = status
                    out.version = resp.headers.get("x-serveops-version") if resp.headers else None
                    if self.options.keep_bodies and resp.content:
                        try:
                            out.body = json.loads(resp.content)
                        except ValueError:
                            out.body = resp.text
                    if 200 <= status < 400:
                        resp.success()
                    else:
                        resp.failure(f"HTTP {status}")
        except Exception as e:  # a replay keeps going; the failure is recorded per request
            out.done = time.monotonic() - t0
            out.error = f"{type(e).__name__}: {e}"
            out.timed_out = "timeout" in out.error.lower()
        finally:
            self.in_flight -= 1
        if out.done is not None:
            out.latency_ms = (out.done - out.intended) * 1000.0
            out.service_ms = (out.done - (out.sent or out.intended)) * 1000.0
        self.outcomes.append(out)


def _user_class(schedule: _Schedule, host: str) -> type[Any]:
    from locust import FastHttpUser, task
    from locust.exception import StopUser

    opts = schedule.options

    class ReplayUser(FastHttpUser):
        """Runs the schedule once; requests are spawned greenlets sharing its connection pool."""

        abstract = False
        concurrency = opts.max_in_flight
        network_timeout = opts.timeout_s
        connection_timeout = opts.timeout_s
        max_retries = 0
        fixed_count = 1

        def wait_time(self) -> float:
            return 0.0

        @task
        def replay(self) -> None:
            schedule.run(self.client)
            raise StopUser()

    ReplayUser.host = host
    return ReplayUser


def replay(
    records: Sequence[TrafficRecord],
    targets: dict[str, str],
    options: ReplayOptions | None = None,
    progress: ProgressFn | None = None,
) -> ReplayResult:
    """Replay `records` against every target (name -> base URL); paired when more than one."""
    from locust.env import Environment

    opts = options or ReplayOptions()
    if not targets:
        raise ValueError("no targets to replay against")
    notes = []
    if opts.nice is not None:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, opts.nice)
        except OSError as e:
            notes.append(f"could not set nice {opts.nice}: {e}")
    schedule = _Schedule(records, targets, opts, progress)
    user = _user_class(schedule, next(iter(targets.values())))
    env = Environment(user_classes=[user], host=user.host)
    runner = env.create_local_runner()
    web_ui = None
    if opts.web_ui_port is not None:
        web_ui = env.create_web_ui("127.0.0.1", opts.web_ui_port)
    try:
        runner.start(1, spawn_rate=1000)
        while not schedule.finished.wait(timeout=1.0):
            if runner.state in ("stopped", "stopping") and not schedule.finished.is_set():
                raise RuntimeError("the Locust runner stopped before the schedule finished")
    finally:
        runner.quit()
        if web_ui is not None:
            web_ui.stop()  # type: ignore[no-untyped-call]
    result = _result(schedule)
    result.problems += notes
    return result


def _result(schedule: _Schedule) -> ReplayResult:
    opts = schedule.options
    lags = [lag for o in schedule.outcomes if (lag := o.lag_ms) is not None]
    names = list(schedule.targets)
    dropped = {n: sum(1 for o in schedule.outcomes if o.target == n and o.dropped) for n in names}
    timed_out = {
        n: sum(1 for o in schedule.outcomes if o.target == n and o.timed_out) for n in names
    }
    lag_p99 = quantile(lags, 0.99)
    problems = []
    if lag_p99 > opts.max_lag_p99_ms:
        problems.append(
            f"generator lag p99 {lag_p99:.2f} ms exceeds {opts.max_lag_p99_ms} ms: "
            "the load generator did not keep the schedule"
        )
    if any(dropped.values()):
        problems.append(
            f"{sum(dropped.values())} request(s) dropped at the cap of {opts.max_in_flight} in flight"
        )
    order = {(o.id, o.target): o for o in schedule.outcomes}
    outcomes = [order[(r.id, n)] for r in schedule.records for n in names if (r.id, n) in order]
    return ReplayResult(
        targets=schedule.targets,
        paired=len(names) > 1,
        speed=opts.speed,
        scheduled=len(schedule.records),
        started_at=schedule.t0_wall,
        duration_s=schedule.end,
        dropped=dropped,
        timed_out=timed_out,
        lag_p50_ms=quantile(lags, 0.5),
        lag_p99_ms=lag_p99,
        lag_max_ms=max(lags, default=0.0),
        valid=lag_p99 <= opts.max_lag_p99_ms,
        problems=problems,
        outcomes=outcomes,
    )

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

import contextlib
import gc
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from controller.serving.protocol import REPLAY_HEADER
from simulator.traffic import TrafficRecord

ProgressFn = Callable[[int, int], None]
SPIN_S = 0.0015  # the last stretch before a due time is spent yielding, not sleeping...
SPIN_GAP_S = 0.01  # ...when the request is at least this far from the one before it
BEHIND_BATCH = 8  # behind schedule, yield to the sends after this many requests


class StopWhenDecided(BaseModel):
    """Run the sequential judge during a paired replay and stop sending once it decides."""

    thresholds: dict[str, Any] = Field(
        default_factory=dict, description="`simulator.compare.Thresholds` fields."
    )
    baseline: str = Field(default="baseline", description="Target that is the baseline.")
    candidate: str = Field(default="candidate", description="Target that is the candidate.")
    noise: str | None = Field(default=None, description="Second baseline (A/A), if any.")
    check_every_s: float = Field(default=0.25, gt=0, description="How often to look.")


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
    cpu_affinity: list[int] | None = Field(
        default=None,
        description="Pin the replaying process (and its local workers) to these cores, e.g. "
        "the ones kept free of a local Ray.",
    )
    stop_when_decided: StopWhenDecided | None = Field(
        default=None, description="Paired replays: stop once the sequential judge decides."
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
    generator_cpu_s: float = Field(
        default=0.0, description="CPU time of the replaying process from t0 to the end."
    )
    dropped: dict[str, int]
    timed_out: dict[str, int]
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    valid: bool
    problems: list[str] = Field(default_factory=list)
    generator_cpus: list[int] | None = Field(
        default=None, description="Cores the replaying process was pinned to, if any."
    )
    stopped_early: dict[str, Any] | None = Field(
        default=None,
        description="Set when the sequential judge stopped the replay: the look (`after_pairs`), "
        "`decision`, `reason` and `unsent` (requests of the schedule never sent).",
    )
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

        self.all_records = sorted(records, key=lambda r: r.ts)
        self.first_ts = self.all_records[0].ts if self.all_records else 0.0
        self.targets = targets
        self.start_wall: float | None = None  # a t0 shared with other workers, if any
        self.shard(options.shard_index, options.shard_count)
        self.options = options
        self.progress = progress
        self.outcomes: list[_Out] = []
        self.in_flight = 0
        self.finished = gevent.event.Event()
        self.idle = gevent.event.Event()
        self.t0 = 0.0
        self.t0_wall = 0.0
        self.end = 0.0
        self.cpu_s = 0.0
        self.rng = random.Random(options.seed)
        self.stop: dict[str, Any] | None = None  # set by the sequential watcher
        self.unsent = 0

    def shard(self, index: int, count: int) -> None:
        """Keep this shard's requests (by id, or by `key` to keep a key's order) and encode them."""
        recs = self.all_records
        if count > 1:
            recs = [r for r in recs if shard_of(r.key or r.id, count) == index]
        self.records = recs
        self.bodies = [
            r.body if isinstance(r.body, bytes | str) else json.dumps(r.body).encode() for r in recs
        ]
        self.headers = [
            {"content-type": "application/json", **r.headers, REPLAY_HEADER: "1"} for r in recs
        ]
        self.urls = {
            t: [base.rstrip("/") + r.route for r in recs] for t, base in self.targets.items()
        }
        self.names = {t: [f"{t} {r.route}" for r in recs] for t in self.targets}

    def run(self, client: Any) -> None:
        import gevent

        opts = self.options
        watch: Callable[[_Schedule, StopWhenDecided], None] | None = None
        if opts.stop_when_decided is not None:  # imported before t0: it loads SciPy
            from simulator.early_stop import watch
        self._warm_up(client)
        # Recorded traffic is millions of objects; a full collection walking them takes tens of
        # milliseconds mid-schedule. Frozen, they are never scanned again.
        gc.collect()
        gc.freeze()
        self.idle.set()
        if self.start_wall is not None:  # distributed: every worker starts at the same instant
            self.t0_wall = self.start_wall
            self.t0 = time.monotonic() + (self.start_wall - time.time())
        else:
            self.t0 = time.monotonic() + opts.start_delay_s
            self.t0_wall = time.time() + opts.start_delay_s
        names = list(self.targets)
        total = len(self.records)
        step = max(1, total // 200)
        monotonic, sleep, spawn, send = time.monotonic, gevent.sleep, gevent.spawn_raw, self._send
        previous = -1.0
        batch = 0
        cpu0 = time.process_time()
        watcher = None
        if watch is not None and opts.stop_when_decided is not None and len(names) > 1:
            watcher = gevent.spawn(watch, self, opts.stop_when_decided)
        try:
            for i, rec in enumerate(self.records):
                if self.stop is not None:
                    self.unsent = total - i
                    break
                offset = (rec.ts - self.first_ts) / opts.speed
                due = self.t0 + offset
                # Absolute schedule: sleep until just before the due time (the event loop's
                # timers are only about a millisecond exact), then yield until it has come.
                # Spinning costs CPU, so only where requests are sparse enough to afford it.
                spin = SPIN_S if offset - previous >= SPIN_GAP_S else 0.0
                previous = offset
                if due - monotonic() <= 0:
                    # Behind (or exactly on) schedule: still yield every few requests, so the
                    # ones spawned so far go out.
                    batch += 1
                    if batch >= BEHIND_BATCH:
                        batch = 0
                        sleep(0)
                else:
                    batch = 0
                    while (wait := due - monotonic()) > 0:
                        sleep(wait - spin if wait > spin else (0 if spin else wait))
                order = names
                if len(names) > 1:
                    order = names[:]
                    self.rng.shuffle(order)
                for name in order:
                    if self.in_flight >= opts.max_in_flight:
                        self.outcomes.append(_Out(i, name, offset, dropped=True))
                        continue
                    self.in_flight += 1
                    self.idle.clear()
                    spawn(send, client, i, name, offset)
                if self.progress is not None and (i % step == 0 or i == total - 1):
                    self.progress(i + 1, total)
            self.idle.wait()
        finally:
            if watcher is not None:
                watcher.kill()
            gc.unfreeze()
            self.end = time.monotonic() - self.t0
            self.cpu_s = time.process_time() - cpu0
            self.finished.set()

    def _warm_up(self, client: Any) -> None:
        """Open a connection to each target before t0 (Serve's proxy health path; any answer
        will do), so the first scheduled request does not pay for connection set-up."""
        for base in self.targets.values():
            # A target that is down shows up in the replay itself.
            with contextlib.suppress(Exception):
                client.request("GET", base.rstrip("/") + "/-/healthz", name="warm-up")

    def _send(self, client: Any, i: int, target: str, offset: float) -> None:
        rec = self.records[i]
        out = _Out(i, target, offset)
        t0 = self.t0
        out.sent = time.monotonic() - t0
        try:
            # Without catch_response, Locust fires its request event itself, failures included.
            resp = client.request(
                rec.method,
                self.urls[target][i],
                data=self.bodies[i],
                headers=self.headers[i],
                name=self.names[target][i],
            )
            out.done = time.monotonic() - t0
            status = int(resp.status_code or 0)
            if status == 0:
                error = getattr(resp, "error", None)
                out.error = f"{type(error).__name__}: {error}" if error else "no response"
                out.timed_out = (
                    "timeout" in out.error.lower()
                    or "timed out" in out.error
                    or (out.done - out.sent >= self.options.timeout_s * 0.999)
                )
            else:
                out.status = status
                headers = resp.headers
                out.version = headers.get("x-serveops-version") if headers else None
                if self.options.keep_bodies:
                    content = resp.content
                    if content:
                        try:
                            out.body = json.loads(content)
                        except ValueError:
                            out.body = resp.text
        except Exception as e:  # a replay keeps going; the failure is recorded per request
            out.done = time.monotonic() - t0
            out.error = f"{type(e).__name__}: {e}"
            out.timed_out = "timeout" in out.error.lower()
        finally:
            self.outcomes.append(out)
            self.in_flight -= 1
            if self.in_flight == 0:
                self.idle.set()

    def outcome(self, o: _Out) -> Outcome:
        """The public record of one request, built after the run (never on the hot path)."""
        done = o.done
        return Outcome.model_construct(
            id=self.records[o.i].id,
            target=o.target,
            intended=o.intended,
            sent=o.sent,
            done=done,
            status=o.status,
            latency_ms=None if done is None else (done - o.intended) * 1000.0,
            service_ms=None if done is None or o.sent is None else (done - o.sent) * 1000.0,
            timed_out=o.timed_out,
            dropped=o.dropped,
            error=o.error,
            version=o.version,
            body=o.body,
        )


class _Out:
    """What the hot path fills in for one request: plain slots, no validation."""

    __slots__ = (
        "body", "done", "dropped", "error", "i", "intended", "sent", "status", "target",
        "timed_out", "version",
    )  # fmt: skip

    def __init__(self, i: int, target: str, intended: float, dropped: bool = False) -> None:
        self.i = i
        self.target = target
        self.intended = intended
        self.dropped = dropped
        self.sent: float | None = None
        self.done: float | None = None
        self.status: int | None = None
        self.error: str | None = None
        self.timed_out = False
        self.version: str | None = None
        self.body: Any = None


def _user_class(schedule: _Schedule, host: str, wait_for: Any = None) -> type[Any]:
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

        def wait_time(self) -> float:
            return 0.0

        @task
        def replay(self) -> None:
            if wait_for is not None:  # a worker: its shard and the shared t0 come first
                wait_for.wait()
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
        runner.start(1, spawn_rate=1)
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
    rank = {n: k for k, n in enumerate(schedule.targets)}
    ordered = sorted(schedule.outcomes, key=lambda o: (o.i, rank[o.target]))
    return summarize(
        [schedule.outcome(o) for o in ordered],
        targets=schedule.targets,
        options=schedule.options,
        scheduled=len(schedule.records),
        started_at=schedule.t0_wall,
        duration_s=schedule.end,
        cpu_s=schedule.cpu_s,
        stopped_early=(
            None if schedule.stop is None else {**schedule.stop, "unsent": schedule.unsent}
        ),
    )


def summarize(
    outcomes: list[Outcome],
    *,
    targets: dict[str, str],
    options: ReplayOptions,
    scheduled: int,
    started_at: float,
    duration_s: float,
    cpu_s: float,
    stopped_early: dict[str, Any] | None = None,
) -> ReplayResult:
    """Lag, drops and timeouts over `outcomes` (in schedule order), and the run's validity."""
    lags = [lag for o in outcomes if (lag := o.lag_ms) is not None]
    names = list(targets)
    dropped = {n: sum(1 for o in outcomes if o.target == n and o.dropped) for n in names}
    timed_out = {n: sum(1 for o in outcomes if o.target == n and o.timed_out) for n in names}
    lag_p99 = quantile(lags, 0.99)
    problems = []
    if lag_p99 > options.max_lag_p99_ms:
        problems.append(
            f"generator lag p99 {lag_p99:.2f} ms exceeds {options.max_lag_p99_ms} ms: "
            "the load generator did not keep the schedule"
        )
    capped = sum(1 for o in outcomes if o.dropped and not (o.error or "").startswith("not sent"))
    if capped:
        problems.append(
            f"{capped} request(s) dropped at the cap of {options.max_in_flight} in flight"
        )
    return ReplayResult(
        targets=targets,
        paired=len(names) > 1,
        speed=options.speed,
        scheduled=scheduled,
        started_at=started_at,
        duration_s=duration_s,
        generator_cpu_s=cpu_s,
        dropped=dropped,
        timed_out=timed_out,
        lag_p50_ms=quantile(lags, 0.5),
        lag_p99_ms=lag_p99,
        lag_max_ms=max(lags, default=0.0),
        valid=lag_p99 <= options.max_lag_p99_ms,
        problems=problems,
        stopped_early=stopped_early,
        outcomes=outcomes,
    )


# --- distributed: Locust master/worker ---------------------------------------------------------

SHARD_MESSAGE = "serveops_shard"


def replay_worker(
    records: Sequence[TrafficRecord],
    targets: dict[str, str],
    options: ReplayOptions,
    master_host: str,
    master_port: int,
) -> ReplayResult:
    """A Locust worker: waits for the master to assign its shard and the shared wall-clock t0,
    then replays that shard on its own absolute schedule."""
    import gevent.event
    from locust.env import Environment

    schedule = _Schedule(records, targets, options, None)
    assigned = gevent.event.Event()
    user = _user_class(schedule, next(iter(targets.values())), wait_for=assigned)
    env = Environment(user_classes=[user], host=user.host)
    runner = env.create_worker_runner(master_host, master_port)

    def on_shard(environment: Any, msg: Any, **_kw: Any) -> None:
        schedule.shard(int(msg.data["index"]), int(msg.data["count"]))
        schedule.start_wall = float(msg.data["t0_wall"])
        assigned.set()

    runner.register_message(SHARD_MESSAGE, on_shard)
    try:
        schedule.finished.wait()
    finally:
        runner.quit()
    return _result(schedule)


def replay_master(
    traffic_path: str,
    targets: dict[str, str],
    options: ReplayOptions,
    workers: int,
    out_dir: str,
    *,
    ready_timeout_s: float = 60.0,
) -> ReplayResult:
    """A Locust master with `workers` worker processes on this machine; shards by request id.

    Workers on other machines can join the same master (`python -m simulator.replay_process
    --worker --master-host H --master-port P ...`); here they are started as child processes.
    """
    import socket
    import subprocess
    import sys

    import gevent
    from locust.env import Environment

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    placeholder = _Schedule([], targets, options, None)
    user = _user_class(placeholder, next(iter(targets.values())))
    env = Environment(user_classes=[user], host=user.host)
    master = env.create_master_runner("127.0.0.1", port)
    outs = [f"{out_dir}/worker-{k}.json" for k in range(workers)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "simulator.replay_process",
                "--worker",
                "--master-port",
                str(port),
                "--traffic",
                traffic_path,
                "--targets",
                json.dumps(targets),
                "--options",
                options.model_dump_json(),
                "--out",
                out,
            ],
        )
        for out in outs
    ]
    try:
        deadline = time.monotonic() + ready_timeout_s
        while len(master.clients.ready) < workers:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{len(master.clients.ready)} of {workers} workers connected")
            gevent.sleep(0.1)
        t0_wall = time.time() + 1.0 + options.start_delay_s
        for k, client in enumerate(sorted(c.id for c in master.clients.ready)):
            master.send_message(
                SHARD_MESSAGE, {"index": k, "count": workers, "t0_wall": t0_wall}, client_id=client
            )
        master.start(workers, spawn_rate=workers)
        while any(p.poll() is None for p in procs):
            gevent.sleep(0.2)
        if any(p.returncode != 0 for p in procs):
            raise RuntimeError("a replay worker failed")
    finally:
        master.quit()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    parts = [ReplayResult.model_validate_json(Path(out).read_text()) for out in outs]
    return merge(parts, targets, options)


def merge(
    parts: list[ReplayResult], targets: dict[str, str], options: ReplayOptions
) -> ReplayResult:
    """One result from the shards of a distributed replay (they share t0)."""
    rank = {n: k for k, n in enumerate(targets)}
    outcomes = sorted(
        (o for p in parts for o in p.outcomes), key=lambda o: (o.intended, o.id, rank[o.target])
    )
    return summarize(
        outcomes,
        targets=targets,
        options=options,
        scheduled=sum(p.scheduled for p in parts),
        started_at=min((p.started_at for p in parts), default=0.0),
        duration_s=max((p.duration_s for p in parts), default=0.0),
        cpu_s=sum(p.generator_cpu_s for p in parts),
    )

"""The open-loop schedule a replay runs: request i is sent at `t0 + (ts_i - ts_0) / speed` on the
monotonic clock, each in its own greenlet, with a cap on requests in flight; the outcomes it
gathers, and the ReplayResult made of them.

gevent is imported only when a schedule is built or run, so this module is importable without
Locust's monkey-patching (simulator/replay.py runs it on a Locust user).
"""

from __future__ import annotations

import contextlib
import gc
import json
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from controller.serving.protocol import REPLAY_HEADER
from simulator.results import (
    Outcome,
    ReplayOptions,
    ReplayResult,
    StopWhenDecided,
    shard_of,
    summarize,
)
from simulator.traffic import TrafficRecord

ProgressFn = Callable[[int, int], None]
SPIN_S = 0.0015  # the last stretch before a due time is spent yielding, not sleeping...
SPIN_GAP_S = 0.01  # ...when the request is at least this far from the one before it
BEHIND_BATCH = 8  # behind schedule, yield to the sends after this many requests


class Schedule:
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
        watch: Callable[[Schedule, StopWhenDecided], None] | None = None
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


def schedule_result(schedule: Schedule) -> ReplayResult:
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

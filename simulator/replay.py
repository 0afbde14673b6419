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
only in the process that replays. What a replay produces (options, outcomes, the result) is in
simulator/results.py, importable anywhere; the schedule the Locust user runs is in
simulator/schedule.py, and the master with local worker processes in simulator/replay_workers.py.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from simulator.results import (
    ReplayOptions,
    ReplayResult,
)
from simulator.schedule import ProgressFn, Schedule, schedule_result
from simulator.traffic import TrafficRecord


def user_class(schedule: Schedule, host: str, wait_for: Any = None) -> type[Any]:
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
    schedule = Schedule(records, targets, opts, progress)
    user = user_class(schedule, next(iter(targets.values())))
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
    result = schedule_result(schedule)
    result.problems += notes
    return result

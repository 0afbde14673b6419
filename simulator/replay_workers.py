"""A replay sharded by request id over Locust worker processes on this machine (`replay_master`),
and the worker each one runs (`replay_worker`); workers on other hosts: simulator/distributed.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulator.replay import user_class
from simulator.results import (
    ReplayOptions,
    ReplayResult,
    merge,
)
from simulator.schedule import Schedule, schedule_result
from simulator.traffic import TrafficRecord

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
    import gevent.event  # type: ignore[import-untyped]
    from locust.env import Environment

    schedule = Schedule(records, targets, options, None)
    assigned = gevent.event.Event()
    user = user_class(schedule, next(iter(targets.values())), wait_for=assigned)
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
    return schedule_result(schedule)


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
    placeholder = Schedule([], targets, options, None)
    user = user_class(placeholder, next(iter(targets.values())))
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

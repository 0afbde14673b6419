"""A replay spread over machines: a Locust master that other hosts' workers join over TCP.

`serveops replay FILE --url U --master --expect-workers N` runs `run_master`; on each load
machine `serveops replay-worker FILE --master-host H` runs `run_worker`. Both hold the same
traffic (the master checks a digest of it). The master waits for N workers (or
`ready_timeout_s`, then shards over those present and says so), sends each its shard (by
request id, as local workers), the targets, the options and one wall-clock t0 shared by all;
each worker replays its shard on the absolute schedule and sends its outcomes back over the
same Locust connection, in chunks. A worker that joins after the start gets nothing to do and
is reported; a worker that goes missing (no heartbeat) or sends nothing back before the
deadline is reported lost, and every request of its shard is counted as not sent (a dropped
outcome with error `not sent: worker ... lost`), so the run is invalid rather than short.

Importing this module imports Locust (gevent patches): only in the replaying process.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

from simulator.replay import user_class
from simulator.results import Outcome, ReplayOptions, ReplayResult, merge, shard_of, summarize
from simulator.schedule import Schedule, schedule_result
from simulator.traffic import TrafficRecord

SHARD = "serveops_remote_shard"
RESULT = "serveops_remote_result"
UNNEEDED = "serveops_remote_unneeded"
CHUNK = 2000  # outcomes per result message
MAX_WORKERS = 1024
MAX_RESULT_BYTES = 1 << 30  # what one worker may send back (about 2 million outcomes)


class Collector:
    """A worker's result arriving in chunks, with a size cap: a worker sending more than
    `limit` bytes is cut off and reported (its shard then counts as not sent)."""

    def __init__(self, limit: int = MAX_RESULT_BYTES) -> None:
        self.limit = limit
        self.parts: dict[str, list[str]] = {}
        self.size: dict[str, int] = {}
        self.done: set[str] = set()
        self.refused: dict[str, str] = {}

    def add(self, node: str, chunk: Any, last: Any) -> None:
        if node in self.refused or node in self.done:
            return
        if not isinstance(chunk, str):
            self.refused[node] = "sent a malformed result"
            return
        self.size[node] = self.size.get(node, 0) + len(chunk)
        if self.size[node] > self.limit:
            self.refused[node] = f"sent more than {self.limit} bytes of results"
            self.parts.pop(node, None)
            return
        self.parts.setdefault(node, []).append(chunk)
        if last is True:
            self.done.add(node)

    def result(self, node: str) -> ReplayResult:
        return ReplayResult.model_validate_json("".join(self.parts[node]))


def digest(records: Sequence[TrafficRecord]) -> str:
    """What master and workers must agree on: every request's id and time, in schedule order."""
    h = hashlib.sha256()
    for r in sorted(records, key=lambda r: (r.ts, r.id)):
        h.update(f"{r.id}\t{r.ts!r}\t{r.route}\n".encode())
    return h.hexdigest()


def _not_sent(
    records: Sequence[TrafficRecord], targets: dict[str, str], options: ReplayOptions,
    index: int, count: int, why: str,
) -> list[Outcome]:  # fmt: skip
    first = min((r.ts for r in records), default=0.0)
    return [
        Outcome(id=r.id, target=t, intended=(r.ts - first) / options.speed, dropped=True,
                error=f"not sent: {why}")
        for r in sorted(records, key=lambda r: r.ts)
        if shard_of(r.key or r.id, count) == index
        for t in targets
    ]  # fmt: skip


def _lost_shard(
    records: Sequence[TrafficRecord], targets: dict[str, str], options: ReplayOptions,
    index: int, count: int, why: str, t0_wall: float,
) -> ReplayResult:  # fmt: skip
    scheduled = sum(1 for r in records if shard_of(r.key or r.id, count) == index)
    return summarize(
        _not_sent(records, targets, options, index, count, why), targets=targets,
        options=options, scheduled=scheduled, started_at=t0_wall, duration_s=0.0, cpu_s=0.0,
    )  # fmt: skip


def _only_shard(
    result: ReplayResult, records: Sequence[TrafficRecord], targets: dict[str, str],
    index: int, count: int,
) -> ReplayResult:  # fmt: skip
    """A worker's outcomes, kept only for its own shard's requests and the run's targets, each
    (request, target) once: a confused or hostile worker cannot add or double requests."""
    mine = {r.id for r in records if shard_of(r.key or r.id, count) == index}
    seen: set[tuple[str, str]] = set()
    kept = []
    for o in result.outcomes:
        key = (o.id, o.target)
        if o.id in mine and o.target in targets and key not in seen:
            seen.add(key)
            kept.append(o)
    return result.model_copy(update={"outcomes": kept})


def run_master(
    records: Sequence[TrafficRecord],
    targets: dict[str, str],
    options: ReplayOptions,
    *,
    bind_host: str,
    port: int,
    expect_workers: int,
    ready_timeout_s: float = 120.0,
    grace_s: float = 30.0,
) -> ReplayResult:
    """Serve a replay to `expect_workers` remote workers and merge what they send back."""
    import gevent  # type: ignore[import-untyped]
    from locust.env import Environment

    if not 1 <= expect_workers <= MAX_WORKERS:
        raise ValueError(f"--expect-workers must be between 1 and {MAX_WORKERS}")
    placeholder = Schedule([], targets, options, None)
    user = user_class(placeholder, next(iter(targets.values())))
    env = Environment(user_classes=[user], host=user.host)
    master = env.create_master_runner(bind_host, port)
    collected = Collector()
    done = collected.done
    problems: list[str] = []
    started = False

    def on_result(environment: Any, msg: Any, **_kw: Any) -> None:
        data = msg.data if isinstance(msg.data, dict) else {}
        collected.add(str(msg.node_id), data.get("chunk"), data.get("last"))

    def on_ready(client_id: str, **_kw: Any) -> None:
        if started:
            problems.append(f"worker {client_id} joined after the start: given nothing to do")
            master.send_message(UNNEEDED, {}, client_id=client_id)

    master.register_message(RESULT, on_result)
    env.events.worker_connect.add_listener(on_ready)  # type: ignore[no-untyped-call]
    try:
        deadline = time.monotonic() + ready_timeout_s
        while len(master.clients.ready) < expect_workers and time.monotonic() < deadline:
            gevent.sleep(0.1)
        ready = sorted(c.id for c in master.clients.ready)
        if not ready:
            raise RuntimeError(
                f"no worker joined the master on {bind_host}:{port} within {ready_timeout_s:g}s"
            )
        if len(ready) < expect_workers:
            problems.append(
                f"{len(ready)} of {expect_workers} workers joined within {ready_timeout_s:g}s; "
                f"sharded over {len(ready)}"
            )
        count = len(ready)
        t0_wall = time.time() + 1.0 + options.start_delay_s
        shard_digest = digest(records)
        for k, client in enumerate(ready):
            master.send_message(
                SHARD,
                {"index": k, "count": count, "t0_wall": t0_wall, "digest": shard_digest,
                 "targets": targets, "options": options.model_dump_json()},
                client_id=client,
            )  # fmt: skip
        started = True
        master.start(count, spawn_rate=count)
        span = (max(r.ts for r in records) - min(r.ts for r in records)) / options.speed
        end_by = time.monotonic() + (t0_wall - time.time()) + span + options.timeout_s + grace_s
        lost: dict[int, str] = {}
        while len(done) + len(lost) < count:
            gevent.sleep(0.2)
            gone = {c.id for c in master.clients.missing} | (
                set(ready) - set(master.clients.keys()) - done
            )
            for k, client in enumerate(ready):
                if k in lost or client in done:
                    continue
                if client in collected.refused:
                    lost[k] = f"worker {client} lost: {collected.refused[client]}"
                elif client in gone:
                    lost[k] = f"worker {client} lost (no heartbeat)"
                elif time.monotonic() > end_by:
                    lost[k] = f"worker {client} sent no result by the deadline"
    finally:
        master.quit()
    results = []
    for k, client in enumerate(ready):
        if k in lost:
            problems.append(f"{lost[k]}: its shard {k + 1}/{count} counted as not sent")
            results.append(_lost_shard(records, targets, options, k, count, lost[k], t0_wall))
            continue
        try:
            results.append(_only_shard(collected.result(client), records, targets, k, count))
        except ValueError as e:  # pydantic's ValidationError included
            why = f"worker {client} lost: its result is not a replay result ({str(e)[:200]})"
            problems.append(f"{why}: its shard {k + 1}/{count} counted as not sent")
            results.append(_lost_shard(records, targets, options, k, count, why, t0_wall))
    merged = merge(results, targets, options)
    merged.problems = problems + merged.problems
    merged.valid = merged.valid and not any("lost" in p or "sent no" in p for p in problems)
    return merged


def run_worker(
    records: Sequence[TrafficRecord],
    master_host: str,
    master_port: int,
    *,
    join_timeout_s: float = 300.0,
) -> ReplayResult | None:
    """Join a master, replay the shard it assigns, send the outcomes back; also return them.

    None if the master had nothing for this worker (it joined after the start)."""
    import gevent.event  # type: ignore[import-untyped]
    from locust import FastHttpUser, task
    from locust.env import Environment
    from locust.exception import StopUser

    local_digest = digest(records)
    holder: dict[str, Any] = {}
    assigned = gevent.event.Event()
    failure: list[str] = []

    class ReplayUser(FastHttpUser):
        abstract = False
        host = "http://127.0.0.1"

        def wait_time(self) -> float:
            return 0.0

        @task
        def replay(self) -> None:
            assigned.wait()
            if "schedule" in holder:
                holder["schedule"].run(self.client)
            raise StopUser()

    env = Environment(user_classes=[ReplayUser], host=ReplayUser.host)
    runner = env.create_worker_runner(master_host, master_port)

    def on_shard(environment: Any, msg: Any, **_kw: Any) -> None:
        data = msg.data
        if data["digest"] != local_digest:
            failure.append("this worker's traffic differs from the master's (digest mismatch)")
            assigned.set()
            return
        options = ReplayOptions.model_validate_json(data["options"])
        targets = dict(data["targets"])
        schedule = Schedule(records, targets, options, None)
        schedule.shard(int(data["index"]), int(data["count"]))
        schedule.start_wall = float(data["t0_wall"])
        ReplayUser.host = next(iter(targets.values()))
        ReplayUser.concurrency = options.max_in_flight
        ReplayUser.network_timeout = options.timeout_s
        ReplayUser.connection_timeout = options.timeout_s
        ReplayUser.max_retries = 0
        holder["schedule"] = schedule
        assigned.set()

    def on_unneeded(environment: Any, msg: Any, **_kw: Any) -> None:
        failure.append("the master started without this worker")
        assigned.set()

    runner.register_message(SHARD, on_shard)
    runner.register_message(UNNEEDED, on_unneeded)
    try:
        if not assigned.wait(timeout=join_timeout_s):
            raise RuntimeError(f"no shard from the master within {join_timeout_s:g}s")
        if failure:
            if "started without" in failure[0]:
                return None
            raise RuntimeError(failure[0])
        schedule = holder["schedule"]
        schedule.finished.wait()
        result = schedule_result(schedule)
        body = result.model_dump_json()
        pieces = [body[i : i + CHUNK * 400] for i in range(0, len(body), CHUNK * 400)] or [""]
        for k, piece in enumerate(pieces):
            runner.send_message(RESULT, {"chunk": piece, "last": k == len(pieces) - 1})
        gevent.sleep(0.5)  # let the last message leave before the connection closes
        return result
    finally:
        runner.quit()

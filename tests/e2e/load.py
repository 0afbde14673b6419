"""An open request loop for end-to-end tests and benchmarks: requests leave at a fixed rate
whatever the answers take, from one asyncio loop (aiohttp) in a background thread.

A closed loop of threads (one request at a time each) measures the server and the client
together: with 16 threads and Python's GIL the client itself capped the e2e rollout at 32
req/s. Here sending is scheduled on a monotonic clock and each request is a task, so a slow
answer never delays the next request; how late the loop sent against its schedule is recorded
(`send_lag_ms`) to show the client was not the bottleneck, and on each answer (`late_s`), so a
window's p99 can be timed from when requests were due (`Summary.p99_due_ms`): a loop held back
by a busy machine would otherwise leave its wait out of the figures.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from controller.serving.protocol import ROUTING_HEADER, SHED_HEADER, VERSION_HEADER


@dataclass(frozen=True)
class Answer:
    sent_at: float  # wall clock (time.time()) when the request left
    latency_s: float
    status: int  # 0: no HTTP answer (connection error, client timeout)
    version: str | None
    error: str = ""
    routing: str | None = None  # the router's x-serveops-routing: which weights routed it
    shed: bool = False  # a 503 the router answered at once: the version was full
    late_s: float = 0.0  # how late an open loop sent it against its schedule (closed loop: 0)

    @property
    def received_at(self) -> float:
        return self.sent_at + self.latency_s

    @property
    def from_due_s(self) -> float:
        """From when the request was due to its answer: what a client sending on schedule
        waited. A loop held back (its process starved of CPU) sends late, and timing from the
        send would leave that wait out (coordinated omission, in Gil Tene's words)."""
        return self.late_s + self.latency_s


@dataclass
class Summary:
    """Answers to the requests sent in one window of the run."""

    requests: int
    failed: list[Answer]
    seconds: float
    statuses: Counter[int]
    versions: Counter[str]
    p50_ms: float
    p99_ms: float
    shed: int = 0  # of `failed`: 503 at once, the router shedding (not a timeout)
    p99_due_ms: float = 0.0  # p99 timed from when each request was due (`Answer.from_due_s`)

    @property
    def rate(self) -> float:
        """Requests answered 200 per second of the window."""
        return (self.requests - len(self.failed)) / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        return (
            f"{self.requests} requests in {self.seconds:.1f}s ({self.rate:.1f} req/s answered OK), "
            f"failed {len(self.failed)} (shed {self.shed}), statuses {dict(self.statuses)}, versions "
            f"{dict(self.versions)}, latency p50 {self.p50_ms:.0f} ms p99 {self.p99_ms:.0f} ms"
        )


def summarize(answers: Iterable[Answer], since: float, until: float) -> Summary:
    """The answers to requests sent in [since, until) (wall clock)."""
    window = [a for a in answers if since <= a.sent_at < until]
    latencies = sorted(a.latency_s for a in window)
    from_due = sorted(a.from_due_s for a in window)

    def pct(q: float, values: list[float] = latencies) -> float:
        return 1000 * values[min(len(values) - 1, int(q * len(values)))] if values else 0

    return Summary(
        requests=len(window),
        failed=[a for a in window if a.status != 200],
        seconds=until - since,
        statuses=Counter(a.status for a in window),
        versions=Counter(a.version for a in window if a.version),
        p50_ms=pct(0.5),
        p99_ms=pct(0.99),
        shed=sum(a.shed for a in window),
        p99_due_ms=pct(0.99, from_due),
    )


@dataclass
class OpenLoop:
    """POST `body` to `url` at `rate` requests per second until the context exits."""

    url: str
    rate: float
    body: Any
    timeout_s: float = 30.0
    max_connections: int = 512
    answers: list[Answer] = field(default_factory=list)
    send_lag_ms: list[float] = field(default_factory=list)  # how late each request left
    started_at: float = 0.0  # wall clock
    stopped_at: float = 0.0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="open-loop", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> OpenLoop:
        self._thread.start()
        self._ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout_s + 30)
        if self._error is not None:
            raise RuntimeError("the open loop crashed") from self._error

    def summary(self, since: float | None = None, until: float | None = None) -> Summary:
        return summarize(
            list(self.answers), since or self.started_at, until or self.stopped_at or time.time()
        )

    def lag_ms(self, q: float) -> float:
        ordered = sorted(self.send_lag_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as err:  # surfaced by __exit__
            self._error = err
            self._ready.set()

    async def _run(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.max_connections, force_close=False)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        tasks: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            period = 1.0 / self.rate
            begin = time.monotonic()
            self.started_at = time.time()
            self._ready.set()
            n = 0
            while not self._stop.is_set():
                due = begin + n * period
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                late_s = max(0.0, time.monotonic() - due)
                self.send_lag_ms.append(late_s * 1000)
                task = asyncio.create_task(self._one(session, late_s))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
            self.stopped_at = time.time()
            if tasks:
                await asyncio.wait(list(tasks), timeout=self.timeout_s + 5)

    async def _one(self, session: aiohttp.ClientSession, late_s: float = 0.0) -> None:
        """Send one request now, `late_s` after it was due."""
        sent_at, began = time.time(), time.monotonic()
        try:
            async with session.post(self.url, json=self.body) as response:
                text = await response.text()
                status, version = response.status, response.headers.get(VERSION_HEADER)
                routing = response.headers.get(ROUTING_HEADER)
                shed = SHED_HEADER in response.headers
                error = "" if status == 200 else text[:300]
        except (aiohttp.ClientError, TimeoutError) as err:
            status, version, error, routing, shed = 0, None, repr(err)[:300], None, False
        latency = time.monotonic() - began
        self.answers.append(Answer(sent_at, latency, status, version, error, routing, shed, late_s))


def closed_loop(url: str, body: Any, concurrency: int, seconds: float) -> list[Answer]:
    """`concurrency` clients, each sending its next request as soon as its last one is
    answered, for `seconds`: the most the server answers at that concurrency."""

    async def client(session: aiohttp.ClientSession, until: float, out: list[Answer]) -> None:
        while time.monotonic() < until:
            sent_at, began = time.time(), time.monotonic()
            try:
                async with session.post(url, json=body) as response:
                    await response.read()
                    status, version = response.status, response.headers.get(VERSION_HEADER)
            except (aiohttp.ClientError, TimeoutError) as err:
                out.append(Answer(sent_at, time.monotonic() - began, 0, None, repr(err)[:300]))
                continue
            out.append(Answer(sent_at, time.monotonic() - began, status, version))

    async def run() -> list[Answer]:
        out: list[Answer] = []
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=60)
        ) as session:
            until = time.monotonic() + seconds
            await asyncio.gather(*(client(session, until, out) for _ in range(concurrency)))
        return out

    return asyncio.run(run())


class LoadProcess:
    """An `OpenLoop` in a process of its own, so the caller's work (a controller pass holds the
    GIL for a while) never delays a request. Stops when the context exits (or the caller dies:
    it runs until its stdin closes); `answers` and `send_lag_ms` are filled in then."""

    def __init__(self, url: str, rate: float, body: Any, timeout_s: float = 30.0) -> None:
        self.url, self.rate, self.body, self.timeout_s = url, rate, body, timeout_s
        self.answers: list[Answer] = []
        self.send_lag_ms: list[float] = []
        self.started_at = self.stopped_at = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._out = Path(tempfile.mkdtemp(prefix="serveops-load-")) / "answers.json"

    def __enter__(self) -> LoadProcess:
        spec = json.dumps({"url": self.url, "rate": self.rate, "body": self.body,
                           "timeout_s": self.timeout_s, "out": str(self._out)})  # fmt: skip
        root = Path(__file__).resolve().parents[2]
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.load", spec], stdin=subprocess.PIPE, cwd=root
        )
        assert self._proc.stdin is not None
        # The child says when its loop runs (it writes the file's first version).
        deadline = time.monotonic() + 60
        while not self._out.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the load process did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proc is not None
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        self._proc.wait(timeout=self.timeout_s + 60)
        data = json.loads(self._out.read_text())
        self.answers = [Answer(*a) for a in data["answers"]]
        self.send_lag_ms = data["send_lag_ms"]
        self.started_at, self.stopped_at = data["started_at"], data["stopped_at"]
        shutil.rmtree(self._out.parent, ignore_errors=True)

    def summary(self, since: float | None = None, until: float | None = None) -> Summary:
        return summarize(self.answers, since or self.started_at, until or self.stopped_at)

    def lag_ms(self, q: float) -> float:
        ordered = sorted(self.send_lag_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _child(spec_json: str) -> None:
    spec = json.loads(spec_json)
    out = Path(spec["out"])
    loop = OpenLoop(spec["url"], spec["rate"], spec["body"], timeout_s=spec["timeout_s"])
    with loop:
        out.write_text("{}")  # started
        sys.stdin.read()  # until the parent closes the pipe (or dies)
    data = {
        "answers": [dataclasses.astuple(a) for a in loop.answers],
        "send_lag_ms": loop.send_lag_ms,
        "started_at": loop.started_at,
        "stopped_at": loop.stopped_at,
    }
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(out)


if __name__ == "__main__":
    _child(sys.argv[1])

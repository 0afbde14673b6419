"""The router's own queue in front of a version: hand Serve only what its replicas can run.

Serve's handle sends a request to a replica with a free slot (`max_ongoing_requests`); when every
replica is full, the request waits inside the handle, which asks the replicas again after a
back-off growing from 25 ms to 0.5 s (Ray's `RAY_SERVE_ROUTER_RETRY_*_BACKOFF_S`). A slot freed
meanwhile stays idle until some waiter's back-off ends: offered 1.3x the closed-loop saturation,
the router path answered 0.35 to 0.58 of it and shed the rest (bench/overload_recovery.py,
docs/benchmarks.md). So the router keeps `max_running` requests at Serve per version (the
replicas' slots, shared by the router replicas) and queues the rest itself, first in first out:
a slot freed by an answer goes at once to the oldest waiting request, with no polling. The
router's bound on what it holds (`max_in_flight`, shed beyond) is unchanged. A request that
gets no slot while it could still be answered in time leaves the queue (`SlotDeadline`) to be
shed then, not held until its timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable


class SlotDeadline(Exception):
    """No slot came within the time a request could still be answered in; `waited` seconds."""

    def __init__(self, waited: float) -> None:
        super().__init__(f"no slot in {waited:.1f}s")
        self.waited = waited


class Slots:
    """Per application: requests running at Serve, and those waiting for a slot (FIFO)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock  # times the waits
        self._running: dict[str, int] = {}
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}

    def running(self, app: str) -> int:
        return self._running.get(app, 0)

    def waiting(self, app: str) -> int:
        return sum(1 for f in self._waiting.get(app, ()) if not f.done())

    async def acquire(
        self, app: str, limit: int | None, deadline: Callable[[], float] | None = None
    ) -> float:
        """Wait for a slot (`limit` None: none needed); the seconds waited. `deadline()`: how
        long the request may wait in all, read when it queues and again each time that much
        has passed (it may have grown meanwhile); past it, out of the queue with
        `SlotDeadline`. Cancelled while waiting (the request timed out): out of the queue, and
        a slot handed to it just then is passed on."""
        if limit is None:
            return 0.0
        if self._running.get(app, 0) < limit and not self.waiting(app):
            self._running[app] = self._running.get(app, 0) + 1
            return 0.0
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(app, deque()).append(waiter)
        queued = self._clock()
        while not waiter.done():
            left = None if deadline is None else deadline() - (self._clock() - queued)
            if left is not None and left <= 0:
                waiter.cancel()  # out of the queue: release() skips it
                raise SlotDeadline(self._clock() - queued)
            try:
                await asyncio.wait({waiter}, timeout=left)  # leaves the waiter as it is
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self.release(app)  # granted as it was cancelled: the next one gets it
                else:
                    waiter.cancel()
                raise
        return self._clock() - queued

    def release(self, app: str) -> None:
        """An answer came back (or a granted request gave up): hand its slot on."""
        queue = self._waiting.get(app)
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves over; the running count stays
                return
        if queue is not None:
            del self._waiting[app]
        left = self._running.get(app, 0) - 1
        if left > 0:
            self._running[app] = left
        else:
            self._running.pop(app, None)

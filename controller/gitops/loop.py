"""The loop around the pass: wait `requeue_after` (jittered, cut short by a webhook), repeat.

A pass that crashes (a bug, a broken store) is logged, recorded as failed and retried with an
exponential backoff, never in a tight loop.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

from controller.clock import SYSTEM_CLOCK, Clock
from controller.gitops.outcome import PassResult
from controller.gitops.reconciler import Controller

log = logging.getLogger("serveops.controller")


class Wakeup:
    """What ends the loop's wait early: a webhook (reconcile now) or a stop request."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._reason: str | None = None
        self.stopped = False

    def wake(self, reason: str = "webhook") -> None:
        with self._cond:
            self._reason = reason
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()

    def wait(self, timeout: float) -> str:
        """Wait up to `timeout` s; return what triggers the next pass (`poll` on a timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: self._reason is not None or self.stopped, timeout)
            reason, self._reason = self._reason or "poll", None
            return reason


def jittered(seconds: float, jitter: float, rng: random.Random) -> float:
    """`seconds` spread by +-`jitter` (a fraction), so controllers do not poll in lockstep."""
    return max(0.0, seconds * (1 + rng.uniform(-jitter, jitter)))


def run_forever(
    controller: Controller,
    wakeup: Wakeup,
    *,
    jitter: float = 0.1,
    rng: random.Random | None = None,
    on_result: Callable[[PassResult], None] = lambda _r: None,
) -> None:
    """Pass, wait `requeue_after` (jittered, cut short by a webhook), repeat until stopped.
    The lease is given up on the way out."""
    rng = rng or random.Random()
    trigger = "poll"
    try:
        while not wakeup.stopped:
            result = controller.reconcile_once(trigger=trigger)
            on_result(result)
            delay = result.requeue_after
            if wakeup.stopped:
                break
            trigger = wakeup.wait(jittered(delay, jitter, rng))
    finally:
        controller.release()


def run_until_settled(
    controller: Controller,
    *,
    retry: bool = False,
    trigger: str = "sync",
    clock: Clock = SYSTEM_CLOCK,
) -> PassResult:
    """Passes until no apply is under way (what `serveops sync` and `apply` by hand wait for):
    each pass does what Serve allows now; between them the caller, not the pass, waits. A
    rollout in flight does not hold it: its later steps are the controller's."""
    result = controller.reconcile_once(retry=retry, trigger=trigger)
    while result.applying:
        clock.sleep(result.requeue_after)
        result = controller.reconcile_once(trigger=trigger)
    return result

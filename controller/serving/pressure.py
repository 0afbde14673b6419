"""The router under pressure: shed before timing out, and mirror only what the stable can spare.

Pure (a clock is passed in); the router (controller/serving/router.py) holds one `InFlight`, one
`MirrorGovernor` and one `QueuePeaks` per replica.

- Shedding. Every request the router sends to a version is counted in flight until it is
  answered. A version is full when a request admitted now would wait for one of its slots
  (`max_running`) longer than `QUEUE_WAIT_SHARE` of the router's timeout: the wait is what is
  queued ahead times the smoothed time a request holds a slot (before a version's first
  answer, how long its oldest request has held one), divided by the slots (Little's law), so
  the bound follows the model's speed: deep for a fast model, shallow for a slow one.
  `max_in_flight` (from `max_queued_requests`) caps the count whatever the speed, and is the
  only bound of an autoscaled version (no router queue). A request to a full version would
  end as a 504 after `timeout_s`; the router answers it 503 with Retry-After at once instead,
  or, when the rollout splits live traffic between two weighted versions (a canary step),
  sends it to the other one if that one has room (`admit`). A/B and pinned requests never
  move: their version is the point. The wait is an estimate, and a version that slows under
  load makes it short: a request still waiting when a slot could no longer bring its answer
  within the timeout leaves the queue then (`queue_deadline_s`), shed too, not held to a 504.
- Mirroring. Shadow and blue-green preview copies are best-effort. The governor keeps a share
  in [0, 1] of the configured mirrors that is actually sent: it halves (down to 0) while the
  stable version is under pressure (its smoothed latency well above its unloaded latency, or a
  queue forming in front of it: `InFlight.queued`) and grows back slowly (AIMD, as TCP's
  congestion window) once it is not. Mirroring to a version it did not mirror to a moment ago
  starts the share from 0 (`mirroring`; Envoy's slow start for new hosts): a preview's first
  RUNNING second must not double the stable version's work before a queue can show. A mirror
  also goes unsent when its own version is full. Unsent mirrors are counted; a user request
  never waits on a mirror (they are sent after its answer, as tasks).
- Headroom. `QueuePeaks` keeps each weighted version's longest estimated wait of the last few
  seconds, which the router exports for the controller to read before it starts a candidate
  (controller/rollout/headroom.py).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from controller.serving.protocol import RouterConfig, Target
from controller.serving.slots import Slots

# The governor, tuned on a 2-core machine (docs/benchmarks.md, bench/saturation.py).
LATENCY_FACTOR = 1.5  # pressured when the smoothed latency exceeds the unloaded one this much
# ... or when a queue forms: a request waits for one of the router's slots, or (a version with
# no router slots: autoscaled) this share of its max_in_flight is in flight
QUEUE_SHARE = 0.5
EWMA_ALPHA = 0.1  # weight of one answer in the smoothed latency
BASELINE_DRIFT_PER_S = 0.02  # the unloaded latency may rise this share a second (a new model)
ADJUST_EVERY_S = 0.2  # the share changes at most this often
DECREASE = 0.5  # multiplicative decrease under pressure
INCREASE = 0.05  # additive increase otherwise (0 -> 1 in 4 s)
# Shedding: a request may wait for a slot at most this share of the timeout; the rest is for
# the model's own answer. Measured at 0.8 of saturation: a 64-deep count bound shed 6% of a
# rollout's requests in bursts a 5 s wait absorbs (docs/benchmarks.md).
QUEUE_WAIT_SHARE = 0.5
SERVICE_ALPHA = 0.1  # weight of one answer in a version's smoothed time per slot
OWN_TIME_MARGIN = 2.0  # a queued request must leave this many slot times for its answer


class InFlight:
    """Requests this router replica sent to each application and not yet got answered."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._count: dict[str, int] = {}
        self._slot_s: dict[str, float] = {}  # smoothed time a request holds a slot, per app
        # When each request now holding a slot took it, per app: a version not answered yet
        # is at least as slow as its oldest request has been running.
        self._holding: dict[str, dict[int, float]] = {}
        self._tokens = itertools.count()

    def __getitem__(self, app: str) -> int:
        return self._count.get(app, 0)

    def acquire(self, app: str) -> None:
        self._count[app] = self._count.get(app, 0) + 1

    def release(self, app: str) -> None:
        left = self._count.get(app, 0) - 1
        if left > 0:
            self._count[app] = left
        else:
            self._count.pop(app, None)

    def hold(self, app: str) -> int:
        """A request took one of `app`'s slots; the token ends it (`unhold`)."""
        token = next(self._tokens)
        self._holding.setdefault(app, {})[token] = self._clock()
        return token

    def unhold(self, app: str, token: int, answered: bool) -> None:
        """The request left its slot: with its answer (timed into the smoothed time per
        slot), or without one (a timeout or an error: not a measure of the version's speed)."""
        holding = self._holding.get(app, {})
        began = holding.pop(token, None)
        if not holding:
            self._holding.pop(app, None)
        if answered and began is not None:
            self.served(app, self._clock() - began)

    def served(self, app: str, seconds: float) -> None:
        """A request held one of `app`'s slots this long (from its slot to its answer)."""
        held = self._slot_s.get(app)
        self._slot_s[app] = seconds if held is None else held + SERVICE_ALPHA * (seconds - held)

    def deadline_s(self, app: str, timeout_s: float) -> float:
        """How long a request to `app` may wait for a slot (`queue_deadline_s`, from its
        answers' smoothed time)."""
        return queue_deadline_s(timeout_s, self._slot_s.get(app))

    def slot_s(self, app: str) -> float | None:
        """The time a request holds one of `app`'s slots: smoothed over its answers; before
        the first, how long its oldest request has held one (a lower bound); None before
        either."""
        held = self._slot_s.get(app)
        if held is not None:
            return held
        holding = self._holding.get(app)
        return self._clock() - min(holding.values()) if holding else None

    def ahead(self, target: Target) -> int:
        """A request admitted now, and those ahead of it in the router's queue (0 or less: a
        slot is free)."""
        return self[target.app] - (target.max_running or 0) + 1

    def wait_s(self, target: Target) -> float:
        """How long a request admitted now would wait for a slot: those ahead of it in the
        router's queue, served `max_running` at a time. 0 while a slot is free or before any
        request has held one."""
        slots, held, ahead = target.max_running, self.slot_s(target.app), self.ahead(target)
        if not slots or held is None or ahead <= 0:
            return 0.0
        return ahead * held / slots

    def at_cap(self, target: Target) -> bool:
        """The count cap, `max_in_flight`, reached."""
        return target.max_in_flight is not None and self[target.app] >= target.max_in_flight

    def why_full(self, target: Target, wait_budget_s: float) -> str:
        """What `full` found, in words for the 503's message."""
        if self.at_cap(target):
            return f"{target.max_in_flight} requests in flight"
        return (
            f"a {self.wait_s(target):.1f}s wait for a slot ({self.ahead(target)} ahead, "
            f"{self.slot_s(target.app) or 0:.2f}s a slot, {target.max_running} at a time), "
            f"over the {wait_budget_s:g}s allowed"
        )

    def full(self, target: Target, wait_budget_s: float | None = None) -> bool:
        """No room: the count cap reached, or (with a budget) a wait for a slot over it."""
        if self.at_cap(target):
            return True
        return wait_budget_s is not None and self.wait_s(target) > wait_budget_s

    def load(self, target: Target) -> float:
        """Share of its bound in flight (0 without a bound)."""
        return self[target.app] / target.max_in_flight if target.max_in_flight else 0.0

    def queued(self, target: Target) -> bool:
        """A queue stands in front of the version: with router slots, a request waits for one
        (all `max_running` taken); without (an autoscaled version, which queues in Serve's
        handles), `QUEUE_SHARE` of `max_in_flight` in flight. Not a share of the count cap for
        a version with slots: the cap is a memory bound (1,000 queued by default) the time bound
        sheds long before, so half of it would say nothing until hundreds wait."""
        if target.max_running:
            return self[target.app] > target.max_running
        return self.load(target) >= QUEUE_SHARE


@dataclass(frozen=True)
class QueueView:
    """One application's queue in a router replica, as `Router.pressure_stats()` reports it."""

    in_flight: int  # sent to it and not answered: running at Serve or waiting here
    running: int  # in its slots at Serve
    waiting: int  # in the router's queue for a slot
    slot_s: float | None  # smoothed seconds a request holds a slot (`InFlight.slot_s`)


def queue_view(in_flight: InFlight, slots: Slots, app: str) -> QueueView:
    """What `app`'s queue in this router replica holds now."""
    return QueueView(in_flight[app], slots.running(app), slots.waiting(app), in_flight.slot_s(app))


@dataclass(frozen=True)
class Admission:
    """Where one request goes. `target` None: shed (503 at once). `full`: the version that had
    no room (the chosen one), when the request was shed or moved."""

    target: Target | None
    full: Target | None = None

    @property
    def moved(self) -> bool:
        return self.target is not None and self.full is not None


def admit(
    config: RouterConfig, running: set[str], chosen: Target, in_flight: InFlight, movable: bool
) -> Admission:
    """Send `chosen` a request if it has room; else, when `movable`, the least loaded other
    RUNNING target with weight and room; else shed."""
    budget = wait_budget_s(config)
    if not in_flight.full(chosen, budget):
        return Admission(chosen)
    if not movable:
        return Admission(None, chosen)
    return Admission(
        _least_loaded_other(config, running, chosen, in_flight, lambda _: budget), chosen
    )


def second_chance(
    config: RouterConfig, running: set[str], late: Target, in_flight: InFlight, left_s: float
) -> Target | None:
    """Where a live request may go whose queue deadline passed at `late`, with `left_s` of its
    timeout left: the least loaded other weighted RUNNING version whose wait for a slot leaves
    room for its own time (`queue_deadline_s` of what is left), or None (shed). Call it only
    for a request admission could have moved (`movable`)."""

    def budget(t: Target) -> float:
        return min(wait_budget_s(config), queue_deadline_s(left_s, in_flight.slot_s(t.app)))

    return _least_loaded_other(config, running, late, in_flight, budget)


def _least_loaded_other(
    config: RouterConfig,
    running: set[str],
    chosen: Target,
    in_flight: InFlight,
    budget: Callable[[Target], float],
) -> Target | None:
    others = [
        t
        for t in config.targets
        if t.app != chosen.app
        and t.weight > 0
        and t.app in running
        and not in_flight.full(t, budget(t))
    ]
    return min(others, key=in_flight.load) if others else None


def wait_budget_s(config: RouterConfig) -> float:
    """The longest a request may wait for a slot before the router sheds it instead."""
    return config.timeout_s * QUEUE_WAIT_SHARE


def queue_deadline_s(timeout_s: float, slot_s: float | None) -> float:
    """How long a request may wait in the router's queue and still be answered within
    `timeout_s`: the timeout less `OWN_TIME_MARGIN` times the time a slot is held, smoothed
    over the version's answers (its own time, with room for its spread); never less than the
    wait admission allows (`QUEUE_WAIT_SHARE` of the timeout, also the deadline before the
    version's first answer). Past it the request is shed (503), not held to time
    out (504). A version answering in 1.2 s under saturation had 52 requests time out in the
    router's queue without it (docs/benchmarks.md, item 28)."""
    budget = timeout_s * QUEUE_WAIT_SHARE
    if slot_s is None:
        return budget
    return max(budget, timeout_s - OWN_TIME_MARGIN * slot_s)


def movable(config: RouterConfig, traffic: str) -> bool:
    """May a live request go to another version than the one its weights chose? Only between
    the weighted targets of a rollout (a canary step), never for A/B or pinned requests."""
    return traffic == "live" and config.ab is None and config.rollout is not None


class MirrorGovernor:
    """The share of configured mirrors actually sent, from what the stable version's live
    answers show (`observe`). From 0 whenever a new version is mirrored to (`mirroring`)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.share = 1.0
        self.ramping = False  # since a new version was mirrored to, until full or pressured
        self._apps: frozenset[str] = frozenset()  # the versions mirrored to
        self.latency_ms: float | None = None  # smoothed (EWMA)
        self.baseline_ms: float | None = None  # unloaded: the lowest smoothed, drifting up
        self._adjusted = clock()
        self._seen = self._adjusted

    def mirroring(self, apps: frozenset[str]) -> None:
        """The versions the config mirrors to that run now. One that was not among them at the
        last call starts the share from 0: it grows by `INCREASE` per `ADJUST_EVERY_S` of
        answers without pressure, as after a decrease."""
        if apps - self._apps:
            self.share, self.ramping = 0.0, True
        self._apps = apps

    def pressured(self, queued: bool) -> bool:
        if queued:
            return True
        if self.latency_ms is None or self.baseline_ms is None:
            return False
        return self.latency_ms > LATENCY_FACTOR * self.baseline_ms

    def observe(self, latency_ms: float, queued: bool) -> None:
        """One live answer of a stable (weighted) version: its latency, and whether a queue
        stood in front of it when it was answered (`InFlight.queued`)."""
        now = self._clock()
        if self.latency_ms is None:
            self.latency_ms = latency_ms
        else:
            self.latency_ms += EWMA_ALPHA * (latency_ms - self.latency_ms)
        drifted = (
            self.latency_ms
            if self.baseline_ms is None
            else self.baseline_ms * (1 + BASELINE_DRIFT_PER_S * max(0.0, now - self._seen))
        )
        self.baseline_ms = min(drifted, self.latency_ms)
        self._seen = now
        if now - self._adjusted < ADJUST_EVERY_S:
            return
        self._adjusted = now
        if self.pressured(queued):
            self.share = self.share * DECREASE if self.share > INCREASE / 2 else 0.0
            self.ramping = False
        else:
            self.share = min(1.0, self.share + INCREASE)
            self.ramping = self.ramping and self.share < 1.0

    def admit(self, rand: float) -> bool:
        """Send a mirror the config asks for? `rand` in [0, 1)."""
        return rand < self.share

    def why_unsent(self, full: bool, rand: float) -> str:
        """Why a mirror goes unsent, as its counter's `reason`: its version `full`, a new
        version's `ramp`, or the stable version's `pressure`; "" to send it."""
        if full:
            return "full"
        if not self.admit(rand):
            return "ramp" if self.ramping else "pressure"
        return ""


class QueuePeaks:
    """Per weighted version, the longest wait for a slot estimated over the last `kept`
    estimates (`InFlight.wait_s`, one per call of `estimate`): what the router exports for the
    controller to read before it starts a candidate (METRIC_SLOT_WAIT)."""

    def __init__(self, kept: int) -> None:
        self._kept = kept
        # Per app weighted at the last call: its target (the gauge's tags) and recent estimates.
        self._recent: dict[str, tuple[Target, deque[float]]] = {}

    def estimate(self, targets: list[Target], in_flight: InFlight) -> list[tuple[Target, float]]:
        """Take one estimate per target now; each target with its peak, and once with 0 each
        target no longer weighted (a gauge keeps its last value until set: a dashboard would
        show the wait of a version long gone)."""
        apps = {t.app for t in targets}
        peaks = [(self._recent.pop(gone)[0], 0.0) for gone in self._recent.keys() - apps]
        for target in targets:
            _, recent = self._recent.get(target.app, (target, deque(maxlen=self._kept)))
            recent.append(in_flight.wait_s(target))
            self._recent[target.app] = (target, recent)
            peaks.append((target, max(recent)))
        return peaks

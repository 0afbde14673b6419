"""The router under pressure (controller/serving/pressure.py, router.py): it sheds at once with
503 and Retry-After instead of timing out, moves canary traffic to the version with room, and
mirrors only what the stable version can spare. Pure functions, then the router's class driven
outside Serve with fake handles (no Ray)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import pytest
from starlette.requests import Request

from controller.serving import pressure
from controller.serving.pressure import InFlight, MirrorGovernor, admit, movable
from controller.serving.protocol import (
    RETRY_AFTER_S,
    SHED_HEADER,
    SLOT_WAIT_PEAK_S,
    STATUS_POLL_S,
    VERSION_HEADER,
    ABTest,
    RolloutNote,
    RouterConfig,
    Target,
)
from controller.serving.routing import mirrored

STABLE = Target(app="fraud--v1", version="1", weight=90, max_in_flight=2)
CANDIDATE = Target(app="fraud--v2", version="2", weight=10, max_in_flight=2)
CANARY_NOTE = RolloutNote(strategy="canary", phase="steps", candidate="2")


def canary(**update: Any) -> RouterConfig:
    fields: dict[str, Any] = {"targets": [STABLE, CANDIDATE], "rollout": CANARY_NOTE}
    return RouterConfig(deployment="fraud", **{**fields, "timeout_s": 10, **update})


def loaded(**counts: int) -> InFlight:
    in_flight = InFlight()
    for app, n in counts.items():
        for _ in range(n):
            in_flight.acquire(app.replace("_", "--"))
    return in_flight


RUNNING = {STABLE.app, CANDIDATE.app}


def test_in_flight_counts_until_answered() -> None:
    in_flight = InFlight()
    in_flight.acquire("a")
    in_flight.acquire("a")
    assert (in_flight["a"], in_flight.full(STABLE.model_copy(update={"app": "a"}))) == (2, True)
    in_flight.release("a")
    in_flight.release("a")
    in_flight.release("a")  # never below zero
    assert in_flight["a"] == 0


def test_a_version_with_room_gets_the_request() -> None:
    assert admit(canary(), RUNNING, STABLE, loaded(fraud_v1=1), movable=True).target == STABLE


def test_a_full_version_sheds_when_the_request_may_not_move() -> None:
    steady = RouterConfig(deployment="fraud", targets=[STABLE], timeout_s=10)
    admission = admit(steady, {STABLE.app}, STABLE, loaded(fraud_v1=2), movable=False)
    assert (admission.target, admission.full, admission.moved) == (None, STABLE, False)


def test_a_canary_moves_a_request_to_the_version_with_room() -> None:
    admission = admit(canary(), RUNNING, STABLE, loaded(fraud_v1=2), movable=True)
    assert (admission.target, admission.full, admission.moved) == (CANDIDATE, STABLE, True)
    both_full = loaded(fraud_v1=2, fraud_v2=2)
    assert admit(canary(), RUNNING, STABLE, both_full, movable=True).target is None
    # Not to a version that does not run, nor to one without weight.
    assert admit(canary(), {STABLE.app}, STABLE, loaded(fraud_v1=2), movable=True).target is None
    unweighted = canary(targets=[STABLE, CANDIDATE.model_copy(update={"weight": 0})])
    assert admit(unweighted, RUNNING, STABLE, loaded(fraud_v1=2), movable=True).target is None


def test_the_wait_for_a_slot_follows_how_long_a_slot_is_held() -> None:
    fast = Target(app="fraud--v1", version="1", weight=100, max_in_flight=1000, max_running=2)
    in_flight = loaded(fraud_v1=12)
    assert in_flight.wait_s(fast) == 0.0  # nothing timed yet: only the count cap holds
    in_flight.served(fast.app, 0.4)
    assert in_flight.wait_s(fast) == pytest.approx(11 * 0.4 / 2)  # 10 queued + this one
    assert not in_flight.full(fast, wait_budget_s=5.0)
    for _ in range(20):
        in_flight.acquire(fast.app)  # 30 queued + this one, 5 a second: 6.2 s
    assert in_flight.full(fast, wait_budget_s=5.0)
    assert not in_flight.full(fast)  # far below the count cap
    assert in_flight.why_full(fast, 5.0) == (
        "a 6.2s wait for a slot (31 ahead, 0.40s a slot, 2 at a time), over the 5s allowed"
    )
    # A slow model (4 s a slot) is full with two waiting: the queue is as deep as its speed.
    slow = fast.model_copy(update={"app": "fraud--v2"})
    in_flight = loaded(fraud_v2=4)
    in_flight.served(slow.app, 4.0)
    assert in_flight.full(slow, wait_budget_s=5.0)  # 3 ahead of it, 2 at a time: 6 s
    in_flight.served(slow.app, 0.1)  # smoothed, not replaced: one fast answer moves it a tenth
    assert in_flight.wait_s(slow) == pytest.approx(3 * (4.0 + 0.1 * (0.1 - 4.0)) / 2)


def test_a_version_not_answered_yet_is_as_slow_as_its_oldest_request() -> None:
    """A cold candidate: before its first answer the bound uses how long its oldest request
    has held a slot, so requests do not pile up behind slow first answers into 504s."""
    now = [100.0]
    in_flight = InFlight(clock=lambda: now[0])
    cold = Target(app="fraud--v3", version="3", weight=5, max_in_flight=1000, max_running=2)
    assert in_flight.slot_s(cold.app) is None
    tokens = [in_flight.hold(cold.app), in_flight.hold(cold.app)]
    for _ in range(4):
        in_flight.acquire(cold.app)  # 2 running, 2 waiting
    assert in_flight.wait_s(cold) == 0.0  # no time held yet
    now[0] += 3.0
    assert in_flight.slot_s(cold.app) == 3.0
    assert in_flight.wait_s(cold) == pytest.approx(3 * 3.0 / 2)  # 4.5 s: room within 5 s
    in_flight.acquire(cold.app)
    assert in_flight.full(cold, wait_budget_s=5.0)  # 6 s
    in_flight.unhold(cold.app, tokens[0], answered=False)  # a timeout: no measure of speed
    in_flight.unhold(cold.app, tokens[1], answered=True)  # answered after 3 s
    assert in_flight.slot_s(cold.app) == 3.0
    assert in_flight._holding == {}


def test_admission_sheds_by_time_within_half_the_timeout_and_moves_canary_traffic() -> None:
    stable = STABLE.model_copy(update={"max_in_flight": 1000, "max_running": 1})
    candidate = CANDIDATE.model_copy(update={"max_in_flight": 1000, "max_running": 1})
    config = canary(targets=[stable, candidate], timeout_s=4)  # 2 s of waiting allowed
    in_flight = loaded(fraud_v1=3)
    in_flight.served(stable.app, 1.0)  # 3 ahead at 1 s a slot: 3 s > 2 s
    assert admit(config, RUNNING, stable, in_flight, movable=False).target is None
    moved = admit(config, RUNNING, stable, in_flight, movable=True)
    assert (moved.target, moved.full) == (candidate, stable)
    in_flight.release(stable.app)  # 2 ahead: 2 s, not over
    assert admit(config, RUNNING, stable, in_flight, movable=False).target == stable


def test_a_request_late_in_one_queue_gets_a_second_chance_only_where_its_answer_fits() -> None:
    """The other version may have it while its wait for a slot is within the deadline of the
    time left (`queue_deadline_s`: that time less two slot times, never under half of it)."""
    stable = STABLE.model_copy(update={"max_in_flight": 1000, "max_running": 1})
    candidate = CANDIDATE.model_copy(update={"max_in_flight": 1000, "max_running": 1})
    config = canary(targets=[stable, candidate], timeout_s=4)
    in_flight = loaded(fraud_v2=2)
    in_flight.served(candidate.app, 0.5)  # 2 ahead at 0.5 s a slot: a 1 s wait
    assert pressure.second_chance(config, RUNNING, stable, in_flight, 2.0) == candidate
    assert pressure.second_chance(config, RUNNING, stable, in_flight, 1.5) is None  # 0.75 s
    assert pressure.second_chance(config, {stable.app}, stable, loaded(), 2.0) is None
    unweighted = canary(targets=[stable, candidate.model_copy(update={"weight": 0})])
    assert pressure.second_chance(unweighted, RUNNING, stable, loaded(), 2.0) is None


def test_only_live_rollout_traffic_moves() -> None:
    assert movable(canary(), "live")
    assert not movable(canary(), "pinned")  # a smoke hook's request is for its version
    assert not movable(canary(rollout=None), "live")
    ab = canary(rollout=None, ab=ABTest(header="x-user", variants={STABLE.app: "a"}))
    assert not movable(ab, "live")  # an A/B variant is the experiment


def test_no_bound_never_sheds() -> None:
    unbounded = STABLE.model_copy(update={"max_in_flight": None})
    config = RouterConfig(deployment="fraud", targets=[unbounded], timeout_s=10)
    assert admit(config, {STABLE.app}, unbounded, loaded(fraud_v1=10_000), False).target


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def feed(governor: MirrorGovernor, clock: Clock, latency_ms: float, seconds: float) -> None:
    """Answers every 50 ms for `seconds`, all with `latency_ms`, no queue."""
    for _ in range(int(seconds / 0.05)):
        clock.now += 0.05
        governor.observe(latency_ms, False)


def test_mirror_share_falls_to_zero_under_latency_pressure_and_comes_back() -> None:
    clock = Clock()
    governor = MirrorGovernor(clock)
    feed(governor, clock, 10.0, 2.0)  # unloaded: 10 ms
    assert governor.share == 1.0
    feed(governor, clock, 40.0, 3.0)  # the stable version slows down 4x
    assert governor.share == 0.0  # floor 0: no mirror at all
    assert not governor.admit(0.0)
    feed(governor, clock, 10.0, 2.0)  # pressure gone: additive increase
    assert 0.0 < governor.share < 1.0
    feed(governor, clock, 10.0, 10.0)
    assert governor.share == 1.0


def test_a_version_newly_mirrored_to_ramps_from_zero_and_pressure_ends_the_ramp() -> None:
    clock = Clock()
    governor = MirrorGovernor(clock)
    feed(governor, clock, 10.0, 2.0)
    assert governor.share == 1.0
    governor.mirroring(frozenset({"fraud--v2"}))  # the preview is RUNNING: its first mirrors
    assert (governor.share, governor.ramping) == (0.0, True)
    assert not governor.admit(0.0)
    feed(governor, clock, 10.0, 1.0)
    assert 0.0 < governor.share < 1.0
    governor.mirroring(frozenset({"fraud--v2"}))  # the same version: the ramp goes on
    assert governor.share > 0.0
    feed(governor, clock, 10.0, 4.0)
    assert (governor.share, governor.ramping) == (1.0, False)
    governor.mirroring(frozenset())  # the preview ended ...
    governor.mirroring(frozenset({"fraud--v2"}))  # ... and a new one runs under the same name
    assert governor.share == 0.0
    governor.observe(10.0, True)  # a queue: pressure, no longer a ramp
    clock.now += 1.0
    governor.observe(10.0, True)
    assert (governor.share, governor.ramping) == (0.0, False)


def test_a_queue_in_front_of_the_stable_version_is_pressure() -> None:
    clock = Clock()
    governor = MirrorGovernor(clock)
    for _ in range(20):
        clock.now += 0.25
        governor.observe(10.0, True)  # latency flat, a queue in front of it
    assert governor.share == 0.0


def test_one_request_waiting_for_a_router_slot_is_a_queue_whatever_the_count_cap() -> None:
    # The default cap of a fixed-size version is a memory bound (8 running + 1,000 queued): a
    # share of it would call 500 waiting requests no queue. One waiting is one.
    stable = Target(app="fraud--v1", version="1", weight=100, max_in_flight=1008, max_running=8)
    in_flight = InFlight()
    for _ in range(8):
        in_flight.acquire(stable.app)
    assert not in_flight.queued(stable)  # every slot busy, nobody waiting
    in_flight.acquire(stable.app)
    assert in_flight.queued(stable)
    in_flight.release(stable.app)
    assert not in_flight.queued(stable)


def test_an_autoscaled_version_queues_in_serve_so_its_share_of_the_cap_is_the_queue() -> None:
    scaled = Target(app="fraud--v1", version="1", weight=100, max_in_flight=72)
    in_flight = InFlight()
    for _ in range(int(72 * pressure.QUEUE_SHARE) - 1):
        in_flight.acquire(scaled.app)
    assert not in_flight.queued(scaled)
    in_flight.acquire(scaled.app)
    assert in_flight.queued(scaled)


class FakeMetrics:
    """Stands in for the router's Ray metrics: counts what it is told."""

    def __init__(self) -> None:
        self.counted: Counter[tuple[str, ...]] = Counter()
        self.shed, self.overflow = "shed", "overflow"
        self.waits: list[tuple[str, str, float]] = []
        self.owns: list[tuple[str, str, float]] = []  # (version, traffic, seconds slot to answer)
        self.totals: list[float] = []  # seconds from arrival to answer, every answer
        self.queues: list[tuple[str, float]] = []  # (version, wait for a slot now), exported

    def count(self, counter: str, deployment: str, target: Target, traffic: str) -> None:
        self.counted[(counter, target.version, traffic)] += 1

    def mirror_unsent(self, deployment: str, target: Target, reason: str) -> None:
        self.counted[("mirror_dropped", target.version, reason)] += 1

    def record(
        self, deployment: str, target: Target, traffic: str, status: int, started: float
    ) -> None:
        self.counted[("answered", target.version, traffic, str(status))] += 1
        self.totals.append(time.perf_counter() - started)

    def served(self, deployment: str, target: Target, traffic: str, started: float) -> None:
        self.owns.append((target.version, traffic, time.perf_counter() - started))

    def agreement(self, *args: Any) -> None:
        pass

    def waited(self, deployment: str, target: Target, traffic: str, seconds: float) -> None:
        self.waits.append((target.version, traffic, seconds))

    def queue_now(self, deployment: str, target: Target, wait_s: float) -> None:
        self.queues.append((target.version, wait_s))


class FakeHandle:
    """A version application: answers after `delay_s`, or never (`hang`)."""

    def __init__(self, version: str, delay_s: float = 0.0, hang: bool = False) -> None:
        self.version, self.delay_s, self.hang, self.calls = version, delay_s, hang, 0
        self.predict = self

    def remote(self, payload: Any) -> Any:
        self.calls += 1

        async def answer() -> dict[str, Any]:
            if self.hang:
                await asyncio.Event().wait()
            await asyncio.sleep(self.delay_s)
            return {"status": 200, "body": {"predictions": [self.version]}}

        return answer()


def request(body: Any) -> Request:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/fraud", "headers": [], "query_string": b""}
    return Request(scope, receive)


def replica(config: RouterConfig, handles: dict[str, FakeHandle], ramped: bool = True) -> Any:
    """A router replica routing `config`. `ramped`: mirroring to its shadows for a while
    already, their ramp done (else a mirror to a new version starts from a share of 0)."""
    from controller.serving import router

    r = router.Router.func_or_class("fraud")  # the class behind the Serve deployment
    r._config, r._running = config, {t.app for t in [*config.targets, *config.shadow]}
    r._poller = object()  # no status polling outside Serve
    r._metrics = FakeMetrics()
    r._handle = handles.__getitem__
    r._governor.mirroring(mirrored(config, r._running))  # as a new config or status would
    if ramped:
        r._governor.share, r._governor.ramping = 1.0, False
    return r


def test_a_full_version_is_answered_503_with_retry_after_at_once() -> None:
    steady = RouterConfig(deployment="fraud", targets=[STABLE], timeout_s=10)
    stuck = FakeHandle("1", hang=True)
    r = replica(steady, {STABLE.app: stuck})

    async def scenario() -> list[Any]:
        waiting = [asyncio.create_task(r._answer(request({"inputs": [1]}))) for _ in range(2)]
        await asyncio.sleep(0.01)  # both sent: the version has max_in_flight=2 in flight
        answer = await asyncio.wait_for(r._answer(request({"inputs": [1]})), timeout=0.5)
        for task in waiting:
            task.cancel()
        return [answer, stuck.calls]

    answer, calls = asyncio.run(scenario())
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == str(RETRY_AFTER_S)
    assert answer.headers[SHED_HEADER] == "1"
    assert calls == 2  # the shed request never reached the version
    assert r._metrics.counted[("shed", "1", "live")] == 1
    assert r._in_flight[STABLE.app] == 0  # cancelled requests gave their slots back


def test_a_request_that_would_wait_past_the_budget_is_shed_and_told_why() -> None:
    one_slot = STABLE.model_copy(update={"max_in_flight": 1000, "max_running": 1})
    steady = RouterConfig(deployment="fraud", targets=[one_slot], timeout_s=2)
    stuck = FakeHandle("1", hang=True)
    r = replica(steady, {one_slot.app: stuck})
    r._in_flight.served(one_slot.app, 0.8)  # answers have taken 0.8 s a slot

    async def scenario() -> Any:
        first = asyncio.create_task(r._answer(request({"inputs": [1]})))  # takes the slot
        await asyncio.sleep(0.01)
        second = asyncio.create_task(r._answer(request({"inputs": [1]})))  # 0.8 s: waits
        await asyncio.sleep(0.01)
        third = await asyncio.wait_for(r._answer(request({"inputs": [1]})), timeout=0.5)
        for task in (first, second):
            task.cancel()
        return third

    answer = asyncio.run(scenario())
    assert answer.status_code == 503  # 1.6 s ahead of it, 1 s allowed: not a 504 later
    message = json.loads(answer.body)["message"]
    assert "1.6s wait for a slot (2 ahead, 0.80s a slot, 1 at a time), over the 1s" in message
    assert stuck.calls == 1  # the second waits in the router's queue, the third never went


def test_a_request_that_could_no_longer_be_answered_in_time_leaves_the_queue_as_a_503() -> None:
    """Admission estimated 1.2 s of wait from answers of 0.4 s; the version then takes 1.2 s.
    The fourth request would get its slot at 3.6 s and answer at 4.8 s, past the 4 s timeout:
    it is shed at its deadline (4 s less two slot times: 3.2 s), not held to a 504. The third
    answers at 3.6 s, in time. (Margins of 0.4 s either way, for a busy test machine.)"""
    one_slot = STABLE.model_copy(update={"max_in_flight": 1000, "max_running": 1})
    steady = RouterConfig(deployment="fraud", targets=[one_slot], timeout_s=4)
    r = replica(steady, {one_slot.app: FakeHandle("1", delay_s=1.2)})
    r._in_flight.served(one_slot.app, 0.4)  # answers have taken 0.4 s a slot

    async def scenario() -> list[Any]:
        tasks = []
        for _ in range(4):  # in this order: the fourth is last in the queue
            tasks.append(asyncio.create_task(r._answer(request({"inputs": [1]}))))
            await asyncio.sleep(0.005)
        return list(await asyncio.wait_for(asyncio.gather(*tasks), timeout=20))

    answers = asyncio.run(scenario())
    assert [a.status_code for a in answers] == [200, 200, 200, 503]
    assert "too late to answer" in json.loads(answers[3].body)["message"]
    assert answers[3].headers[SHED_HEADER] == "1"
    assert r._metrics.counted[("shed", "1", "live")] == 1
    assert not any(key[-1] == "504" for key in r._metrics.counted)
    assert r._in_flight[one_slot.app] == 0
    assert len(r._metrics.waits) == 4  # the shed one's wait is counted too


def test_queue_deadline_leaves_room_for_the_answer_but_never_undercuts_admission() -> None:
    assert pressure.queue_deadline_s(10, 0.1) == pytest.approx(9.8)
    assert pressure.queue_deadline_s(10, 4.0) == 5.0  # the admission bound, at least
    assert pressure.queue_deadline_s(10, None) == 5.0  # speed unknown


def test_the_wait_for_a_slot_is_counted_per_version_and_traffic() -> None:
    """Three requests to a version with one slot: the first runs at once, the others wait in
    the router's queue, and each one's wait is handed to the metrics."""
    one_slot = STABLE.model_copy(update={"max_in_flight": 1000, "max_running": 1})
    steady = RouterConfig(deployment="fraud", targets=[one_slot], timeout_s=5)
    r = replica(steady, {one_slot.app: FakeHandle("1", delay_s=0.02)})

    async def scenario() -> list[int]:
        answers = await asyncio.gather(*(r._answer(request({"inputs": [1]})) for _ in range(3)))
        return [a.status_code for a in answers]

    assert asyncio.run(scenario()) == [200] * 3
    waits = r._metrics.waits
    assert [(v, t) for v, t, _ in waits] == [("1", "live")] * 3
    assert [s > 0 for _, _, s in waits] == [False, True, True]  # the first found a free slot


def test_each_weighted_versions_recent_peak_wait_for_a_slot_is_exported() -> None:
    """What the controller reads before it starts a candidate (METRIC_SLOT_WAIT): per weighted
    version, the longest wait a request admitted in the last SLOT_WAIT_PEAK_S would have had;
    0 with a free slot."""
    # Every live request to v1 (weight 100), none chosen for v2 (weight 0) by chance.
    one_slot = STABLE.model_copy(update={"max_in_flight": 1000, "max_running": 1, "weight": 100})
    idle = CANDIDATE.model_copy(update={"weight": 0})
    r = replica(canary(targets=[one_slot, idle]), {one_slot.app: FakeHandle("1", hang=True)})
    r._in_flight.served(one_slot.app, 0.5)  # answers have taken 0.5 s a slot

    async def scenario() -> None:
        tasks = [asyncio.create_task(r._answer(request({"inputs": [1]}))) for _ in range(3)]
        async with asyncio.timeout(5):
            while r._in_flight[one_slot.app] < 3:  # one runs, two wait in the router's queue
                await asyncio.sleep(0.001)
        r._export_queues()
        for task in tasks:
            task.cancel()

    asyncio.run(scenario())
    assert r._metrics.queues == [("1", 1.5), ("2", 0.0)]  # 3 ahead of a new one, 0.5 s each
    # The queue gone: the peak of the last SLOT_WAIT_PEAK_S is exported until it ages out.
    r._metrics.queues.clear()
    for _ in range(round(SLOT_WAIT_PEAK_S / STATUS_POLL_S)):
        r._export_queues()
    assert r._metrics.queues[0] == ("1", 1.5)
    assert r._metrics.queues[-2:] == [("1", 0.0), ("2", 0.0)]


def test_a_version_no_longer_weighted_has_its_exported_wait_set_to_0_once() -> None:
    """A gauge keeps its last value in Ray's export until it is set again: a version that
    left the targets would show its last queue on a dashboard for as long as the router runs."""
    one_slot = STABLE.model_copy(update={"max_in_flight": 1000, "max_running": 1, "weight": 100})
    gone = CANDIDATE.model_copy(update={"weight": 0})
    r = replica(canary(targets=[one_slot, gone]), {})
    r._export_queues()
    r._config = canary(targets=[one_slot])  # the rollout ended: v2 is not a target any more
    r._metrics.queues.clear()
    r._export_queues()
    r._export_queues()
    assert r._metrics.queues == [("2", 0.0), ("1", 0.0), ("1", 0.0)]


def test_a_failing_queue_export_does_not_stop_the_status_poll() -> None:
    """The poll that tells the router which versions run also exports the queues; a metrics
    error there must not end it (a new version would never be routed to)."""
    r = replica(canary(), {})
    reads = 0

    async def refresh() -> bool:
        nonlocal reads
        reads += 1
        return False

    def broken(*args: Any) -> None:
        raise RuntimeError("metrics agent gone")

    r._refresh, r._metrics.queue_now = refresh, broken

    async def scenario() -> None:
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        poller = asyncio.create_task(r._poll_status(done))
        await asyncio.sleep(STATUS_POLL_S * 3.5)
        poller.cancel()

    asyncio.run(scenario())
    assert reads >= 2  # it went on polling after the first export failed


def test_a_request_shed_at_its_queue_deadline_counts_its_wait() -> None:
    """The queue-wait counter is Little's law: a request that left the queue at its deadline
    without a slot (shed, 503) waited too. Before the version's first answer the deadline is
    the admission's bound, half the timeout: 0.05 s here, while the first request hangs in
    its slot until the 0.1 s timeout (504)."""
    one_slot = STABLE.model_copy(update={"max_in_flight": 1000, "max_running": 1})
    steady = RouterConfig(deployment="fraud", targets=[one_slot], timeout_s=0.1)
    r = replica(steady, {one_slot.app: FakeHandle("1", hang=True)})

    async def scenario() -> list[int]:
        answers = await asyncio.gather(*(r._answer(request({"inputs": [1]})) for _ in range(2)))
        return [a.status_code for a in answers]

    assert asyncio.run(scenario()) == [504, 503]
    first, second = r._metrics.waits
    assert first[2] == 0  # took the free slot, then hung there
    assert second[2] >= 0.04  # waited in the queue until its deadline (0.05 s from the call)
    assert len(r._metrics.owns) == 1  # only the first held a slot
    assert r._metrics.counted[("shed", "1", "live")] == 1


def test_a_request_cancelled_in_the_queue_counts_its_wait() -> None:
    """A request that leaves the queue another way (its client gone: the task cancelled) is
    counted as a wait too, and gives no slot away."""
    one_slot = STABLE.model_copy(update={"max_in_flight": 1000, "max_running": 1})
    steady = RouterConfig(deployment="fraud", targets=[one_slot], timeout_s=10)
    r = replica(steady, {one_slot.app: FakeHandle("1", hang=True)})

    async def scenario() -> None:
        tasks = [asyncio.create_task(r._answer(request({"inputs": [1]}))) for _ in range(2)]
        async with asyncio.timeout(5):
            while r._slots.waiting(one_slot.app) < 1:
                await asyncio.sleep(0.001)
        await asyncio.sleep(0.02)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(scenario())
    waits = sorted(s for _, _, s in r._metrics.waits)
    assert waits[0] == 0
    assert waits[1] >= 0.01
    assert (r._slots.running(one_slot.app), r._slots.waiting(one_slot.app)) == (0, 0)


def test_a_versions_own_time_leaves_the_router_queue_out() -> None:
    """Three requests, one slot, 20 ms a request: each one's own time (slot to answer) is its
    20 ms, and the wait in the queue lies outside it, inside the request's whole latency."""
    one_slot = STABLE.model_copy(update={"max_in_flight": 1000, "max_running": 1})
    steady = RouterConfig(deployment="fraud", targets=[one_slot], timeout_s=5)
    r = replica(steady, {one_slot.app: FakeHandle("1", delay_s=0.02)})

    async def scenario() -> None:
        await asyncio.gather(*(r._answer(request({"inputs": [1]})) for _ in range(3)))

    asyncio.run(scenario())
    m = r._metrics
    assert [(v, t) for v, t, _ in m.owns] == [("1", "live")] * 3
    assert all(s >= 0.019 for _, _, s in m.owns)  # the version's 20 ms is in it (timer slack)
    last_wait, last_own, last_total = m.waits[2][2], m.owns[2][2], m.totals[2]
    assert last_wait >= 0.019  # it waited for at least one other answer
    assert last_total >= last_wait + last_own  # two disjoint parts of the whole latency


def test_a_request_timed_out_at_its_version_counts_its_own_time_too() -> None:
    steady = RouterConfig(deployment="fraud", targets=[STABLE], timeout_s=0.05)
    r = replica(steady, {STABLE.app: FakeHandle("1", hang=True)})
    answer = asyncio.run(r._answer(request({"inputs": [1]})))
    assert answer.status_code == 504
    [(version, traffic, seconds)] = r._metrics.owns
    assert (version, traffic) == ("1", "live")
    assert seconds >= 0.04  # held until the timeout: a slow version's time is not lost


def test_the_router_sheds_before_serve_would_queue_in_front_of_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past its own max_ongoing_requests the proxy would hold requests where the router cannot
    see or shed them; the router sheds first, whatever the versions' room."""
    monkeypatch.setattr("controller.serving.router.ROUTER_SHED_AT", 2)
    roomy = STABLE.model_copy(update={"max_in_flight": 1000})
    steady = RouterConfig(deployment="fraud", targets=[roomy], timeout_s=10)
    stuck = FakeHandle("1", hang=True)
    r = replica(steady, {roomy.app: stuck})

    async def scenario() -> Any:
        held = [asyncio.create_task(r._answer(request({"inputs": [1]}))) for _ in range(2)]
        await asyncio.sleep(0.01)
        third = await asyncio.wait_for(r._answer(request({"inputs": [1]})), timeout=0.5)
        for task in held:
            task.cancel()
        await asyncio.sleep(0)
        return third

    answer = asyncio.run(scenario())
    assert answer.status_code == 503
    assert "this router replica is answering 2 requests" in json.loads(answer.body)["message"]
    assert stuck.calls == 2
    assert r._live == 0  # the cancelled ones were counted out


def test_requests_arriving_during_the_first_status_read_wait_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fresh router replica (just started, or just handed the route) reads Serve's status
    before routing, again while an application is DEPLOYING it never saw run: every request
    that comes meanwhile waits for that, none is told that no version runs."""

    reads: list[float] = []

    def slow_statuses(apps: list[str]) -> dict[str, str]:
        time.sleep(0.05)  # a call to Serve's controller, in a thread
        reads.append(time.monotonic())
        # Right after a config PUT Serve says DEPLOYING, changed or not, for a control loop.
        return dict.fromkeys(apps, "DEPLOYING" if len(reads) < 3 else "RUNNING")

    monkeypatch.setattr("controller.serving.router.app_statuses", slow_statuses)
    stable = STABLE.model_copy(update={"weight": 100, "max_in_flight": 100})
    steady = RouterConfig(deployment="fraud", targets=[stable], timeout_s=10)
    handles = {stable.app: FakeHandle("1")}
    r = replica(steady, handles)
    r._poller, r._running = None, set()  # as Serve starts it: nothing read yet
    r._get_handle = handles.__getitem__

    async def scenario() -> list[int]:
        answers = await asyncio.gather(*(r._answer(request({"inputs": [1]})) for _ in range(5)))
        r._poller.cancel()
        return [a.status_code for a in answers]

    assert asyncio.run(scenario()) == [200] * 5
    assert len(reads) == 3  # read again, briefly, until it could tell


def test_a_canary_request_moves_to_the_candidate_when_the_stable_is_full() -> None:
    stable, candidate = FakeHandle("1", hang=True), FakeHandle("2")
    r = replica(canary(), {STABLE.app: stable, CANDIDATE.app: candidate})

    async def scenario() -> Any:
        r._in_flight.acquire(STABLE.app)
        r._in_flight.acquire(STABLE.app)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("controller.serving.router.random.random", lambda: 0.0)  # picks v1
            return await r._answer(request({"inputs": [1]}))

    answer = asyncio.run(scenario())
    assert (answer.status_code, json.loads(answer.body)) == (200, {"predictions": ["2"]})
    assert r._metrics.counted[("overflow", "1", "live")] == 1
    assert stable.calls == 0


def late_at_the_stable_version(busy_candidate: bool) -> tuple[Any, Any, FakeHandle]:
    """A canary step with 1 s timeouts: v1 has one slot, taken by a request that hangs, so a
    second request to v1 queues behind it until its deadline (0.5 s: v1 has no answer yet).
    The candidate answers at once; `busy_candidate`: its one slot is held too, and its answers
    have taken 0.4 s. The router, the second request's answer, and v2."""
    stable = STABLE.model_copy(update={"max_in_flight": 1000, "max_running": 1})
    candidate = CANDIDATE.model_copy(update={"max_in_flight": 1000, "max_running": 1})
    stuck, other = FakeHandle("1", hang=True), FakeHandle("2")
    config = canary(targets=[stable, candidate], timeout_s=1)
    r = replica(config, {stable.app: stuck, candidate.app: other})

    async def scenario() -> Any:
        held = []
        if busy_candidate:
            r._in_flight.served(candidate.app, 0.4)
            r._in_flight.acquire(candidate.app)
            held.append(asyncio.create_task(r._slots.acquire(candidate.app, 1, lambda: 5.0)))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("controller.serving.router.random.random", lambda: 0.0)  # picks v1
            held.append(asyncio.create_task(r._answer(request({"inputs": [1]}))))
            await asyncio.sleep(0.01)
            answer = await asyncio.wait_for(r._answer(request({"inputs": [1]})), timeout=5)
        for task in held:
            task.cancel()
        return answer

    answer = asyncio.run(scenario())
    assert stuck.calls == 1  # the second request never reached v1: it waited, then left
    return r, answer, other


def test_a_canary_request_late_in_the_stable_queue_moves_to_the_candidate_with_room() -> None:
    r, answer, candidate = late_at_the_stable_version(busy_candidate=False)
    assert (answer.status_code, json.loads(answer.body)) == (200, {"predictions": ["2"]})
    assert answer.headers[VERSION_HEADER] == "2"
    assert candidate.calls == 1
    assert r._metrics.counted[("overflow", "1", "live")] == 1  # moved, not shed
    assert r._metrics.counted[("shed", "1", "live")] == 0
    assert r._metrics.counted[("answered", "2", "live", "200")] == 1
    assert r._in_flight[CANDIDATE.app] == 0
    # The hung request's wait (none), the moved one's at v1 (to its deadline), then at v2.
    assert [w[0] for w in r._metrics.waits] == ["1", "1", "2"]


def test_a_late_canary_request_is_shed_when_the_other_version_has_no_time_left_either() -> None:
    """v2's one slot is held and its answers take 0.4 s: a 0.4 s wait is over the 0.25 s that
    the 0.5 s left allow (half of it; less two slot times would be under 0). Shed at the
    deadline, not sent on to time out at v2."""
    r, answer, candidate = late_at_the_stable_version(busy_candidate=True)
    assert answer.status_code == 503
    assert "too late to answer" in json.loads(answer.body)["message"]
    assert answer.headers[SHED_HEADER] == "1"
    assert candidate.calls == 0
    assert r._metrics.counted[("shed", "1", "live")] == 1
    assert r._metrics.counted[("overflow", "1", "live")] == 0


def previewing(max_in_flight: int) -> tuple[RouterConfig, Target]:
    """A blue-green preview: the stable version takes every request, each mirrored to the
    candidate, which may have `max_in_flight` in flight."""
    shadow = CANDIDATE.model_copy(update={"weight": 100, "max_in_flight": max_in_flight})
    config = RouterConfig(
        deployment="fraud",
        targets=[STABLE.model_copy(update={"weight": 100})],
        shadow=[shadow],
        timeout_s=10,
    )
    return config, shadow


def test_a_user_never_waits_on_a_mirror_and_pressure_drops_mirrors() -> None:
    preview, shadow = previewing(max_in_flight=100)
    hanging_shadow = FakeHandle("2", hang=True)
    r = replica(preview, {STABLE.app: FakeHandle("1"), shadow.app: hanging_shadow})

    async def scenario() -> list[int]:
        first = await asyncio.wait_for(r._answer(request({"inputs": [1]})), timeout=0.5)
        await asyncio.sleep(0)
        sent = hanging_shadow.calls
        r._governor.share = 0.0  # the stable version under pressure
        for _ in range(3):
            await r._answer(request({"inputs": [1]}))
        for task in list(r._shadow_tasks):
            task.cancel()
        await asyncio.sleep(0)
        return [first.status_code, sent, hanging_shadow.calls]

    status, sent, calls = asyncio.run(scenario())
    assert (status, sent) == (200, 1)  # answered while its mirror hangs
    assert calls == 1  # no mirror sent under pressure
    assert r._metrics.counted[("mirror_dropped", "2", "pressure")] == 3
    assert r._in_flight[shadow.app] == 0


def test_a_preview_just_running_gets_no_mirror_before_its_ramp() -> None:
    preview, shadow = previewing(max_in_flight=100)
    candidate = FakeHandle("2")
    r = replica(preview, {STABLE.app: FakeHandle("1"), shadow.app: candidate}, ramped=False)

    async def scenario() -> int:
        answer = await r._answer(request({"inputs": [1]}))
        await asyncio.sleep(0)
        return answer.status_code

    assert asyncio.run(scenario()) == 200
    assert candidate.calls == 0
    assert r._metrics.counted[("mirror_dropped", "2", "ramp")] == 1


class RecordingGovernor:
    """Stands in for the MirrorGovernor: keeps what the router tells it, sends no mirror."""

    def __init__(self) -> None:
        self.queued: list[bool] = []
        self.ramping = False

    def observe(self, latency_ms: float, queued: bool) -> None:
        self.queued.append(queued)

    def why_unsent(self, full: bool, rand: float) -> str:
        return "pressure"


def test_the_governor_hears_of_a_queue_at_the_stable_versions_slots() -> None:
    # One slot, a cap of 1,000: three requests at once, two of them queued behind the first.
    stable = STABLE.model_copy(update={"weight": 100, "max_in_flight": 1000, "max_running": 1})
    shadow = CANDIDATE.model_copy(update={"weight": 100, "max_in_flight": 100})
    preview = RouterConfig(deployment="fraud", targets=[stable], shadow=[shadow], timeout_s=10)
    r = replica(preview, {stable.app: FakeHandle("1", delay_s=0.02), shadow.app: FakeHandle("2")})
    r._governor = governor = RecordingGovernor()

    async def scenario() -> None:
        await asyncio.gather(*(r._answer(request({"inputs": [1]})) for _ in range(3)))

    asyncio.run(scenario())
    # The first answer left one request holding the slot and one waiting: a queue. The second
    # left one holding it and none waiting; the third, none.
    assert governor.queued == [True, False, False]


def test_a_full_shadow_version_gets_no_more_mirrors() -> None:
    preview, shadow = previewing(max_in_flight=1)
    hanging_shadow = FakeHandle("2", hang=True)
    r = replica(preview, {STABLE.app: FakeHandle("1"), shadow.app: hanging_shadow})

    async def scenario() -> None:
        for _ in range(3):
            await r._answer(request({"inputs": [1]}))
            await asyncio.sleep(0)
        for task in list(r._shadow_tasks):
            task.cancel()
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert hanging_shadow.calls == 1
    assert r._metrics.counted[("mirror_dropped", "2", "full")] == 2


def test_pressure_stats_show_each_versions_queue_in_the_router() -> None:
    # One slot: of three requests one runs at Serve and two wait in the router for its slot.
    stable = STABLE.model_copy(update={"weight": 100, "max_in_flight": 1000, "max_running": 1})
    preview = RouterConfig(deployment="fraud", targets=[stable], shadow=[CANDIDATE], timeout_s=10)
    stuck = FakeHandle("1", hang=True)
    r = replica(preview, {stable.app: stuck, CANDIDATE.app: FakeHandle("2")})

    async def scenario() -> dict[str, Any]:
        tasks = [asyncio.create_task(r._answer(request({"inputs": [1]}))) for _ in range(3)]
        await asyncio.sleep(0.01)
        stats = r.pressure_stats()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return stats

    stats = asyncio.run(scenario())
    assert stats["live"] == 3
    assert stats["queues"][stable.app] == {
        "in_flight": 3,
        "running": 1,
        "waiting": 2,
        "slot_s": pytest.approx(0.01, abs=0.5),  # no answer yet: the oldest request's hold
    }
    assert stats["queues"][CANDIDATE.app]["in_flight"] == 0  # mirrored to, nothing sent yet
    assert stuck.calls == 1
    after = r.pressure_stats()["queues"][stable.app]
    assert (after["in_flight"], after["running"], after["waiting"]) == (0, 0, 0)

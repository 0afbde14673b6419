"""The router's own FIFO in front of a version (controller/serving/slots.py), on a real event
loop with no cluster: at most `limit` at Serve, the oldest waiter served first, a timed-out
waiter never loses or leaks a slot."""

from __future__ import annotations

import asyncio

import pytest

from controller.cluster.render import max_running
from controller.serving.slots import SlotDeadline, Slots
from controller.spec.manifest import load_manifests

APP = "fraud--v7"


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_at_most_limit_run_and_the_oldest_waiter_goes_first() -> None:
    async def scenario() -> list[int]:
        slots, order = Slots(), []

        async def request(i: int) -> None:
            await slots.acquire(APP, 2)
            order.append(i)

        tasks = [asyncio.create_task(request(i)) for i in range(5)]
        await settle()
        assert (order, slots.running(APP), slots.waiting(APP)) == ([0, 1], 2, 3)
        for expected in ([0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3, 4]):
            slots.release(APP)  # an answer: its slot goes to the oldest waiter
            await settle()
            assert order == expected
            assert slots.running(APP) == 2
        slots.release(APP)
        slots.release(APP)
        await asyncio.gather(*tasks)
        assert (slots.running(APP), slots.waiting(APP)) == (0, 0)
        return order

    assert asyncio.run(scenario()) == [0, 1, 2, 3, 4]


def test_a_waiter_that_times_out_leaves_the_queue_without_taking_a_slot() -> None:
    async def scenario() -> None:
        slots = Slots()
        await slots.acquire(APP, 1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(slots.acquire(APP, 1), timeout=0.01)
        assert slots.waiting(APP) == 0
        slots.release(APP)
        assert slots.running(APP) == 0  # the slot was not handed to the one that left
        await asyncio.wait_for(slots.acquire(APP, 1), timeout=1)  # free at once

    asyncio.run(scenario())


def test_a_waiter_past_its_deadline_leaves_the_queue_and_the_next_gets_the_slot() -> None:
    async def scenario() -> None:
        slots = Slots()
        await slots.acquire(APP, 1)
        late = asyncio.create_task(slots.acquire(APP, 1, deadline=lambda: 0.05))
        await settle()
        patient = asyncio.create_task(slots.acquire(APP, 1))  # behind it, no deadline
        with pytest.raises(SlotDeadline) as raised:
            await asyncio.wait_for(late, timeout=5)
        assert raised.value.waited > 0
        assert slots.waiting(APP) == 1  # only the patient one
        slots.release(APP)
        await asyncio.wait_for(patient, timeout=5)  # the slot skipped the one that left
        assert slots.running(APP) == 1
        slots.release(APP)
        assert (slots.running(APP), slots.waiting(APP)) == (0, 0)

    asyncio.run(scenario())


def test_a_deadline_that_grew_while_the_request_waited_keeps_it_in_the_queue() -> None:
    """The deadline is read again when it passes: the version answered meanwhile and proved
    quick, so the request may wait longer, and gets its slot."""

    async def scenario() -> tuple[float, int]:
        slots, reads = Slots(), []

        def deadline() -> float:
            reads.append(1)
            return 0.05 if len(reads) == 1 else 30.0

        await slots.acquire(APP, 1)
        waiting = asyncio.create_task(slots.acquire(APP, 1, deadline=deadline))
        await asyncio.sleep(0.2)  # past the first deadline
        assert not waiting.done()
        slots.release(APP)
        return await asyncio.wait_for(waiting, timeout=5), len(reads)

    waited, reads = asyncio.run(scenario())
    assert waited > 0.05
    assert reads == 2  # read when it queued and when that deadline passed, not polled


def test_a_slot_granted_as_its_waiter_is_cancelled_is_passed_on() -> None:
    async def scenario() -> None:
        slots = Slots()
        await slots.acquire(APP, 1)
        first = asyncio.create_task(slots.acquire(APP, 1))
        second = asyncio.create_task(slots.acquire(APP, 1))
        await settle()
        slots.release(APP)  # grants `first` ...
        first.cancel()  # ... which gives up before it runs
        await settle()
        assert first.cancelled()
        assert second.done()  # it got the slot `first` could not use
        assert slots.running(APP) == 1

    asyncio.run(scenario())


def test_no_limit_means_no_queue() -> None:
    async def scenario() -> None:
        slots = Slots()
        for _ in range(100):
            await asyncio.wait_for(slots.acquire(APP, None), timeout=1)
        assert slots.running(APP) == 0

    asyncio.run(scenario())


SPEC = """\
apiVersion: serveops.dev/v1alpha1
kind: ModelDeployment
metadata: {name: fraud, environment: staging, owner: risk}
spec:
  route: /fraud
  model: models:/fraud/7
"""


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("", 8),  # one replica, 8 ongoing each
        ("  replicas: 3\n  max_ongoing_requests: 4\n", 12),
        ("  replicas: 3\n  max_ongoing_requests: 4\n  router_replicas: 2\n", 6),
        ("  autoscaling: {min_replicas: 1, max_replicas: 4}\n", None),  # Serve's autoscaler
    ],
)
def test_the_rendered_running_bound_is_the_replicas_slots(extra: str, expected: int | None) -> None:
    [manifest] = load_manifests({"deployments/staging/fraud.yaml": SPEC + extra}, "staging")
    assert max_running(manifest.deployment.spec) == expected


def test_acquire_says_how_long_the_request_waited_for_its_slot() -> None:
    """The router counts these seconds per version (serveops_router_queue_wait_seconds)."""
    now = [100.0]

    async def scenario() -> tuple[float, float, float]:
        slots = Slots(clock=lambda: now[0])
        first = await slots.acquire(APP, 1)  # a free slot: no wait
        waiter = asyncio.create_task(slots.acquire(APP, 1))
        await settle()
        now[0] += 0.25
        slots.release(APP)
        return first, await waiter, await slots.acquire(APP, None)

    assert asyncio.run(scenario()) == (0.0, 0.25, 0.0)

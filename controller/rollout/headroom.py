"""Does the serving path have the headroom to start a candidate? Pure.

A candidate's start is seconds of CPU (a worker's start, imports, the model's load) on the
machines that serve. Into a path with headroom it leaves a backlog that drains; into a path
whose stable version already has a queue standing in the router, it grows that queue past
the router's wait bound, and the excess is shed (docs/benchmarks.md, item 22; item 28 measures
this hold).
So a rollout about to start its candidate first reads what the router estimates a request
admitted now would wait for one of the stable version's slots (`METRIC_SLOT_WAIT`), and waits,
saying so, while that is over `HEADROOM_WAIT_SHARE` of the router's wait bound. Unknown
(metrics unreadable, no router figures yet) does not hold the start, as unknown CPUs do not.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.rollout.router_metrics import Snapshot
from controller.serving.pressure import QUEUE_WAIT_SHARE

# A start waits while the stable version's requests would wait longer than this share of the
# router's bound (QUEUE_WAIT_SHARE of the request timeout: 1 s of 5 s by default).
HEADROOM_WAIT_SHARE = 0.2


@dataclass(frozen=True)
class Queue:
    """The stable version's queue in the router, as its replicas estimate it now."""

    app: str
    wait_s: float
    bound_s: float  # the start waits while `wait_s` is over it

    @property
    def standing(self) -> bool:
        return self.wait_s > self.bound_s

    def says(self, candidate_app: str) -> str:
        """What the rollout waits for, in words that stay the same from pass to pass."""
        return (
            f"headroom on the serving path: {candidate_app} starts once a request to "
            f"{self.app} would wait at most {self.bound_s:g}s for a slot in the router"
        )

    def now(self) -> str:
        """The figure behind it, for the controller's log."""
        return f"a request to {self.app} would wait {self.wait_s:.1f}s for a slot now"


def stable_queue(
    snapshot: Snapshot | None,
    deployment: str,
    stable_version: str,
    stable_app: str,
    request_timeout_s: float,
) -> Queue | None:
    """The stable version's queue, or None when the router has not said (no figures)."""
    counts = (snapshot or {}).get(deployment, {}).get(stable_version)
    if counts is None:
        return None
    bound = HEADROOM_WAIT_SHARE * QUEUE_WAIT_SHARE * request_timeout_s
    return Queue(stable_app, counts.slot_wait_s, bound)

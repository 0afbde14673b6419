"""Does the serving path have the headroom to start a candidate, or to scale it up?

A candidate's start is seconds of CPU (a worker's start, imports, the model's load) on the
machines that serve. Into a path with headroom it leaves a backlog that drains; into a path
whose stable version already has a queue standing in the router, it grows that queue past
the router's wait bound, and the excess is shed (docs/benchmarks.md, item 22; item 28 measures
this hold).
So a rollout about to start its candidate first reads what the router estimates a request
admitted now would wait for one of the stable version's slots (`METRIC_SLOT_WAIT`), and waits,
saying so, while that is over `HEADROOM_WAIT_SHARE` of the router's wait bound. Unknown
(metrics unreadable, no router figures yet) does not hold the start, as unknown CPUs do not.
A blue-green candidate that previewed smaller waits the same way before it is scaled to its
full size for the switch: its new replicas' starts are the same load (`no_room`). Pure but
for the log line that gives the figure behind a hold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from controller.cluster.capacity import room_for
from controller.cluster.live import LiveState
from controller.cluster.render import AppConfig
from controller.rollout.router_metrics import Snapshot
from controller.rollout.state import RolloutState
from controller.serving.pressure import QUEUE_WAIT_SHARE

# A start waits while the stable version's requests would wait longer than this share of the
# router's bound (QUEUE_WAIT_SHARE of the request timeout: 1 s of 5 s by default).
HEADROOM_WAIT_SHARE = 0.2

log = logging.getLogger("serveops.controller")


@dataclass(frozen=True)
class Queue:
    """The stable version's queue in the router, as its replicas estimate it now."""

    app: str
    wait_s: float
    bound_s: float  # the start waits while `wait_s` is over it

    @property
    def standing(self) -> bool:
        return self.wait_s > self.bound_s

    def says(self, candidate_app: str, doing: str = "starts") -> str:
        """What the rollout waits for before the candidate `doing`, in words that stay the
        same from pass to pass."""
        return (
            f"headroom on the serving path: {candidate_app} {doing} once a request to "
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


def no_room(
    state: RolloutState,
    config: AppConfig,
    live: LiveState,
    snapshot: Snapshot | None,
    request_timeout_s: float,
    doing: str,
) -> str:
    """What the candidate's replicas of `config` wait for before it `doing` ("starts", "is
    scaled to full size"): CPUs to fit next to what runs, or (unless an operator said
    `promote`) the stable version's queue to drop under the bound; "" when nothing, or when
    what it needs is unknown."""
    room = room_for(config, live)
    if room is not None and not room.fits:
        return room.says(state.candidate_app)
    if state.promote:
        return ""
    queue = stable_queue(
        snapshot, state.deployment, state.stable_version, state.stable_app, request_timeout_s
    )
    if queue is None or not queue.standing:
        return ""
    says = queue.says(state.candidate_app, doing)
    log.info("%s: %s; %s", state.deployment, queue.now(), says)
    return says

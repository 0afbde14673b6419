"""Stop a paired replay once the sequential judge decides (`ReplayOptions.stop_when_decided`).

Runs as a greenlet beside the schedule in the replaying process (it imports Locust's gevent).
Import this module before t0: it loads SciPy, which takes half a second, and an import inside
the greenlet would stall the schedule that long.
"""

from __future__ import annotations

import gevent  # type: ignore[import-untyped]
import numpy as np

from simulator.checks import Thresholds
from simulator.report import aligned_sides
from simulator.results import StopWhenDecided, quantile
from simulator.schedule import Schedule
from simulator.sequential import sequential_decision


def watch(schedule: Schedule, stop: StopWhenDecided) -> None:
    """Every `check_every_s`, judge the leading requests every target has answered at the newest
    look of the grid reached (looks skipped in between cost nothing: every look is valid on
    its own); on a decision, tell the schedule to stop sending.

    Runs in the replay's event loop: each look costs about a millisecond of CPU, taken
    between sends (the generator lag of the run shows it if it mattered). A prefix whose
    generator lag p99 exceeds the run's budget is not judged: latencies counted from intended
    times that the generator missed say little about the servers, so such a run goes on to
    its end and is reported invalid."""
    t = Thresholds.model_validate(stop.thresholds)
    names = list(schedule.targets)
    roles = [stop.baseline, stop.candidate] + ([stop.noise] if stop.noise else [])
    answered: dict[int, int] = {}
    seen = 0
    next_look = max(t.look_every, t.min_requests)
    while schedule.stop is None:
        gevent.sleep(stop.check_every_s)
        outs = schedule.outcomes
        for o in outs[seen:]:
            answered[o.i] = answered.get(o.i, 0) + 1
        seen = len(outs)
        lead = 0
        while answered.get(lead, 0) >= len(names):
            lead += 1
        if lead < next_look:
            continue
        rank = {name: k for k, name in enumerate(names)}
        lead_outs = sorted(
            (o for o in outs[:seen] if o.i < lead), key=lambda o: (o.i, rank[o.target])
        )
        done = [schedule.outcome(o) for o in lead_outs]
        lags = [lag for o in done if (lag := o.lag_ms) is not None]
        if quantile(lags, 0.99) > schedule.options.max_lag_p99_ms:
            continue
        sides, _, _ = aligned_sides(done, roles, True)
        for side in sides.values():
            if np.isnan(side.latency_ms).any():
                worst = float(np.nanmax(side.latency_ms, initial=0.0))
                side.latency_ms = np.where(np.isnan(side.latency_ms), worst, side.latency_ms)
        n = sides[stop.baseline].n
        looks = list(range(next_look, n + 1, t.look_every))[-1:]  # the newest look only
        if not looks:
            continue
        res = sequential_decision(
            sides[stop.baseline], sides[stop.candidate], t,
            noise_floor=sides.get(stop.noise) if stop.noise else None, looks=looks,
        )  # fmt: skip
        next_look = looks[-1] + t.look_every
        if res.decision != "inconclusive":
            schedule.stop = {"after_pairs": res.n_used, "decision": res.decision,
                             "reason": res.reason}  # fmt: skip

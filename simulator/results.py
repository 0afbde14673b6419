"""What a replay produces, importable without Locust: its options, one outcome per request
sent (or dropped), the result with its validity (generator lag, drops), and the merge of the
shards of a distributed replay. simulator/replay.py runs the replay (and imports Locust)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field


class StopWhenDecided(BaseModel):
    """Run the sequential judge during a paired replay and stop sending once it decides."""

    thresholds: dict[str, Any] = Field(
        default_factory=dict, description="`simulator.compare.Thresholds` fields."
    )
    baseline: str = Field(default="baseline", description="Target that is the baseline.")
    candidate: str = Field(default="candidate", description="Target that is the candidate.")
    noise: str | None = Field(default=None, description="Second baseline (A/A), if any.")
    check_every_s: float = Field(default=0.25, gt=0, description="How often to look.")


class ReplayOptions(BaseModel):
    speed: float = Field(default=1.0, gt=0, description="1 = recorded pace, 10 = ten times faster.")
    max_in_flight: int = Field(default=512, ge=1, description="Cap on requests in flight.")
    timeout_s: float = Field(default=10.0, gt=0, description="Per request; beyond it, censored.")
    max_lag_p99_ms: float = Field(default=5.0, gt=0, description="Above it the run is invalid.")
    seed: int = 0
    keep_bodies: bool = Field(default=True, description="Parse and keep response bodies.")
    start_delay_s: float = Field(default=0.2, ge=0, description="t0 = now + this.")
    shard_index: int = 0
    shard_count: int = 1
    web_ui_port: int | None = None
    nice: int | None = Field(
        default=None,
        description="Set the replaying process's nice value (negative needs privilege): on a "
        "busy machine a higher priority keeps the schedule better.",
    )
    cpu_affinity: list[int] | None = Field(
        default=None,
        description="Pin the replaying process (and its local workers) to these cores, e.g. "
        "the ones kept free of a local Ray.",
    )
    stop_when_decided: StopWhenDecided | None = Field(
        default=None, description="Paired replays: stop once the sequential judge decides."
    )


class Outcome(BaseModel):
    """One request to one target. Times are seconds after t0 on the monotonic clock."""

    id: str
    target: str
    intended: float
    sent: float | None = None
    done: float | None = None
    status: int | None = None
    latency_ms: float | None = Field(default=None, description="done - intended.")
    service_ms: float | None = Field(default=None, description="done - sent.")
    timed_out: bool = False
    dropped: bool = False
    error: str | None = None
    version: str | None = None
    body: Any = None

    @property
    def lag_ms(self) -> float | None:
        return None if self.sent is None else (self.sent - self.intended) * 1000.0

    @property
    def failed(self) -> bool:
        return self.timed_out or self.status is None or not 200 <= self.status < 400


class ReplayResult(BaseModel):
    targets: dict[str, str]
    paired: bool
    speed: float
    scheduled: int
    started_at: float = Field(description="Wall-clock time of t0 (epoch seconds).")
    duration_s: float
    generator_cpu_s: float = Field(
        default=0.0, description="CPU time of the replaying process from t0 to the end."
    )
    dropped: dict[str, int]
    timed_out: dict[str, int]
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    valid: bool
    problems: list[str] = Field(default_factory=list)
    generator_cpus: list[int] | None = Field(
        default=None, description="Cores the replaying process was pinned to, if any."
    )
    stopped_early: dict[str, Any] | None = Field(
        default=None,
        description="Set when the sequential judge stopped the replay: the look (`after_pairs`), "
        "`decision`, `reason` and `unsent` (requests of the schedule never sent).",
    )
    outcomes: list[Outcome]

    def by_target(self, name: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.target == name]


def shard_of(key: str, count: int) -> int:
    """Stable shard for a request id (or ordering key): same key, same worker, in any process."""
    import zlib

    return zlib.crc32(key.encode()) % count


def quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    import numpy as np

    return float(np.quantile(np.asarray(values, dtype=float), q))


def summarize(
    outcomes: list[Outcome],
    *,
    targets: dict[str, str],
    options: ReplayOptions,
    scheduled: int,
    started_at: float,
    duration_s: float,
    cpu_s: float,
    stopped_early: dict[str, Any] | None = None,
) -> ReplayResult:
    """Lag, drops and timeouts over `outcomes` (in schedule order), and the run's validity."""
    lags = [lag for o in outcomes if (lag := o.lag_ms) is not None]
    names = list(targets)
    dropped = {n: sum(1 for o in outcomes if o.target == n and o.dropped) for n in names}
    timed_out = {n: sum(1 for o in outcomes if o.target == n and o.timed_out) for n in names}
    lag_p99 = quantile(lags, 0.99)
    problems = []
    if lag_p99 > options.max_lag_p99_ms:
        problems.append(
            f"generator lag p99 {lag_p99:.2f} ms exceeds {options.max_lag_p99_ms} ms: "
            "the load generator did not keep the schedule"
        )
    capped = sum(1 for o in outcomes if o.dropped and not (o.error or "").startswith("not sent"))
    if capped:
        problems.append(
            f"{capped} request(s) dropped at the cap of {options.max_in_flight} in flight"
        )
    return ReplayResult(
        targets=targets,
        paired=len(names) > 1,
        speed=options.speed,
        scheduled=scheduled,
        started_at=started_at,
        duration_s=duration_s,
        generator_cpu_s=cpu_s,
        dropped=dropped,
        timed_out=timed_out,
        lag_p50_ms=quantile(lags, 0.5),
        lag_p99_ms=lag_p99,
        lag_max_ms=max(lags, default=0.0),
        valid=lag_p99 <= options.max_lag_p99_ms,
        problems=problems,
        stopped_early=stopped_early,
        outcomes=outcomes,
    )


def merge(
    parts: list[ReplayResult], targets: dict[str, str], options: ReplayOptions
) -> ReplayResult:
    """One result from the shards of a distributed replay (they share t0)."""
    rank = {n: k for k, n in enumerate(targets)}
    outcomes = sorted(
        (o for p in parts for o in p.outcomes), key=lambda o: (o.intended, o.id, rank[o.target])
    )
    return summarize(
        outcomes,
        targets=targets,
        options=options,
        scheduled=sum(p.scheduled for p in parts),
        started_at=min((p.started_at for p in parts), default=0.0),
        duration_s=max((p.duration_s for p in parts), default=0.0),
        cpu_s=sum(p.generator_cpu_s for p in parts),
    )

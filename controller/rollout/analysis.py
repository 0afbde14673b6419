"""Rollout analysis: a window of per-version router figures against a deployment's `analysis`.

Pure. The input is what the router counted for each model version between two scrapes
(`controller.rollout.router_metrics`): requests, errors (5xx answers: failures, timeouts) and a latency
histogram. The output is a verdict with its reasons:

- `inconclusive`: the candidate answered fewer than `min_requests` in the window. Too little
  traffic never passes and never fails silently; the rollout engine holds the step and keeps
  the window open (the next analysis judges every request since it began), and pauses after
  too many inconclusive analyses in a row. When the candidate's requests are mirrored copies
  the router dropped to protect the stable version (a preview under load), the window is
  `saturated`: the step holds as long as that lasts, and never pauses for it.
- `fail`: a condition is broken: the candidate's p95 above `max_p95_latency_ms`, more than
  `max_p95_regression_pct` percent above the stable version's p95, or its error rate more than
  `max_error_rate_increase` percentage points above the stable version's.
- `pass`: none is.

Shed requests (the router answered 503 at once: a version had `max_in_flight` requests in
flight, controller/serving/pressure.py) never reached a version: they are no one's errors and
have no latency. They mean the serving path was saturated in the window, and much of a p95 is
then time spent in the router's queue. So each version's own time (from the slot the router
handed a request to its answer, a second histogram) is judged too. A p95 regression fails on
the p95s through the router, as without saturation, or on the own ones: each version has its
own queue, and seconds in it can hide a model many times slower. An absolute ceiling fails
when the candidate's own p95 is above it while the stable version's, under the same load, is
within it (a slow candidate does not keep its share of users through a busy hour); otherwise
a broken ceiling makes the window `inconclusive` (the step holds), never `fail`, and the next
window starts afresh: a p95 over a window that kept the saturated minutes would stay high long
after the load fell.

Relative conditions need a baseline: with fewer than `min_requests` stable requests in the
window (blue-green after the switch, say) the error rate is compared with 0% and the latency
regression is not checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from controller.spec.models import Analysis

Verdict = Literal["pass", "fail", "inconclusive"]
Buckets = tuple[tuple[float, int], ...]  # (upper bound in ms, cumulative count), last +inf


@dataclass(frozen=True)
class VersionWindow:
    """What one version did in a window. `buckets`: (upper bound in ms, cumulative count),
    ascending, the last one +inf, as in a Prometheus histogram; `service_buckets` the same for
    its own time (slot to answer)."""

    requests: int = 0
    errors: int = 0
    buckets: Buckets = ()
    shed: int = 0  # answered 503 at once by the router, this version full: not in `requests`
    mirrors_dropped: int = 0  # mirrored copies to this version the router did not send
    queue_wait_s: float = 0.0  # seconds its requests waited in the router's queue for a slot
    service_buckets: Buckets = ()  # empty from a router older than the histogram

    @property
    def error_rate_pct(self) -> float:
        return 100.0 * self.errors / self.requests if self.requests else 0.0

    @property
    def mean_wait_ms(self) -> float | None:
        """How long a request waited for a slot on average (None without requests): the
        share of its latency spent queued in the router, not in the model."""
        return 1000.0 * self.queue_wait_s / self.requests if self.requests else None

    def quantile_ms(self, q: float) -> float | None:
        """`histogram_quantile` as Prometheus computes it: linear within the bucket."""
        return histogram_quantile(q, self.buckets)

    def own_quantile_ms(self, q: float) -> float | None:
        """The same of its own time: from its slot to its answer, the router's queue left out."""
        return histogram_quantile(q, self.service_buckets)


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    if not buckets:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0
    for upper, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(upper):
                return lower  # past the last finite bound: its bound is all we know
            in_bucket = cumulative - below
            if in_bucket <= 0:
                return upper
            return lower + (upper - lower) * (rank - below) / in_bucket
        lower, below = upper, cumulative
    return lower


@dataclass(frozen=True)
class AnalysisResult:
    verdict: Verdict
    reasons: list[str] = field(default_factory=list)
    candidate: VersionWindow = field(default_factory=VersionWindow)
    stable: VersionWindow = field(default_factory=VersionWindow)
    # Inconclusive because the serving path was saturated (not because traffic was light):
    # the step holds until it is not, and the window never counts towards a pause.
    saturated: bool = False
    # The next window starts afresh: held with enough traffic judged, so the saturated
    # minutes do not stay in the figures of the windows after them (the baseline is kept
    # only while the candidate has too few requests, to gather them).
    restart: bool = False

    @property
    def shed(self) -> int:
        """Requests the router shed in the window (either version full): saturation."""
        return self.candidate.shed + self.stable.shed

    @property
    def summary(self) -> str:
        c, s = self.candidate, self.stable
        figures = (
            f"candidate {c.requests} req, {c.error_rate_pct:.2f}% errors, p95 "
            f"{_ms(c.quantile_ms(0.95))}{_queued(c)}; stable {s.requests} req, "
            f"{s.error_rate_pct:.2f}% errors, p95 {_ms(s.quantile_ms(0.95))}{_queued(s)}"
        )
        if self.shed:
            figures += f"; saturated: {c.shed} + {s.shed} shed"
        if not self.reasons:
            return f"{self.verdict}: {figures}"
        return f"{self.verdict}: {'; '.join(self.reasons)} ({figures})"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def queue_figures(wait_ms: float | None, own_p95_ms: float | None) -> str:
    """`queued 20.0 ms avg, own p95 12.0 ms` when requests waited for a slot, else "": the
    words of the analysis line and of `serveops rollouts`."""
    if not wait_ms:
        return ""
    return f"queued {wait_ms:.1f} ms avg" + (
        f", own p95 {own_p95_ms:.1f} ms" if own_p95_ms is not None else ""
    )


def _queued(w: VersionWindow) -> str:
    figures = queue_figures(w.mean_wait_ms, w.own_quantile_ms(0.95))
    return f" ({figures})" if figures else ""


def _slow_on_its_own(
    ceiling: float, own: float | None, stable_own: float | None, baseline: bool
) -> str | None:
    """Why a p95 ceiling broken under saturation is the candidate's doing, or None: its own
    p95 is above the ceiling while the stable version's, under the same load, is within."""
    if not baseline or own is None or stable_own is None:
        return None
    if own <= ceiling or stable_own > ceiling:
        return None
    return (
        f"its own time (slot to answer) has a p95 of {own:.1f} ms while the stable version's, "
        f"under the same load, is {stable_own:.1f} ms"
    )


def _regressed(what: str, p95: float | None, stable_p95: float | None, limit: float) -> str | None:
    """Why the candidate's p95 is more than `limit` percent above the stable version's, or None
    (also when either is unknown)."""
    if p95 is None or stable_p95 is None or stable_p95 <= 0:
        return None
    regression = 100.0 * (p95 - stable_p95) / stable_p95
    if regression <= limit:
        return None
    return (
        f"{what} {p95:.1f} ms is {regression:.0f}% above the stable version's "
        f"{stable_p95:.1f} ms, more than max_p95_regression_pct {limit}%"
    )


def analyse(spec: Analysis, candidate: VersionWindow, stable: VersionWindow) -> AnalysisResult:
    """Judge one window. Every broken condition is listed, not only the first."""
    shed = candidate.shed + stable.shed
    if candidate.requests < spec.min_requests and candidate.mirrors_dropped:
        return AnalysisResult(
            "inconclusive",
            [
                f"saturated: the router dropped {candidate.mirrors_dropped} mirrored request(s) "
                "to keep the stable version's latency, so the candidate answered "
                f"{candidate.requests}, fewer than min_requests {spec.min_requests}"
            ],
            candidate,
            stable,
            saturated=True,
        )
    if candidate.requests < spec.min_requests:
        return AnalysisResult(
            "inconclusive",
            [
                f"too little traffic: the candidate answered {candidate.requests} request(s), "
                f"fewer than min_requests {spec.min_requests}"
            ],
            candidate,
            stable,
        )
    held: list[str] = []  # broken only because of saturation: holds the step
    reasons: list[str] = []
    baseline = stable.requests >= spec.min_requests
    stable_rate = stable.error_rate_pct if baseline else 0.0
    increase = candidate.error_rate_pct - stable_rate
    if increase > spec.max_error_rate_increase:
        reasons.append(
            f"error rate {candidate.error_rate_pct:.2f}% is {increase:.2f} pt above "
            f"{'the stable version' if baseline else 'zero'} ({stable_rate:.2f}%), more than "
            f"max_error_rate_increase {spec.max_error_rate_increase} pt"
        )
    p95, ceiling = candidate.quantile_ms(0.95), spec.max_p95_latency_ms
    own, stable_own = candidate.own_quantile_ms(0.95), stable.own_quantile_ms(0.95)
    if ceiling is not None and p95 is not None and p95 > ceiling:
        broken = f"p95 latency {p95:.1f} ms above max_p95_latency_ms {ceiling}"
        if not shed:
            reasons.append(broken)
        elif (slow := _slow_on_its_own(ceiling, own, stable_own, baseline)) is not None:
            reasons.append(f"{broken}: {slow}")
        else:
            held.append(
                f"{broken} while the serving path was saturated ({shed} request(s) shed): "
                "not judged"
            )
    limit = spec.max_p95_regression_pct
    if limit is not None and baseline:
        regressed = _regressed("p95 latency", p95, stable.quantile_ms(0.95), limit)
        if regressed is None and shed:  # queue-bound p95s hide a slow model: own times too
            regressed = _regressed("own p95 (slot to answer)", own, stable_own, limit)
            if regressed is not None:
                regressed += f", while the serving path was saturated ({shed} request(s) shed)"
        if regressed is not None:
            reasons.append(regressed)
    if reasons:
        return AnalysisResult("fail", reasons, candidate, stable)
    if held:
        return AnalysisResult("inconclusive", held, candidate, stable, saturated=True, restart=True)
    return AnalysisResult("pass", [], candidate, stable)

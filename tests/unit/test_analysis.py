"""Rollout analysis (controller/rollout/analysis.py): thresholds over per-version windows."""

from __future__ import annotations

import math

import pytest

from controller.rollout.analysis import VersionWindow, analyse, histogram_quantile
from controller.spec.models import Analysis

INF = math.inf


def window(requests: int, errors: int = 0, latency_ms: float = 10.0) -> VersionWindow:
    """All requests in the bucket whose upper bound is `latency_ms`."""
    bounds = [1.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0]
    buckets = (*((b, requests if b >= latency_ms else 0) for b in bounds), (INF, requests))
    return VersionWindow(requests, errors, buckets)


def spec(**kw: object) -> Analysis:
    return Analysis.model_validate({"min_requests": 50, **kw})


def test_histogram_quantile_interpolates_within_the_bucket() -> None:
    buckets = ((10.0, 50), (20.0, 100), (INF, 100))
    assert histogram_quantile(0.5, buckets) == pytest.approx(10.0)
    assert histogram_quantile(0.75, buckets) == pytest.approx(15.0)
    assert histogram_quantile(0.95, ((10.0, 0), (INF, 10))) == 10.0  # beyond the last bound
    assert histogram_quantile(0.95, ()) is None
    assert histogram_quantile(0.95, ((10.0, 0), (INF, 0))) is None


def test_below_min_requests_is_inconclusive_even_with_errors() -> None:
    result = analyse(spec(), window(49, errors=49), window(1000))
    assert result.verdict == "inconclusive"
    assert "fewer than min_requests 50" in result.reasons[0]


def test_a_healthy_candidate_passes() -> None:
    result = analyse(spec(max_p95_latency_ms=50), window(100), window(1000))
    assert result.verdict == "pass"
    assert not result.reasons
    assert "candidate 100 req" in result.summary


def test_error_rate_increase_is_in_points_over_the_stable_version() -> None:
    s = spec(max_error_rate_increase=0.5)
    assert analyse(s, window(1000, errors=15), window(1000, errors=10)).verdict == "pass"  # +0.5
    failed = analyse(s, window(1000, errors=16), window(1000, errors=10))  # +0.6 pt
    assert failed.verdict == "fail"
    assert "0.60 pt above the stable version" in failed.reasons[0]


def test_without_a_stable_baseline_the_error_rate_is_compared_with_zero() -> None:
    s = spec(max_error_rate_increase=1)
    assert analyse(s, window(100, errors=2), window(3)).verdict == "fail"
    assert analyse(s, window(100, errors=1), window(3)).verdict == "pass"


def test_absolute_p95_ceiling() -> None:
    s = spec(max_p95_latency_ms=15, max_p95_regression_pct=None)
    result = analyse(s, window(100, latency_ms=20), window(1000, latency_ms=20))
    assert result.verdict == "fail"
    assert "max_p95_latency_ms 15" in result.reasons[0]


def test_p95_regression_relative_to_stable() -> None:
    s = spec(max_p95_regression_pct=20)
    slower = analyse(s, window(100, latency_ms=50), window(1000, latency_ms=20))
    assert slower.verdict == "fail"
    assert "max_p95_regression_pct" in slower.reasons[0]
    assert analyse(s, window(100, latency_ms=20), window(1000, latency_ms=20)).verdict == "pass"


def test_regression_is_not_judged_without_a_stable_baseline() -> None:
    s = spec(max_p95_regression_pct=20)
    assert analyse(s, window(100, latency_ms=100), window(0)).verdict == "pass"


def test_every_broken_condition_is_reported() -> None:
    s = spec(max_p95_latency_ms=10, max_p95_regression_pct=20, max_error_rate_increase=0.5)
    result = analyse(s, window(100, errors=50, latency_ms=1000), window(1000, latency_ms=5))
    assert result.verdict == "fail"
    assert len(result.reasons) == 3


def saturated(w: VersionWindow, shed: int) -> VersionWindow:
    return VersionWindow(w.requests, w.errors, w.buckets, shed)


def test_shed_requests_are_saturation_not_the_candidates_errors() -> None:
    s = spec(max_error_rate_increase=0.5, max_p95_latency_ms=50)
    result = analyse(s, saturated(window(100), 40), saturated(window(1000), 300))
    assert result.verdict == "pass"  # 340 shed, none of them an error of either version
    assert result.candidate.error_rate_pct == 0.0
    assert "saturated: 40 + 300 shed" in result.summary


def test_an_absolute_ceiling_broken_under_saturation_holds_the_step() -> None:
    s = spec(max_p95_latency_ms=50)
    held = analyse(s, saturated(window(100, latency_ms=100), 5), window(1000, latency_ms=100))
    assert held.verdict == "inconclusive"
    assert "saturated (5 request(s) shed): not judged" in held.reasons[0]
    # Without saturation the same window fails; errors fail whatever the saturation.
    assert analyse(s, window(100, latency_ms=100), window(1000)).verdict == "fail"
    erring = analyse(s, saturated(window(100, errors=10), 5), window(1000))
    assert erring.verdict == "fail"


def own(w: VersionWindow, shed: int, own_ms: float) -> VersionWindow:
    """`w` saturated, its own time (slot to answer) all in the bucket bounded by `own_ms`."""
    timed = window(w.requests, latency_ms=own_ms)
    return VersionWindow(w.requests, w.errors, w.buckets, shed, service_buckets=timed.buckets)


def test_under_saturation_a_ceiling_is_judged_by_each_versions_own_time() -> None:
    """Saturated, both versions' p95 through the router are over the ceiling (their queue).
    A candidate whose own time is over it while the stable version's is within fails: it is
    slow by itself, and must not keep its share of users through a busy hour."""
    s = spec(max_p95_latency_ms=50)
    slow = own(window(100, latency_ms=1000), 5, own_ms=1000)
    quick_stable = own(window(1000, latency_ms=1000), 0, own_ms=10)
    failed = analyse(s, slow, quick_stable)
    assert failed.verdict == "fail"
    assert failed.reasons[0].startswith("p95 latency 955.0 ms above max_p95_latency_ms 50.0: its ")
    assert (
        "own time (slot to answer) has a p95 of 955.0 ms while the stable version's, "
        in (failed.reasons[0])
    )
    # A candidate as quick as the stable version by itself: the queue's doing, held.
    quick = own(window(100, latency_ms=1000), 5, own_ms=10)
    assert analyse(s, quick, quick_stable).verdict == "inconclusive"
    # Both slow by themselves (the machine is): held, not the candidate's fault.
    slow_stable = own(window(1000, latency_ms=1000), 0, own_ms=1000)
    assert analyse(s, slow, slow_stable).saturated
    # No stable baseline, or a router that did not count own time: held as before.
    assert analyse(s, slow, own(window(10), 0, own_ms=10)).verdict == "inconclusive"
    assert analyse(s, slow, saturated(window(1000, latency_ms=1000), 0)).verdict == "inconclusive"


def test_under_saturation_a_regression_hidden_by_the_queue_fails_on_own_time() -> None:
    """The default analysis (a relative p95 limit, no ceiling), saturated: the stable
    version's longer queue makes its p95 through the router the larger one, but the
    candidate's own time is 100 times the stable's. It fails on that; unsaturated, or with
    own times alike, the queue-bound p95s judge as before."""
    s = spec(max_p95_regression_pct=20)
    slow = own(window(100, latency_ms=100), 5, own_ms=1000)
    stable = own(window(1000, latency_ms=1000), 0, own_ms=10)
    failed = analyse(s, slow, stable)
    assert failed.verdict == "fail"
    assert failed.reasons == [
        "own p95 (slot to answer) 955.0 ms is 9695% above the stable version's 9.8 ms, more "
        "than max_p95_regression_pct 20.0%, while the serving path was saturated (5 request(s) "
        "shed)"
    ]
    alike = own(window(100, latency_ms=100), 5, own_ms=10)
    assert analyse(s, alike, stable).verdict == "pass"
    unsaturated = own(window(100, latency_ms=100), 0, own_ms=1000)
    assert analyse(s, unsaturated, stable).verdict == "pass"  # no shed: what users saw judges


def test_the_summary_gives_a_queued_versions_own_p95() -> None:
    queued = VersionWindow(
        200, 0, window(200).buckets, 0, 0, 3.0, window(200, latency_ms=5).buckets
    )
    result = analyse(spec(), window(100), queued)
    assert "p95 9.8 ms (queued 15.0 ms avg, own p95 4.8 ms)" in result.summary


def test_a_relative_regression_fails_under_saturation_too() -> None:
    s = spec(max_p95_regression_pct=50)
    slow = analyse(s, saturated(window(100, latency_ms=100), 5), window(1000, latency_ms=10))
    assert slow.verdict == "fail"  # both versions shared the saturation


def test_mirrors_dropped_to_protect_the_stable_version_are_saturation_not_light_traffic() -> None:
    """A blue-green preview under load: the router sent the candidate 4 mirrored requests and
    dropped 300 to keep the stable version's latency."""
    s = spec()
    preview = VersionWindow(4, 0, window(4).buckets, 0, mirrors_dropped=300)
    result = analyse(s, preview, window(900))
    assert (result.verdict, result.saturated) == ("inconclusive", True)
    assert result.reasons == [
        "saturated: the router dropped 300 mirrored request(s) to keep the stable version's "
        "latency, so the candidate answered 4, fewer than min_requests 50"
    ]
    # Light traffic with nothing dropped is what it was: inconclusive, not saturated.
    thin = analyse(s, window(4), window(900))
    assert (thin.verdict, thin.saturated) == ("inconclusive", False)
    assert thin.reasons[0].startswith("too little traffic")
    # Enough mirrored answers despite drops: judged as usual.
    judged = analyse(s, VersionWindow(60, 0, window(60).buckets, 0, 300), window(900))
    assert judged.verdict == "pass"


def test_the_summary_says_how_long_requests_waited_for_a_slot() -> None:
    """The controller's line says what `serveops rollouts` prints: a version's mean wait in
    the router's queue, so a p95 that grew shows how much of it was queueing."""
    queued = VersionWindow(200, 0, window(200).buckets, 0, 0, queue_wait_s=3.0)
    result = analyse(spec(), window(100), queued)
    assert "stable 200 req, 0.00% errors, p95 9.8 ms (queued 15.0 ms avg)" in result.summary
    assert "queued" not in result.summary.split("; stable")[0]  # the candidate never waited

"""The rate checks' last look (simulator/final_look.py): exact error rates, checked against
enumeration and Monte Carlo with fixed seeds, and the sequential judge deciding at its maximum
a rate the mixture SPRT alone left open."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from simulator.checks import Side, Thresholds
from simulator.confseq import log_mixture_lr, rate_above
from simulator.final_look import final_look, first_above, last_below
from simulator.sequential import looks_for, rate_steps, sequential_decision
from tests.unit.test_sim_sequential import _paired, _tolerance

ALPHA = 0.05
GRID = looks_for(2000, 100, 200)  # the judge's default grid: 200, 300, ..., 2,000


def _ever(rows: list[int], p0: float, alpha: float, p: float) -> tuple[float, float]:
    """P(the rate check ever fails, ever passes) over `rows` at true rate p, by enumerating
    every path of counts (binomial increments between looks)."""
    last = final_look(rows, p0, alpha)
    steps = [b - a for a, b in zip([0, *rows[:-1]], rows, strict=True)]
    fail = passed = 0.0
    for inc in itertools.product(*(range(s + 1) for s in steps)):
        prob = math.prod(stats.binom.pmf(i, s, p) for i, s in zip(inc, steps, strict=True))
        counts = list(itertools.accumulate(inc))
        early = list(zip(rows[:-1], counts[:-1], strict=True))
        if any(k >= first_above(r, p0, alpha) for r, k in early) or counts[-1] >= last.fail_at:
            fail += prob
        if any(k <= last_below(r, p0, alpha) for r, k in early) or counts[-1] <= last.pass_at:
            passed += prob
    return fail, passed


def test_final_look_error_rates_match_exact_enumeration_and_stay_within_alpha() -> None:
    rows, p0, alpha = [6, 12, 18, 24], 0.3, 0.2
    last = final_look(rows, p0, alpha)
    fail, passed = _ever(rows, p0, alpha, p0)
    assert last.fail_level == pytest.approx(fail, abs=1e-9)
    assert last.pass_level == pytest.approx(passed, abs=1e-9)
    assert fail <= alpha
    assert passed <= alpha
    # the composite nulls' worst case is the limit itself: further from it, fewer errors
    assert _ever(rows, p0, alpha, 0.25)[0] < fail
    assert _ever(rows, p0, alpha, 0.35)[1] < passed


def test_final_look_spends_what_the_mixture_sprt_leaves_and_is_never_stricter() -> None:
    last = final_look(GRID, 0.01, ALPHA)
    # more lenient than the mSPRT at 2,000 rows (it spends the rest), on both sides
    assert last.fail_at < first_above(2000, 0.01, ALPHA)
    assert last.pass_at > last_below(2000, 0.01, ALPHA)
    assert last.pass_at < last.fail_at
    assert 0.03 < last.fail_level <= ALPHA
    assert 0.03 < last.pass_level <= ALPHA


@pytest.mark.parametrize("rows", [[5, 3], [], [-1, 4]])
def test_final_look_rejects_a_bad_grid(rows: list[int]) -> None:
    with pytest.raises(ValueError, match="nondecreasing"):
        final_look(rows, 0.01, ALPHA)


def test_final_look_rejects_a_limit_outside_zero_one() -> None:
    with pytest.raises(ValueError, match="p0"):
        final_look([10], 0.0, ALPHA)


def test_rate_check_at_the_limit_fails_at_most_alpha_under_peeking_to_the_last_look() -> None:
    """Flips exactly at the 1% limit, the check looked at on the whole grid and at the last
    look whatever it said before: the share that ever fails (passes) stays within alpha."""
    rng = np.random.default_rng(23)
    t, p0, runs = Thresholds(), 0.01, 2000
    fails = passes = 0
    for _ in range(runs):
        cum = np.cumsum(rng.random(2000) < p0)
        steps = rate_steps("agreement", p0, GRID, [int(cum[m - 1]) for m in GRID], t)
        fails += "fail" in steps
        passes += "pass" in steps
    exact = final_look(GRID, p0, ALPHA)
    assert fails / runs <= ALPHA + _tolerance(runs)
    assert passes / runs <= ALPHA + _tolerance(runs)
    assert fails / runs == pytest.approx(exact.fail_level, abs=_tolerance(runs))


def test_two_percent_flips_are_caught_at_least_95_percent_within_2000_rows() -> None:
    rng = np.random.default_rng(29)
    t, runs = Thresholds(), 400
    caught = sum(
        "fail" in rate_steps("agreement", 0.01, GRID, [int(cum[m - 1]) for m in GRID], t)
        for cum in (np.cumsum(rng.random(2000) < 0.02) for _ in range(runs))
    )
    assert caught / runs >= 0.95 - _tolerance(runs, 0.05)


def test_a_seeded_two_percent_flip_replay_fails_at_the_maximum_instead_of_inconclusive() -> None:
    """31 of 2,000 rows flipped: never enough for the mixture SPRT (which would have left the
    run inconclusive), enough for the last look's critical count."""
    base, cand = _paired(np.random.default_rng(16), 2000, flip=0.02)
    res = sequential_decision(base, cand)
    assert (res.decision, res.n_used) == ("fail", 2000)
    assert "at the last look" in res.checks["agreement"].reason
    assert res.checks["agreement"].figures["last_look"]["fail_at"] <= 31
    assert sequential_decision(base, cand, final=False).decision == "inconclusive"


def test_a_prefix_judged_live_gets_no_final_look() -> None:
    """The live watcher and a replay stopped early pass their own looks: their last look is not
    the replay's maximum, so it must not spend the alpha reserved for it."""
    base, cand = _paired(np.random.default_rng(16), 2000, flip=0.02)
    res = sequential_decision(base, cand, looks=[2000])
    assert res.decision == "inconclusive"
    assert "last_look" not in res.checks["agreement"].figures


def test_rate_test_catches_a_rate_far_above_the_prior_without_underflow() -> None:
    """400 (or all) of 2,000 rows bad against a 1% limit: the uniform prior on (1%, 2%] has its
    incomplete beta underflow; the likelihood ratio must still grow with the count."""
    assert rate_above(400, 2000, 0.01, ALPHA)
    assert rate_above(2000, 2000, 0.01, ALPHA)
    lr = [log_mixture_lr(k, 2000, 0.01, 0.01, 0.02) for k in range(20, 2001, 20)]
    assert all(b > a for a, b in itertools.pairwise(lr))
    assert math.isfinite(log_mixture_lr(0, 200_000, 0.01, 0.01, 0.02))


def test_every_output_row_wrong_fails_at_the_first_look() -> None:
    """Ten rows per request, all flipped: 2,000 rows at the first look, far beyond the prior;
    before the underflow fix the check never failed and the run ended inconclusive."""
    rng = np.random.default_rng(5)
    n = 400
    lat = rng.lognormal(np.log(20.0), 0.3, n)
    base = Side(lat, np.zeros(n, dtype=bool), outputs=[[0] * 10 for _ in range(n)])
    cand = Side(lat.copy(), np.zeros(n, dtype=bool), outputs=[[1] * 10 for _ in range(n)])
    res = sequential_decision(base, cand)
    assert (res.decision, res.n_used) == ("fail", 200)
    assert res.checks["agreement"].status == "fail"

"""The sequential judge and the power figures: Monte Carlo with fixed seeds.

Error rates are measured under peeking (a look every 50 or 100 pairs) at the null's worst
case; they must stay within alpha plus a Monte-Carlo tolerance (about 2.5 standard errors of
the measured share). A naive fixed-horizon interval looked at as often is shown to exceed it,
so the harness can tell a valid sequential test from an invalid one.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from controller.cli.main import app
from simulator.checks import Side, Thresholds
from simulator.compare import compare, latency_check, verdict
from simulator.confseq import (
    cs_multiplier,
    log_mixture_lr,
    log_ratio_sd,
    quantile_ratio_cs,
    rate_above,
    rate_below,
)
from simulator.power import error_mde, latency_mde, pilot_sd, rate_mde, required_pairs
from simulator.sequential import sequential_decision, with_sequential
from simulator.traffic import RecordedResponse, TrafficRecord, write_jsonl

ALPHA = 0.05
runner = CliRunner()


def _tolerance(runs: int, p: float = ALPHA) -> float:
    return 2.5 * math.sqrt(p * (1 - p) / runs)


def _paired(
    rng: np.random.Generator, n: int, slowdown: float = 0.0, flip: float = 0.0,
    shared_sigma: float = 0.5, own_sigma: float = 0.3,
) -> tuple[Side, Side]:  # fmt: skip
    shared = rng.lognormal(np.log(20.0), shared_sigma, n)
    labels = rng.integers(0, 2, n)
    flipped = np.where(rng.random(n) < flip, 1 - labels, labels)
    base = Side(
        shared * rng.lognormal(0, own_sigma, n), np.zeros(n, dtype=bool),
        outputs=[[int(x)] for x in labels],
    )  # fmt: skip
    cand = Side(
        shared * rng.lognormal(0, own_sigma, n) * (1 + slowdown), np.zeros(n, dtype=bool),
        outputs=[[int(x)] for x in flipped],
    )  # fmt: skip
    return base, cand


# --- the boundaries themselves -----------------------------------------------------------------


def test_cs_multiplier_is_wider_than_a_fixed_interval_and_tightest_near_n_opt() -> None:
    assert cs_multiplier(1000, ALPHA, 1000) > 1.96
    assert cs_multiplier(1000, ALPHA, 1000) == pytest.approx(3.03, abs=0.02)
    # in units of 1/sqrt(n) the radius is smallest around n_opt
    radius = [cs_multiplier(n, ALPHA, 1000) / math.sqrt(n) * math.sqrt(1000) for n in (300, 1000)]
    assert radius[1] < radius[0] * math.sqrt(1000 / 300)


def test_mixture_lr_is_one_before_any_data_and_grows_with_evidence() -> None:
    assert log_mixture_lr(0, 0, 0.01, 0.01, 0.04) == 0.0
    assert rate_above(60, 2000, 0.01, ALPHA)  # 3% against a 1% limit
    assert not rate_above(20, 2000, 0.01, ALPHA)
    assert rate_below(0, 1000, 0.01, ALPHA)
    assert not rate_below(0, 100, 0.01, ALPHA)


def test_mixture_lr_rejects_bad_null() -> None:
    with pytest.raises(ValueError, match="p0"):
        log_mixture_lr(1, 10, 0.0, 0.0, 0.5)


@pytest.mark.parametrize("test", ["above", "below"])
def test_rate_tests_keep_alpha_under_peeking_at_every_look(test: str) -> None:
    """Bernoulli streams exactly at the threshold (the worst case of both composite nulls),
    tested after every 25 rows up to 3,000: the share ever rejecting stays <= alpha."""
    rng = np.random.default_rng(19)
    p0, runs, n = 0.01, 400, 3000
    looks = range(25, n + 1, 25)
    rejected = 0
    for _ in range(runs):
        cum = np.cumsum(rng.random(n) < p0)
        fn = rate_above if test == "above" else rate_below
        if any(fn(int(cum[k - 1]), k, p0, ALPHA) for k in looks):
            rejected += 1
    assert rejected / runs <= ALPHA + _tolerance(runs)


# --- latency: false positives under peeking, and a naive rule that fails the same test -------


def _naive_fixed_fail(base: Side, cand: Side, n: int, tol: float) -> bool:
    """A fixed-horizon 95% interval, wrongly looked at repeatedly."""
    b, c = base.latency_ms[:n], cand.latency_ms[:n]
    d = math.log(np.quantile(c, 0.5) / np.quantile(b, 0.5))
    sd = log_ratio_sd(b, c, 0.5, paired=True)
    return math.expm1(d - 1.96 * sd / math.sqrt(n)) > tol


def test_latency_false_fail_rate_with_peeking_stays_under_alpha_and_naive_peeking_does_not() -> (
    None
):
    """A candidate exactly at the tolerance (the null's boundary), looked at every 50 pairs up
    to 1,000: the sequential judge fails it at most alpha of the time; the same number of looks
    at a fixed-horizon interval fails it more often than alpha."""
    rng = np.random.default_rng(7)
    t = Thresholds(latency_tolerance=0.05, gate_quantiles=[0.5], min_agreement=None)
    runs, n = 300, 1000
    looks = list(range(100, n + 1, 50))
    seq_fail = naive_fail = 0
    for _ in range(runs):
        base, cand = _paired(rng, n, slowdown=0.05, shared_sigma=0.0, own_sigma=0.58)
        for k in looks:  # the sequential judge's latency rule, at every look
            _, lo, _, _ = quantile_ratio_cs(
                base.latency_ms[:k], cand.latency_ms[:k], 0.5, alpha=ALPHA, n_opt=500,
                paired=True,
            )  # fmt: skip
            if lo > t.latency_tolerance:
                seq_fail += 1
                break
        if any(_naive_fixed_fail(base, cand, k, t.latency_tolerance) for k in looks):
            naive_fail += 1
    assert seq_fail / runs <= ALPHA / 2 + _tolerance(runs, ALPHA / 2)
    assert naive_fail / runs > ALPHA / 2 + _tolerance(runs, ALPHA / 2)  # peeking inflates it


def test_aa_runs_never_fail_and_mostly_pass_early() -> None:
    rng = np.random.default_rng(3)
    runs = 60
    results = [sequential_decision(*_paired(rng, 2000)) for _ in range(runs)]
    fails = sum(r.decision == "fail" for r in results)
    passes = sum(r.decision == "pass" for r in results)
    assert fails / runs <= ALPHA + _tolerance(runs)
    assert passes / runs >= 0.85
    assert np.median([r.n_used for r in results]) <= 1200  # well under the 2,000 available


def test_power_a_15_percent_slowdown_is_caught_and_early() -> None:
    rng = np.random.default_rng(5)
    runs = 40
    results = [sequential_decision(*_paired(rng, 2000, slowdown=0.15)) for _ in range(runs)]
    assert sum(r.decision == "fail" for r in results) / runs >= 0.95
    assert np.median([r.n_used for r in results]) <= 1000
    assert all("latency" in r.reason for r in results if r.decision == "fail")


def test_power_flips_are_caught() -> None:
    rng = np.random.default_rng(6)
    runs = 40
    results = [sequential_decision(*_paired(rng, 2000, flip=0.03)) for _ in range(runs)]
    caught = [r for r in results if r.decision == "fail"]
    assert len(caught) / runs >= 0.95
    assert all("agreement" in r.reason for r in caught)


def test_a_candidate_in_the_indifference_zone_runs_to_the_end() -> None:
    """10% slower: neither within the 5% tolerance nor a ruled-out 15%: undecided early."""
    rng = np.random.default_rng(8)
    res = sequential_decision(*_paired(rng, 400, slowdown=0.10, shared_sigma=0.0, own_sigma=0.58))
    assert res.decision == "inconclusive"
    assert res.n_used == 400
    assert "undecided after 400 pairs" in res.reason


def test_too_small_a_sample_is_inconclusive_never_a_pass() -> None:
    rng = np.random.default_rng(9)
    res = sequential_decision(*_paired(rng, 150))
    assert res.decision == "inconclusive"
    assert "too few pairs" in res.reason


def test_fixed_horizon_underpowered_latency_is_inconclusive_not_a_pass() -> None:
    """300 very noisy pairs: the interval's upper end may clear 25%, but a 25% slowdown would
    be caught far less than 95% of the time: inconclusive, and the MDE is printed."""
    rng = np.random.default_rng(10)
    base, cand = _paired(rng, 300, shared_sigma=0.0, own_sigma=1.2)
    loose = Thresholds(max_detectable_slowdown=None, latency_max_unresolved=10.0)
    assert latency_check(base, cand, loose, paired=True).status == "pass"  # the old answer
    check = latency_check(base, cand, Thresholds(latency_max_unresolved=10.0), paired=True)
    assert check.status == "inconclusive"
    assert "underpowered" in check.reason
    assert check.figures["mde"]["p95"] > 0.25


def test_sequential_judge_refuses_unpaired_sides() -> None:
    rng = np.random.default_rng(11)
    base, _ = _paired(rng, 300)
    _, cand = _paired(rng, 299)
    with pytest.raises(ValueError, match="paired"):
        sequential_decision(base, cand)


# --- wiring into the verdict -------------------------------------------------------------------


def test_with_sequential_informs_by_default_and_decides_when_asked() -> None:
    rng = np.random.default_rng(12)
    base, cand = _paired(rng, 2000, slowdown=0.30)
    t = Thresholds()
    checks = with_sequential(compare(base, cand, t), base, cand, t)
    seq = next(c for c in checks if c.name == "sequential")
    assert seq.status == "info"
    assert not seq.gating
    t2 = Thresholds(sequential=True)
    checks = with_sequential(compare(base, cand, t2), base, cand, t2)
    seq = next(c for c in checks if c.name == "sequential")
    assert seq.gating
    assert seq.status == "fail"
    assert seq.figures["n_used"] < 2000
    assert not next(c for c in checks if c.name == "latency").gating
    assert verdict(checks)[0] == "fail"


# --- power figures -----------------------------------------------------------------------------


def test_required_pairs_is_the_inverse_of_the_mde() -> None:
    sd = 1.5
    for seq in (False, True):
        n = required_pairs(sd, 0.10, ALPHA, 0.95, sequential=seq)
        assert latency_mde(sd, n, ALPHA, 0.95, sequential=seq) <= 0.10
        assert latency_mde(sd, n - 1, ALPHA, 0.95, sequential=seq) > 0.10
    assert required_pairs(sd, 0.1, ALPHA, 0.95, sequential=True) > required_pairs(
        sd, 0.1, ALPHA, 0.95
    )
    with pytest.raises(ValueError, match="positive"):
        required_pairs(sd, 0.0, ALPHA, 0.95)


def test_latency_mde_is_met_by_monte_carlo() -> None:
    """At the printed MDE, a fixed-horizon test on fresh data catches it >= 90% of the time."""
    rng = np.random.default_rng(13)
    n = 1000
    sd = float(np.mean([log_ratio_sd(*(s.latency_ms for s in _paired(rng, n)), 0.95,
                                     paired=True) for _ in range(5)]))  # fmt: skip
    mde = latency_mde(sd, n, ALPHA, 0.95)
    runs, caught = 100, 0
    for _ in range(runs):
        base, cand = _paired(rng, n, slowdown=mde)
        d = math.log(np.quantile(cand.latency_ms, 0.95) / np.quantile(base.latency_ms, 0.95))
        s = log_ratio_sd(base.latency_ms, cand.latency_ms, 0.95, paired=True)
        caught += d - 1.96 * s / math.sqrt(n) > 0
    assert caught / runs >= 0.90


def test_rate_and_error_mdes_shrink_with_n() -> None:
    assert 0.01 < rate_mde(0.01, 2000, ALPHA, 0.95) < rate_mde(0.01, 500, ALPHA, 0.95)
    assert error_mde(0.002, 2000, ALPHA, 0.95) < error_mde(0.002, 500, ALPHA, 0.95)
    assert error_mde(0.0, 1000, ALPHA, 0.95) == pytest.approx((1.645 + 1.645) ** 2 / 1000, 0.01)


def test_pilot_needs_enough_latencies() -> None:
    with pytest.raises(ValueError, match="at least 20"):
        pilot_sd(np.array([1.0, 2.0, 3.0]), 0.95)


# --- serveops traffic power --------------------------------------------------------------------


def _recorded(path: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lat = rng.lognormal(np.log(20), 0.5, n)
    write_jsonl(path, [
        TrafficRecord(id=str(i), ts=1.7e9 + i, route="/m", body={"inputs": [1]},
                      response=RecordedResponse(status=200, latency_ms=float(x)))
        for i, x in enumerate(lat)
    ])  # fmt: skip
    return path


def test_power_command_plans_pairs_and_flags_a_short_budget(tmp_path: Path) -> None:
    traffic = _recorded(tmp_path / "t.jsonl", 500)
    ok = runner.invoke(app, ["traffic", "power", str(traffic), "--detect", "10%"])
    assert ok.exit_code == 0, ok.output
    assert "fixed horizon:" in ok.output
    assert "sequential:" in ok.output
    short = runner.invoke(app, ["traffic", "power", str(traffic), "--detect", "0.05",
                                "--budget", "100"])  # fmt: skip
    assert short.exit_code == 1
    assert "over budget" in short.output


@pytest.mark.parametrize("detect", ["ten", "-5%", "0"])
def test_power_command_rejects_bad_detect(tmp_path: Path, detect: str) -> None:
    traffic = _recorded(tmp_path / "t.jsonl", 50)
    res = runner.invoke(app, ["traffic", "power", str(traffic), "--detect", detect])
    assert res.exit_code == 2
    assert "--detect" in res.output


def test_power_command_without_recorded_latencies_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_jsonl(path, [TrafficRecord(id=str(i), ts=1.7e9 + i, route="/m") for i in range(30)])
    res = runner.invoke(app, ["traffic", "power", str(path)])
    assert res.exit_code == 2
    assert "at least 20" in res.output


def test_noise_floor_widens_the_sequential_tolerance() -> None:
    """An environment whose own A/A differs by 12% cannot fail a candidate 12% slower."""
    rng = np.random.default_rng(14)
    base, cand = _paired(rng, 2000, slowdown=0.12)
    floor = Side(cand.latency_ms * rng.lognormal(0, 0.05, 2000), np.zeros(2000, dtype=bool))
    alone = sequential_decision(base, cand)
    assert alone.decision == "fail"
    widened = sequential_decision(base, cand, noise_floor=floor)
    assert widened.decision != "fail"
    assert widened.checks["latency"].figures["effective_tolerance"] > 0.10


def test_simulate_refuses_a_bad_detect_before_reading_anything(tmp_path: Path) -> None:
    res = runner.invoke(
        app,
        ["simulate", "--traffic", str(tmp_path / "t.jsonl"), "--base", "main", "--head", "HEAD",
         "--repo", str(tmp_path / "no-repo"), "--sequential", "--detect", "lots"],
    )  # fmt: skip
    assert res.exit_code == 2
    assert "--detect" in res.output
    assert "no-repo" not in res.output


def test_block_chance_at_half_the_tolerance_matches_monte_carlo() -> None:
    """The printed chance that the fixed rule blocks a candidate 2.5% slower (tolerance 5%)
    agrees with how often it does, within Monte-Carlo error plus the approximation's."""
    rng = np.random.default_rng(15)
    runs, n = 150, 1000
    printed, blocked = [], 0
    for r in range(runs):
        base, cand = _paired(rng, n, slowdown=0.025, shared_sigma=0.0, own_sigma=0.3)
        check = latency_check(base, cand, Thresholds(seed=r, bootstrap_resamples=200), paired=True)
        printed.append(check.figures["block_chance_at_half_tolerance"])
        blocked += check.status == "fail"
    assert 0.0 < float(np.mean(printed)) < 1.0
    assert abs(blocked / runs - float(np.mean(printed))) < 0.08


def test_the_look_grid_is_bounded_and_a_subset_of_the_fine_grid() -> None:
    from simulator.sequential import MAX_LOOKS, looks_for

    fine = looks_for(2000, 100, 200)
    assert fine[:3] == [200, 300, 400]
    assert fine[-1] == 2000
    big = looks_for(1_000_000, 100, 200)
    assert len(big) <= MAX_LOOKS + 2
    assert all(m % 100 == 0 for m in big)
    assert big[-1] == 1_000_000

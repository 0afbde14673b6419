"""simulator.compare and what it draws on (stats, outputs, drift): the statistics and the verdict, on synthetic data with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from simulator.checks import CheckResult, Side, Thresholds
from simulator.compare import compare, error_check, latency_check, replay_validity_check, verdict
from simulator.drift import dataframe_split_features, input_drift_check
from simulator.outputs import output_checks
from simulator.stats import cohen_kappa, psi, wilson_interval


def _paired(
    seed: int, n: int = 2000, slowdown: float = 0.0, flip: float = 0.0
) -> tuple[Side, Side]:
    rng = np.random.default_rng(seed)
    shared = rng.lognormal(np.log(20), 0.5, n)
    labels = rng.integers(0, 2, n)
    flipped = np.where(rng.random(n) < flip, 1 - labels, labels)
    base = Side(
        shared * rng.lognormal(0, 0.3, n),
        np.zeros(n, dtype=bool),
        outputs=[[int(x)] for x in labels],
    )
    cand = Side(
        shared * rng.lognormal(0, 0.3, n) * (1 + slowdown),
        np.zeros(n, dtype=bool),
        outputs=[[int(x)] for x in flipped],
    )
    return base, cand


def test_wilson_interval_matches_known_values() -> None:
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3)
    assert hi == pytest.approx(0.5962, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(100, 100)
    assert hi == 1.0
    assert lo > 0.96


def test_cohen_kappa() -> None:
    assert cohen_kappa([0, 1, 0, 1], [0, 1, 0, 1]) == pytest.approx(1.0)
    assert cohen_kappa([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)
    # Textbook example: agreement 0.7, chance agreement 0.5 -> kappa 0.4.
    a = [1] * 20 + [1] * 5 + [0] * 10 + [0] * 15
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 5000)
    assert psi(ref, rng.normal(0, 1, 5000)) < 0.02
    assert psi(ref, rng.normal(1.5, 1, 5000)) > 0.5
    assert psi(np.ones(10), np.ones(10)) == pytest.approx(0.0, abs=1e-9)


def test_same_service_twice_passes() -> None:
    base, cand = _paired(1)
    checks = compare(base, cand, Thresholds(), paired=True)
    v, reason = verdict(checks)
    assert v == "pass", reason
    lat = next(c for c in checks if c.name == "latency")
    p95 = lat.figures["quantiles"]["p95"]
    assert p95["ci_low"] < 0 < p95["ci_high"]


def test_fifteen_percent_slower_fails_with_reason() -> None:
    base, cand = _paired(2, slowdown=0.15)
    check = latency_check(base, cand, Thresholds(), paired=True)
    assert check.status == "fail"
    assert "p95 +1" in check.reason or "p50 +1" in check.reason
    p95 = check.figures["quantiles"]["p95"]
    assert p95["delta"] == pytest.approx(0.15, abs=0.06)
    assert p95["ci_low"] > 0
    assert check.figures["mann_whitney"]["rank_biserial"] > 0


def test_too_few_requests_is_inconclusive() -> None:
    base, cand = _paired(3, n=50)
    assert latency_check(base, cand, Thresholds(), paired=True).status == "inconclusive"


def test_noisy_small_sample_is_inconclusive_not_pass() -> None:
    rng = np.random.default_rng(4)
    n = 250
    base = Side(rng.lognormal(3, 1.5, n), np.zeros(n, dtype=bool))
    cand = Side(rng.lognormal(3, 1.5, n), np.zeros(n, dtype=bool))
    check = latency_check(base, cand, Thresholds(), paired=False)
    assert check.status == "inconclusive"
    assert "too noisy" in check.reason


def test_paired_bootstrap_is_tighter_than_unpaired_on_correlated_data() -> None:
    base, cand = _paired(5)
    paired = latency_check(base, cand, Thresholds(), paired=True).figures["quantiles"]["p50"]
    unpaired = latency_check(base, cand, Thresholds(), paired=False).figures["quantiles"]["p50"]
    assert paired["ci_high"] - paired["ci_low"] < unpaired["ci_high"] - unpaired["ci_low"]


def test_noise_floor_widens_the_tolerance() -> None:
    base, cand = _paired(6, slowdown=0.08)
    noise = Side(base.latency_ms * 1.10, base.error)
    plain = latency_check(base, cand, Thresholds(), paired=True)
    floored = latency_check(base, cand, Thresholds(), paired=True, noise_floor=noise)
    assert plain.status == "fail"
    assert floored.figures["effective_tolerance"] == pytest.approx(0.10, abs=1e-9)
    assert floored.status == "pass"


def test_errors_mcnemar_catches_a_paired_increase() -> None:
    n = 2000
    base_err = np.zeros(n, dtype=bool)
    cand_err = np.zeros(n, dtype=bool)
    base_err[:4] = True
    cand_err[:40] = True
    base = Side(np.ones(n), base_err)
    cand = Side(np.ones(n), cand_err)
    check = error_check(base, cand, Thresholds(), paired=True)
    assert check.status == "fail"
    assert check.figures["mcnemar"]["candidate_only"] == 36
    assert check.figures["mcnemar"]["p_value"] < 1e-9
    # The same counts unpaired use Fisher's exact test.
    unpaired = error_check(base, cand, Thresholds(), paired=False)
    expected = stats.fisher_exact([[40, n - 40], [4, n - 4]], alternative="greater").pvalue
    assert unpaired.figures["fisher"]["p_value"] == pytest.approx(expected)


def test_equal_errors_pass() -> None:
    n = 1000
    err = np.zeros(n, dtype=bool)
    err[::100] = True
    assert (
        error_check(Side(np.ones(n), err), Side(np.ones(n), err), Thresholds(), paired=True).status
        == "pass"
    )


def test_two_percent_flips_fail_with_flip_matrix() -> None:
    base, cand = _paired(7, flip=0.02)
    checks = {c.name: c for c in output_checks(base, cand, Thresholds())}
    agreement = checks["agreement"]
    assert agreement.status == "fail"
    flips = agreement.figures["flip_matrix"]
    assert flips["0->1"] + flips["1->0"] == pytest.approx(40, abs=20)
    assert flips["0->0"] + flips["1->1"] + flips["0->1"] + flips["1->0"] == 2000
    assert 0.9 < agreement.figures["cohen_kappa"] < 1.0
    assert checks["output_shift"].status == "pass"


def test_identical_predictions_pass_agreement() -> None:
    base, cand = _paired(8)
    agreement = next(c for c in output_checks(base, cand, Thresholds()) if c.name == "agreement")
    assert agreement.status == "pass"
    assert agreement.figures["agreement"] == 1.0


def test_regression_outputs_use_tolerances() -> None:
    n = 500
    x = np.linspace(0.1, 10, n)
    base = Side(np.ones(n), np.zeros(n, dtype=bool), outputs=[[float(v)] for v in x])
    close = Side(np.ones(n), np.zeros(n, dtype=bool), outputs=[[float(v) * 1.0001] for v in x])
    far = Side(np.ones(n), np.zeros(n, dtype=bool), outputs=[[float(v) * 1.2] for v in x])
    t = Thresholds(regression_rel_tol=1e-3)
    ok = {c.name: c for c in output_checks(base, close, t)}
    assert ok["regression_diff"].status == "pass"
    bad = {c.name: c for c in output_checks(base, far, t)}
    assert bad["regression_diff"].status == "fail"
    assert bad["regression_diff"].figures["max_abs_diff"] == pytest.approx(2.0, rel=1e-6)


def test_output_shift_fails_when_the_label_mix_changes() -> None:
    n = 1000
    base = Side(np.ones(n), np.zeros(n, dtype=bool), outputs=[[i % 2] for i in range(n)])
    cand = Side(
        np.ones(n), np.zeros(n, dtype=bool), outputs=[[1 if i % 10 else 0] for i in range(n)]
    )
    shift = next(c for c in output_checks(base, cand, Thresholds()) if c.name == "output_shift")
    assert shift.status == "fail"
    assert shift.figures["js_divergence"] > 0.05


def test_input_drift_per_feature() -> None:
    rng = np.random.default_rng(9)
    ref = {"a": rng.normal(0, 1, 3000), "b": rng.normal(0, 1, 3000)}
    cur = {"a": rng.normal(0, 1, 1000), "b": rng.normal(2, 1, 1000)}
    info = input_drift_check(ref, cur, Thresholds())
    assert info.status == "info"
    assert not info.gating
    assert info.figures["worst_feature"] == "b"
    gated = input_drift_check(ref, cur, Thresholds(max_input_psi=0.2))
    assert gated.status == "fail"
    assert "b" in gated.reason
    assert gated.figures["features"]["a"]["psi"] < 0.1


def test_dataframe_split_features_reads_columns() -> None:
    bodies = [
        {"dataframe_split": {"columns": ["x", "y"], "data": [[1, 2.5], [3, 4.0]]}},
        {"inputs": [1, 2]},
    ]
    feats = dataframe_split_features(bodies)
    assert feats["x"].tolist() == [1.0, 3.0]
    assert feats["y"].tolist() == [2.5, 4.0]


def test_replay_validity_flags_lag_and_drops() -> None:
    t = Thresholds()
    assert replay_validity_check(1.0, 0, 100, t).status == "pass"
    lag = replay_validity_check(9.0, 0, 100, t)
    assert lag.status == "inconclusive"
    assert "lag p99" in lag.reason
    drop = replay_validity_check(1.0, 3, 100, t)
    assert drop.status == "inconclusive"
    assert "3 of 100" in drop.reason


def test_verdict_folds_gating_checks() -> None:
    def c(status: str, gating: bool = True) -> CheckResult:
        return CheckResult(name=status, status=status, gating=gating, reason=f"r-{status}")  # type: ignore[arg-type]

    assert verdict([c("pass"), c("info", False)])[0] == "pass"
    assert verdict([c("pass"), c("inconclusive")])[0] == "inconclusive"
    v, reason = verdict([c("inconclusive"), c("fail")])
    assert v == "fail"
    assert "r-fail" in reason
    assert verdict([c("pass"), c("fail", False)])[0] == "pass"


def test_side_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="length"):
        Side(np.ones(3), np.zeros(2, dtype=bool))

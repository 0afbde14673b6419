"""What a run can see: minimum detectable effects and sample-size planning. Pure SciPy.

All figures are normal approximations, checked against Monte Carlo in bench/judge_power.py:
- latency: the smallest relative slowdown of a quantile that a run of n pairs flags with
  probability `power`, from the per-request sd of log(Q_cand / Q_base)'s influence function;
- rates (flips, outputs out of tolerance): the smallest rate above the threshold p0 caught;
- paired errors (McNemar): the smallest error-rate increase caught, given the baseline rate.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats

from simulator.confseq import FloatArray, cs_multiplier, log_quantile_influence


def _z(p: float) -> float:
    return float(stats.norm.ppf(p))


def latency_mde(
    sd: float, n: int, alpha: float, power: float, *, sequential: bool = False,
    n_opt: float | None = None,
) -> float:  # fmt: skip
    """Smallest relative slowdown (0.1 = 10%) detected with probability `power` at n pairs."""
    if n <= 1 or not math.isfinite(sd):
        return float("inf")
    crit = cs_multiplier(n, alpha, n_opt or n) if sequential else _z(1 - alpha / 2)
    return math.expm1((crit + _z(power)) * sd / math.sqrt(n))


def rate_mde(p0: float, n: int, alpha: float, power: float) -> float:
    """Smallest Bernoulli rate above p0 whose lower confidence bound clears p0 w.p. `power`."""
    if n <= 0:
        return 1.0
    k = _z(1 - alpha / 2) + _z(power)

    def gap(p1: float) -> float:
        return p1 - p0 - k * math.sqrt(p1 * (1 - p1) / n)

    hi = 1.0 - 1e-12
    if gap(hi) < 0:
        return 1.0
    return float(optimize.brentq(gap, p0 + 1e-12, hi))


def error_mde(base_rate: float, n: int, alpha: float, power: float) -> float:
    """Smallest paired error-rate increase (absolute) McNemar catches w.p. `power` at n pairs.

    Discordant pairs occur at about 2 * base_rate + delta; the candidate-only excess is delta.
    """
    if n <= 0:
        return 1.0
    k2 = (_z(1 - alpha) + _z(power)) ** 2
    return float((k2 + math.sqrt(k2 * k2 + 8 * n * k2 * base_rate)) / (2 * n))


def pilot_sd(latency_ms: FloatArray, q: float) -> float:
    """Per-pair sd of the log quantile ratio, planned from one side's recorded latencies.

    Assumes the candidate's noise is independent of the baseline's (no pairing benefit) and of
    the same shape: conservative, as pairing only removes shared noise.
    """
    x = np.asarray(latency_ms, dtype=np.float64)
    x = x[np.isfinite(x) & (x > 0)]
    if x.size < 20:
        raise ValueError(f"a pilot needs at least 20 recorded latencies, got {x.size}")
    return float(math.sqrt(2.0) * np.std(log_quantile_influence(x, q), ddof=1))


def required_pairs(
    sd: float, detect: float, alpha: float, power: float, *, sequential: bool = False,
    limit: int = 10_000_000,
) -> int:  # fmt: skip
    """Pairs needed to catch a relative slowdown `detect` with probability `power`.

    Fixed horizon: the closed form. Sequential: the horizon at which the confidence sequence
    (tuned for that horizon) reaches the same power: its maximum sample size; it usually stops
    earlier.
    """
    if detect <= 0:
        raise ValueError("detect must be a positive relative slowdown, e.g. 0.1")
    target = math.log1p(detect)
    if not sequential:
        n = ((_z(1 - alpha / 2) + _z(power)) * sd / target) ** 2
        return max(2, math.ceil(n))
    lo, hi = 2, 2
    while latency_mde(sd, hi, alpha, power, sequential=True) > detect:
        hi *= 2
        if hi > limit:
            return limit
    while lo < hi:
        mid = (lo + hi) // 2
        if latency_mde(sd, mid, alpha, power, sequential=True) > detect:
            lo = mid + 1
        else:
            hi = mid
    return lo


def block_chance(sd: float, n: int, true_slowdown: float, tolerance: float, alpha: float) -> float:
    """Probability that the fixed-horizon latency rule (interval above 0 and point estimate over
    the tolerance) fails a candidate whose true slowdown at this quantile is `true_slowdown`."""
    if n <= 1 or not math.isfinite(sd) or sd <= 0:
        return 0.0
    se = sd / math.sqrt(n)
    bar = max(math.log1p(tolerance), _z(1 - alpha / 2) * se)
    return float(stats.norm.sf((bar - math.log1p(true_slowdown)) / se))

"""Always-valid statistics: confidence sequences and mixture likelihood ratios. Pure numpy/SciPy.

A confidence sequence (CS) holds its coverage at every sample size at once, so it may be
looked at after every batch of a replay and the replay stopped as soon as it is clear, without
the false-positive inflation that repeated fixed-horizon tests suffer.

- Latency quantiles: the asymptotic CS of Waudby-Smith, Arnold, Wu and Ramdas ("Time-uniform
  central limit theory and asymptotic confidence sequences", Annals of Statistics 2024), i.e.
  Robbins' two-sided normal-mixture boundary (Howard, Ramdas, McAuliffe and Sekhon,
  "Time-uniform, nonparametric, nonasymptotic confidence sequences", Annals of Statistics
  2021) scaled by the estimated standard deviation of the estimator's influence function. A
  quantile is asymptotically linear (Bahadur's representation), with influence function
  (q - 1{x <= xi}) / f(xi); the density at the quantile is the Siddiqui-Bloch-Gastwirth
  sparsity estimate with the Hall-Sheather bandwidth.
- Bernoulli rates (flips, paired errors): mixture sequential probability ratio tests
  (mSPRT, Robbins 1970): the likelihood ratio against the null's boundary value, averaged over
  a uniform prior on the alternative region, is a nonnegative supermartingale under the whole
  composite null, so by Ville's inequality it ever reaches 1/alpha with probability <= alpha.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy import special, stats

FloatArray = npt.NDArray[np.float64]


def mixture_rho(n_opt: float, alpha: float) -> float:
    """The normal-mixture parameter that makes the boundary tightest at `n_opt` samples."""
    la = -2.0 * math.log(alpha)
    return math.sqrt((la + math.log(la + 1.0)) / max(n_opt, 1.0))


def cs_multiplier(n: int, alpha: float, n_opt: float) -> float:
    """Radius of the two-sided level-alpha CS at n, in units of sigma / sqrt(n).

    A fixed-horizon interval uses z_{1-alpha/2} (1.96); this is about 3.0 at `n_opt` for
    alpha 0.05: the price of being allowed to look at every n.
    """
    rho2 = mixture_rho(n_opt, alpha) ** 2
    t = float(n)
    v = 2.0 * (t * rho2 + 1.0) / (t * rho2) * math.log(math.sqrt(t * rho2 + 1.0) / alpha)
    return math.sqrt(v)


def _hall_sheather(n: int, q: float, alpha: float) -> float:
    z = special.ndtri(q)
    dens = math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    za = special.ndtri(1 - alpha / 2)
    return float(n ** (-1 / 3) * za ** (2 / 3) * (1.5 * dens**2 / (2 * z**2 + 1)) ** (1 / 3))


def sparsity(sorted_x: FloatArray, q: float, alpha: float = 0.05) -> float:
    """1 / f(xi_q): the Siddiqui-Bloch-Gastwirth difference quotient of empirical quantiles."""
    n = sorted_x.size
    h = _hall_sheather(n, q, alpha)
    lo, hi = max(q - h, 1.0 / n), min(q + h, 1.0 - 1.0 / n)
    if hi <= lo:
        return float("nan")
    qlo, qhi = np.quantile(sorted_x, [lo, hi])
    s = float((qhi - qlo) / (hi - lo))
    # Ties (e.g. a timer's resolution) can make the quotient 0; fall back to the data's scale.
    return s if s > 0 else float(np.std(sorted_x) or 1e-9)


def log_quantile_influence(x: FloatArray, q: float, alpha: float = 0.05) -> FloatArray:
    """Per-observation influence of log(Q_q(x)): (q - 1{x <= xi}) / (f(xi) xi)."""
    xs = np.sort(x)
    xi = float(np.quantile(xs, q))
    if xi <= 0:
        return np.zeros(x.size)
    return (q - (x <= xi).astype(np.float64)) * sparsity(xs, q, alpha) / xi


def log_ratio_sd(base: FloatArray, cand: FloatArray, q: float, *, paired: bool) -> float:
    """Standard deviation (per request) of log(Q_q(cand) / Q_q(base))'s influence function."""
    ib = log_quantile_influence(base, q)
    ic = log_quantile_influence(cand, q)
    if paired and base.size == cand.size:
        return float(np.std(ic - ib, ddof=1))
    return float(math.sqrt(np.var(ib, ddof=1) + np.var(ic, ddof=1)))


def quantile_ratio_cs(
    base: FloatArray, cand: FloatArray, q: float, *, alpha: float, n_opt: float, paired: bool
) -> tuple[float, float, float, float]:
    """Relative delta of the q-quantile (cand/base - 1): point, CS low, CS high, and the sd."""
    qb, qc = float(np.quantile(base, q)), float(np.quantile(cand, q))
    if qb <= 0 or qc <= 0:
        return float("nan"), float("-inf"), float("inf"), float("nan")
    d = math.log(qc / qb)
    sd = log_ratio_sd(base, cand, q, paired=paired)
    n = min(base.size, cand.size)
    r = cs_multiplier(n, alpha, n_opt) * sd / math.sqrt(n)
    return math.expm1(d), math.expm1(d - r), math.expm1(d + r), sd


def _log_interval_mass(k: int, n: int, a: float, b: float) -> float:
    """log of the integral over [a, b] of theta^k (1-theta)^(n-k) d theta."""
    pa, pb = k + 1.0, n - k + 1.0
    ca, cb = float(special.betainc(pa, pb, a)), float(special.betainc(pa, pb, b))
    if cb - ca > 1e-12 * max(cb, 1e-300) and cb > 1e-250:
        mass = cb - ca
    else:  # both ends deep in the upper tail: the survival functions keep the precision
        mass = float(special.betaincc(pa, pb, a)) - float(special.betaincc(pa, pb, b))
    if mass > 1e-250:
        return float(special.betaln(pa, pb)) + math.log(mass)
    # Both ends far on one side of the observed rate k/n (e.g. 400 of 2,000 rows against a prior
    # on (1%, 2%]): the incomplete beta underflows to 0. It is a binomial tail,
    # I_x(k + 1, n - k + 1) = P(Binomial(n + 1, x) > k); sum that in log space instead.
    if k >= b * n:
        near, far = _log_binomial_tail(k, n, b, upper=True), _log_binomial_tail(k, n, a, upper=True)
    else:
        near, far = (
            _log_binomial_tail(k, n, a, upper=False),
            _log_binomial_tail(k, n, b, upper=False),
        )
    if not far < near:
        return -math.inf
    return float(special.betaln(pa, pb)) + near + math.log1p(-math.exp(far - near))


def _log_binomial_tail(k: int, n: int, x: float, *, upper: bool) -> float:
    """log P(Binomial(n + 1, x) > k) (upper) or log P(Binomial(n + 1, x) <= k)."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if (x >= 1.0) == upper else -math.inf
    j = np.arange(k + 1, n + 2) if upper else np.arange(0, k + 1)
    return float(special.logsumexp(stats.binom.logpmf(j, n + 1, x)))


def log_mixture_lr(k: int, n: int, p0: float, lo: float, hi: float) -> float:
    """log of the mixture likelihood ratio: Bernoulli(theta) with theta uniform on [lo, hi],
    against Bernoulli(p0), after k successes in n trials. With [lo, hi] entirely on one side of
    p0 it is a supermartingale under every p on the other side (or at p0)."""
    if n == 0:
        return 0.0
    if not 0 < p0 < 1:
        raise ValueError("p0 must lie strictly between 0 and 1")
    log_null = k * math.log(p0) + (n - k) * math.log1p(-p0)
    return _log_interval_mass(k, n, lo, hi) - math.log(hi - lo) - log_null


def rate_above(k: int, n: int, p0: float, alpha: float, width: float = 1.0) -> bool:
    """Always-valid evidence that a Bernoulli rate exceeds p0 (error <= alpha under p <= p0).

    The prior spans (p0, p0 * (1 + width)] (capped at 1): the alternatives hardest to catch in
    time (twice the limit by default; larger rates still win, their likelihood ratio grows
    faster). Any prior on the alternative keeps alpha; this one measured best at catching a
    2x limit within 2,000 rows (bench/judge_power.py).
    """
    hi = min(1.0, p0 * (1.0 + width))
    return log_mixture_lr(k, n, p0, p0, hi) >= math.log(1.0 / alpha)


def rate_below(k: int, n: int, p0: float, alpha: float) -> bool:
    """Always-valid evidence that a Bernoulli rate is below p0 (error <= alpha under p >= p0)."""
    return log_mixture_lr(k, n, p0, 0.0, p0) >= math.log(1.0 / alpha)

"""Statistics the judge's checks share, generic and pure (numpy/SciPy): intervals, agreement,
distribution shift, bootstrap deltas of quantiles."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

FloatArray = npt.NDArray[np.float64]


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    z = float(stats.norm.ppf(1 - alpha / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def cohen_kappa(a: Sequence[Any], b: Sequence[Any]) -> float:
    labels = sorted({*a, *b}, key=repr)
    if len(a) == 0:
        return float("nan")
    index = {lab: i for i, lab in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)))
    for x, y in zip(a, b, strict=True):
        m[index[x], index[y]] += 1
    n = m.sum()
    po = np.trace(m) / n
    pe = float((m.sum(axis=0) * m.sum(axis=1)).sum() / (n * n))
    if pe >= 1.0:
        return 1.0 if po >= 1.0 else 0.0
    return float((po - pe) / (1 - pe))


def psi(reference: FloatArray, actual: FloatArray, bins: int = 10, eps: float = 1e-4) -> float:
    """Population stability index of `actual` against `reference`, quantile bins of the latter."""
    reference = np.asarray(reference, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if reference.size == 0 or actual.size == 0:
        return float("nan")
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if edges.size < 2:  # constant reference: two bins, "equal to it" and "not"
        share = float(np.mean(actual == edges[0]))
        p = np.array([1.0, 0.0])
        q = np.array([share, 1.0 - share])
    else:
        inner = edges[1:-1]
        p = np.bincount(np.searchsorted(inner, reference, side="right"), minlength=edges.size - 1)
        q = np.bincount(np.searchsorted(inner, actual, side="right"), minlength=edges.size - 1)
        p = p / p.sum()
        q = q / q.sum()
    p = np.clip(p, eps, None)
    q = np.clip(q, eps, None)
    return float(np.sum((q - p) * np.log(q / p)))


def categorical_psi_js(
    a: Sequence[Any], b: Sequence[Any], eps: float = 1e-4
) -> tuple[float, float]:
    """PSI and Jensen-Shannon divergence (base 2) between two label distributions."""
    labels = sorted({*a, *b}, key=repr)
    pa = np.array([sum(1 for x in a if x == lab) for lab in labels], dtype=np.float64)
    pb = np.array([sum(1 for x in b if x == lab) for lab in labels], dtype=np.float64)
    pa, pb = pa / max(pa.sum(), 1), pb / max(pb.sum(), 1)
    from scipy.spatial.distance import jensenshannon

    js = float(jensenshannon(pa, pb, base=2) ** 2) if labels else 0.0
    pa_c, pb_c = np.clip(pa, eps, None), np.clip(pb, eps, None)
    return float(np.sum((pb_c - pa_c) * np.log(pb_c / pa_c))), js


def binned_js(reference: FloatArray, actual: FloatArray, bins: int = 20) -> float:
    from scipy.spatial.distance import jensenshannon

    both = np.concatenate([reference, actual])
    edges = np.unique(np.quantile(both, np.linspace(0, 1, bins + 1)))
    if edges.size < 2:
        return 0.0
    p, _ = np.histogram(reference, edges)
    q, _ = np.histogram(actual, edges)
    return float(jensenshannon(p / p.sum(), q / q.sum(), base=2) ** 2)


def bootstrap_quantile_deltas(
    base: FloatArray,
    cand: FloatArray,
    quantiles: Sequence[float],
    *,
    paired: bool,
    resamples: int,
    alpha: float,
    rng: np.random.Generator,
) -> dict[float, tuple[float, float, float]]:
    """Relative delta (cand/base - 1) per quantile: (point, low, high), percentile bootstrap.

    Paired: the same request indices are drawn for both sides, keeping their shared noise.
    """
    qs = np.asarray(quantiles)
    point_b = np.quantile(base, qs)
    point_c = np.quantile(cand, qs)
    ib = rng.integers(0, base.size, size=(resamples, base.size))
    ic = ib if paired else rng.integers(0, cand.size, size=(resamples, cand.size))
    boot_b = np.quantile(base[ib], qs, axis=1)  # (len(qs), resamples)
    boot_c = np.quantile(cand[ic], qs, axis=1)
    rel = boot_c / np.where(boot_b > 0, boot_b, np.nan) - 1
    lo = np.nanquantile(rel, alpha / 2, axis=1)
    hi = np.nanquantile(rel, 1 - alpha / 2, axis=1)
    out = {}
    for k, q in enumerate(quantiles):
        pt = float(point_c[k] / point_b[k] - 1) if point_b[k] > 0 else float("nan")
        out[float(q)] = (pt, float(lo[k]), float(hi[k]))
    return out

"""Per-feature drift of a window of live inputs against a reference: PSI, Kolmogorov-Smirnov,
Jensen-Shannon, and the shares of missing and out-of-range values.

A `ReferenceProfile` is built once per reference: PSI's bin edges from the reference's
quantiles and its share per bin, and a finer grid (`KS_GRID` reference quantiles) with the
reference's exact CDF on it. A window is never held: `WindowCounts` adds each chunk of values
read to per-feature histograms on those fixed bins (a `searchsorted` and a `bincount`), so its
memory is the bins', whatever the traffic.

KS is computed from the binned CDFs, not from a reservoir sample: the statistic is the largest
gap between the two CDFs at the grid's points (exact there: a lower bound on the exact
statistic, short of it by at most one grid cell's mass, 1/1024 of the reference), and its
p-value uses every row of the window. A reservoir of k values would test k rows instead of all
of them (less power), and would give a different verdict each time a window is judged again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from controller.monitor.columns import FloatArray
from controller.monitor.drift_report import DriftStatus, FeatureDrift
from controller.monitor.predictions import OTHER, PREDICTION, PredictionColumn
from controller.monitor.schema import Signature
from controller.spec.monitoring import DriftTests

EPS = 1e-4  # share given to an empty bin, so PSI stays finite
KS_GRID = 1024  # reference quantiles the KS statistic is evaluated at


@dataclass(frozen=True)
class FeatureProfile:
    inner_edges: FloatArray  # bin boundaries without the outer ones: len(bins) - 1
    shares: FloatArray  # reference share per bin
    ks_edges: FloatArray  # the KS grid: reference quantiles, increasing
    ks_cdf: FloatArray  # the reference's share <= each grid point
    rows: int  # reference values (KS's second sample size)
    mean: float
    low: float  # the reference's range: values outside it are out of range
    high: float


@dataclass(frozen=True)
class ReferenceProfile:
    features: dict[str, FeatureProfile]
    rows: int
    source: str  # what it was built from, for reports
    prediction: FeatureProfile | None = None  # numeric predictions
    prediction_classes: dict[str, float] | None = None  # class labels: the share of each
    prediction_note: str = ""  # why prediction drift is not judged, when it is not
    signature: Signature | None = None  # the model's declared inputs (schema violations)
    signature_note: str = ""  # why there is none, when there is none

    @classmethod
    def build(
        cls,
        columns: dict[str, FloatArray],
        *,
        features: list[str] | None,
        bins: int,
        source: str,
    ) -> ReferenceProfile:
        """Profile the reference's `features` (all its numeric columns when None or empty).
        Raises ValueError naming a watched feature the reference lacks."""
        names = features or sorted(columns)
        missing = [n for n in names if n not in columns or columns[n].size == 0]
        if missing:
            raise ValueError(
                f"the reference ({source}) has no numeric values for feature(s) "
                + ", ".join(missing[:10])
            )
        out = {name: feature_profile(columns[name], bins) for name in names}
        rows = max((c.size for c in columns.values()), default=0)
        return cls(out, rows, source)

    def with_predictions(self, column: PredictionColumn | None, bins: int) -> ReferenceProfile:
        """The profile with the reference's predictions (numbers binned like a feature, labels
        as their shares), or with the reason there are none."""
        if column is None:
            note = (
                f"prediction drift skipped: the reference ({self.source}) holds no predictions "
                "(kind 'recording' has them, a data file with `prediction_column`)"
            )
            return replace(self, prediction_note=note)
        if column.kind == "categorical":
            counts = column.label_counts()
            total = sum(counts.values())
            return replace(self, prediction_classes={k: v / total for k, v in counts.items()})
        if column.kind is None:
            note = (
                f"prediction drift skipped: no readable prediction in the reference ({self.source})"
            )
            return replace(self, prediction_note=note)
        values = np.asarray(column.numbers, dtype=np.float64)
        if not np.isfinite(values).any():
            note = f"prediction drift skipped: no prediction in the reference ({self.source})"
            return replace(self, prediction_note=note)
        return replace(self, prediction=feature_profile(values, bins))


def feature_profile(values: FloatArray, bins: int) -> FeatureProfile:
    """PSI bins from the values' quantiles, the KS grid, the mean and the range."""
    ref = np.sort(values[np.isfinite(values)])
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)))
    inner = edges[1:-1] if edges.size > 2 else edges[:1]
    counts = np.bincount(np.searchsorted(inner, ref, side="right"), minlength=inner.size + 1)
    grid = np.unique(np.quantile(ref, np.linspace(0, 1, KS_GRID + 1)))
    cdf = np.searchsorted(ref, grid, side="right") / ref.size
    return FeatureProfile(
        inner,
        counts / counts.sum(),
        grid,
        cdf,
        int(ref.size),
        float(np.mean(ref)),
        float(ref[0]),
        float(ref[-1]),
    )


class FeatureCounts:
    """One feature's window so far: counts on the reference's PSI bins and KS grid."""

    __slots__ = ("bins", "grid", "high", "low", "missing", "rows", "total")

    def __init__(self, profile: FeatureProfile) -> None:
        self.bins = np.zeros(profile.shares.size, dtype=np.int64)
        self.grid = np.zeros(profile.ks_edges.size + 1, dtype=np.int64)
        self.rows = 0
        self.total = 0.0
        self.low = self.high = 0
        self.missing = 0  # rows without a finite number


class WindowCounts:
    """Per-feature histograms of a window on the reference's fixed bins, added chunk by chunk
    (`add`): memory is the bins', not the window's rows."""

    def __init__(self, profile: ReferenceProfile) -> None:
        self.profile = profile
        self.features = {name: FeatureCounts(fp) for name, fp in profile.features.items()}
        pred = profile.prediction
        self.prediction = FeatureCounts(pred) if pred is not None else None
        # The predictions' reader: numbers streamed here, labels counted (a categorical one).
        self.predictions = PredictionColumn(
            sink=self, as_labels=profile.prediction_classes is not None
        )

    def add(self, name: str, values: FloatArray) -> None:
        counts = self.features.get(name)
        if counts is not None:
            _add(counts, self.profile.features[name], values)

    def add_prediction(self, values: FloatArray) -> None:
        if self.prediction is not None and self.profile.prediction is not None:
            _add(self.prediction, self.profile.prediction, values)

    def add_missing(self, name: str, n: int) -> None:
        counts = self.features.get(name)
        if counts is not None:
            counts.missing += n

    @classmethod
    def of(cls, profile: ReferenceProfile, columns: dict[str, FloatArray]) -> WindowCounts:
        out = cls(profile)
        for name, values in columns.items():
            out.add(name, values)
        return out


def _add(counts: FeatureCounts, fp: FeatureProfile, values: FloatArray) -> None:
    finite = values[np.isfinite(values)]
    counts.missing += values.size - finite.size
    if finite.size == 0:
        return
    counts.rows += finite.size
    counts.total += float(finite.sum())
    # One sort, then the edges looked up in it: half the cost of looking every value up twice.
    # PSI bin k: [edge[k-1], edge[k]); KS cell k: (edge[k-1], edge[k]], so the running sum at
    # k is the number of values <= edge[k], the CDF KS compares.
    ordered = np.sort(finite)
    n = ordered.size
    counts.bins += np.diff(np.searchsorted(ordered, fp.inner_edges, "left"), prepend=0, append=n)
    counts.grid += np.diff(np.searchsorted(ordered, fp.ks_edges, "right"), prepend=0, append=n)
    counts.low += int(np.searchsorted(ordered, fp.low, side="left"))
    counts.high += int(n - np.searchsorted(ordered, fp.high, side="right"))


def psi_of_counts(profile: FeatureProfile, counts: FloatArray | npt.NDArray[np.int64]) -> float:
    """Population stability index of a window's counts on the reference's bins."""
    q = np.clip(counts / max(int(counts.sum()), 1), EPS, None)
    p = np.clip(profile.shares, EPS, None)
    return float(np.sum((q - p) * np.log(q / p)))


def ks_of_counts(profile: FeatureProfile, grid: npt.NDArray[np.int64]) -> tuple[float, float]:
    """Two-sample KS statistic and asymptotic p-value from the window's grid counts (what
    `scipy.stats.ks_2samp(method="asymp")` computes from the samples, on the grid's points)."""
    from scipy import stats

    n = int(grid.sum())
    live = np.cumsum(grid[:-1]) / n
    d = float(np.max(np.abs(live - profile.ks_cdf)))
    m = profile.rows
    en = round(n * m / (n + m))
    return d, float(np.clip(stats.kstwo.sf(d, max(en, 1)), 0.0, 1.0))


def psi(profile: FeatureProfile, values: FloatArray) -> float:
    """Population stability index of `values` on the reference's bins."""
    bins = profile.shares.size
    counts = np.bincount(np.searchsorted(profile.inner_edges, values, side="right"), minlength=bins)
    return psi_of_counts(profile, counts)


def judge_feature(
    name: str,
    profile: FeatureProfile,
    counts: FeatureCounts,
    tests: DriftTests,
    n_features: int,
    rows: int,
) -> FeatureDrift:
    """One feature's figures and verdict; `rows` is the window's input rows (for shares)."""
    from scipy.spatial.distance import jensenshannon

    seen = counts.rows + counts.missing
    missing_share = counts.missing / seen if seen else (1.0 if rows else 0.0)
    if counts.rows == 0:
        nan = float("nan")
        empty = ("missing",) if _over(missing_share, tests.max_missing_share) else ()
        return FeatureDrift(
            name,
            0,
            nan,
            nan,
            nan,
            bool(empty),
            profile.mean,
            nan,
            nan,
            missing_share,
            0.0,
            empty,
            **_bins(profile, counts),
        )
    p = psi_of_counts(profile, counts.bins)
    ks_stat, ks_p = ks_of_counts(profile, counts.grid)
    js = float(jensenshannon(profile.shares, counts.bins / counts.rows, base=2))
    out_of_range = (counts.low + counts.high) / counts.rows
    votes: list[tuple[str, bool]] = []
    if tests.max_psi is not None:
        votes.append(("psi", p > tests.max_psi))
    if tests.ks_p_value is not None:
        votes.append(("ks", ks_p < tests.ks_p_value / max(n_features, 1)))  # Bonferroni
    if tests.max_js is not None:
        votes.append(("js", js > tests.max_js))
    shifted = all(v for _, v in votes) if tests.require == "all" else any(v for _, v in votes)
    flags: list[str] = [k for k, v in votes if v] if shifted else []
    # Data quality is judged on its own: a column going empty is a problem whatever its shape.
    if _over(missing_share, tests.max_missing_share):
        flags.append("missing")
    if _over(out_of_range, tests.max_out_of_range_share):
        flags.append("out_of_range")
    return FeatureDrift(
        name,
        counts.rows,
        p,
        ks_stat,
        ks_p,
        bool(flags),
        profile.mean,
        counts.total / counts.rows,
        js,
        missing_share,
        out_of_range,
        tuple(flags),
        **_bins(profile, counts),
    )


def _bins(profile: FeatureProfile, counts: FeatureCounts) -> dict[str, Any]:
    edges = (profile.low, *profile.inner_edges.tolist(), profile.high)
    return {
        "bin_edges": tuple(float(e) for e in edges),
        "reference_shares": tuple(float(x) for x in profile.shares),
        "window_counts": tuple(int(x) for x in counts.bins),
    }


def _over(share: float, limit: float | None) -> bool:
    return limit is not None and share > limit


def judge_window(
    profile: ReferenceProfile,
    columns: dict[str, FloatArray] | WindowCounts,
    rows: int,
    tests: DriftTests,
    min_rows: int,
) -> tuple[DriftStatus, str, tuple[FeatureDrift, ...]]:
    """The window's status, a message, and each feature's figures; the window as its columns
    or as the histograms the reader streamed them into."""
    if rows < min_rows:
        return (
            "insufficient",
            f"{rows} input rows in the window, fewer than min_rows {min_rows}",
            (),
        )
    counts = columns if isinstance(columns, WindowCounts) else WindowCounts.of(profile, columns)
    if not isinstance(columns, WindowCounts):
        for _name, fc in counts.features.items():
            fc.missing += max(rows - fc.rows - fc.missing, 0)  # absent columns: missing rows
    n = len(profile.features)
    judged = tuple(
        judge_feature(name, fp, counts.features[name], tests, n, rows)
        for name, fp in profile.features.items()
    )
    drifted = [f.name for f in judged if f.drifted]
    prediction = judge_prediction(profile, counts, tests)
    said = ""
    if prediction is not None:
        judged = (*judged, prediction)
        said = f"; predictions PSI {prediction.psi:.3f}"
        said += " (drifted)" if prediction.drifted else ""
    if len(drifted) >= tests.min_drifted_features:
        return (
            "drift",
            f"{len(drifted)} of {n} features drifted: " + ", ".join(drifted[:10]) + said,
            judged,
        )
    if prediction is not None and prediction.drifted:
        return ("drift", f"predictions drifted; {len(drifted)} of {n} features drifted", judged)
    return (
        "ok",
        f"{len(drifted)} of {n} features drifted (alert at {tests.min_drifted_features})" + said,
        judged,
    )


def judge_prediction(
    profile: ReferenceProfile, counts: WindowCounts, tests: DriftTests
) -> FeatureDrift | None:
    """The window's predictions against the reference's (`PREDICTION`), flagged by
    `tests.prediction` (unset: reported, never flagged); None without reference predictions."""
    pt = tests.prediction
    max_psi, max_js = (pt.max_psi, pt.max_js) if pt is not None else (None, None)
    if profile.prediction is not None and counts.prediction is not None:
        # PSI and JS only: a classifier's few distinct outputs make KS meaningless.
        rules = DriftTests.model_construct(
            max_psi=max_psi,
            ks_p_value=None,
            max_js=max_js,
            require="any",
            max_missing_share=None,
            max_out_of_range_share=None,
        )
        return judge_feature(PREDICTION, profile.prediction, counts.prediction, rules, 1, 0)
    classes = profile.prediction_classes
    if classes is None:
        return None
    window = counts.predictions.labels
    names = sorted(set(classes) | set(window), key=lambda k: (k == OTHER, -classes.get(k, 0), k))
    ref = np.array([classes.get(k, 0.0) for k in names])
    got = np.array([window.get(k, 0) for k in names], dtype=np.int64)
    total = int(got.sum())
    nan = float("nan")
    psi_, js = nan, nan
    flags: list[str] = []
    if total:
        from scipy.spatial.distance import jensenshannon

        q, p = np.clip(got / total, EPS, None), np.clip(ref, EPS, None)
        psi_ = float(np.sum((q - p) * np.log(q / p)))
        js = float(jensenshannon(ref, got / total, base=2))
        flags = [
            k
            for k, v in (("psi", psi_ > (max_psi or np.inf)), ("js", js > (max_js or np.inf)))
            if v
        ]
    return FeatureDrift(
        PREDICTION,
        total,
        psi_,
        nan,
        nan,
        bool(flags),
        nan,
        nan,
        js,
        flags=tuple(flags),
        reference_shares=tuple(float(x) for x in ref),
        window_counts=tuple(int(x) for x in got),
        categories=tuple(names),
    )

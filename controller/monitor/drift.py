"""Per-feature drift of a window of live inputs against a reference: PSI and KS (SciPy).

A `ReferenceProfile` is built once per reference: PSI's bin edges from the reference's
quantiles, the reference's share per bin, and a sorted sample for the Kolmogorov-Smirnov test.
Judging a window is then a `searchsorted` and a `bincount` per feature plus one KS test.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from controller.monitor.recordings import FloatArray
from controller.spec.monitoring import DriftTests

EPS = 1e-4  # share given to an empty bin, so PSI stays finite
MAX_KS_SAMPLE = 100_000  # reference values kept for KS (a fixed-seed subsample beyond)

DriftStatus = Literal["drift", "ok", "insufficient", "error"]


@dataclass(frozen=True)
class FeatureProfile:
    inner_edges: FloatArray  # bin boundaries without the outer ones: len(bins) - 1
    shares: FloatArray  # reference share per bin
    sample: FloatArray  # sorted reference values for KS
    mean: float


@dataclass(frozen=True)
class ReferenceProfile:
    features: dict[str, FeatureProfile]
    rows: int
    source: str  # what it was built from, for reports

    @classmethod
    def build(
        cls,
        columns: dict[str, FloatArray],
        *,
        features: list[str] | None,
        bins: int,
        source: str,
        seed: int = 0,
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
        rng = np.random.default_rng(seed)
        out: dict[str, FeatureProfile] = {}
        for name in names:
            ref = columns[name][np.isfinite(columns[name])]
            edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)))
            inner = edges[1:-1] if edges.size > 2 else edges[:1]
            counts = np.bincount(
                np.searchsorted(inner, ref, side="right"), minlength=inner.size + 1
            )
            sample = ref if ref.size <= MAX_KS_SAMPLE else rng.choice(ref, MAX_KS_SAMPLE, False)
            out[name] = FeatureProfile(
                inner, counts / counts.sum(), np.sort(sample), float(np.mean(ref))
            )
        rows = max((c.size for c in columns.values()), default=0)
        return cls(out, rows, source)


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    rows: int
    psi: float
    ks_statistic: float
    ks_p_value: float
    drifted: bool
    reference_mean: float
    mean: float


@dataclass(frozen=True)
class DriftReport:
    """One window of one deployment judged against its reference."""

    environment: str
    deployment: str
    version: str | None  # the model version whose answers were judged
    commit: str | None  # the admitted revision that declared the monitoring
    window_start: dt.datetime
    window_end: dt.datetime
    status: DriftStatus
    message: str
    rows: int = 0
    features: tuple[FeatureDrift, ...] = ()
    reference: str = ""
    skipped_lines: int = 0
    problems: tuple[str, ...] = ()
    truncated: str | None = None
    computed_at: dt.datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def drifted(self) -> bool:
        return self.status == "drift"

    def worst(self, n: int = 5) -> list[FeatureDrift]:
        """The most shifted features first (drifted ones, then by PSI)."""
        return sorted(self.features, key=lambda f: (not f.drifted, -_finite(f.psi)))[:n]

    def summary(self) -> str:
        """One line: what was judged and the worst features."""
        head = (
            f"{self.environment}/{self.deployment} v{self.version or '?'}: {self.status} "
            f"({self.rows} rows, {self.window_start:%Y-%m-%d %H:%M}-{self.window_end:%H:%M} UTC)"
        )
        worst = ", ".join(
            f"{f.name} PSI {f.psi:.3f} KS p {f.ks_p_value:.2g}" for f in self.worst(3)
        )
        return f"{head}: {worst}" if worst else f"{head}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("window_start", "window_end", "computed_at"):
            value = getattr(self, key)
            data[key] = value.isoformat() if value is not None else None
        data["features"] = [asdict(f) for f in self.worst(len(self.features))]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> DriftReport:
        data: dict[str, Any] = json.loads(text)
        for key in ("window_start", "window_end", "computed_at"):
            if data.get(key) is not None:
                data[key] = dt.datetime.fromisoformat(data[key])
        data["features"] = tuple(FeatureDrift(**f) for f in data.get("features", []))
        data["problems"] = tuple(data.get("problems", []))
        return cls(**data)


def _finite(x: float) -> float:
    return x if np.isfinite(x) else -1.0


def psi(profile: FeatureProfile, values: FloatArray) -> float:
    """Population stability index of `values` on the reference's bins."""
    bins = profile.shares.size
    counts = np.bincount(np.searchsorted(profile.inner_edges, values, side="right"), minlength=bins)
    q = np.clip(counts / max(values.size, 1), EPS, None)
    p = np.clip(profile.shares, EPS, None)
    return float(np.sum((q - p) * np.log(q / p)))


def judge_feature(
    name: str, profile: FeatureProfile, values: FloatArray, tests: DriftTests, n_features: int
) -> FeatureDrift:
    values = values[np.isfinite(values)]
    if values.size == 0:
        nan = float("nan")
        return FeatureDrift(name, 0, nan, nan, nan, False, profile.mean, nan)
    from scipy import stats  # here: the state store imports this module, commands need no SciPy

    p = psi(profile, values)
    ks = stats.ks_2samp(values, profile.sample, method="asymp")
    ks_stat, ks_p = float(ks.statistic), float(ks.pvalue)
    votes = []
    if tests.max_psi is not None:
        votes.append(p > tests.max_psi)
    if tests.ks_p_value is not None:
        votes.append(ks_p < tests.ks_p_value / max(n_features, 1))  # Bonferroni
    drifted = all(votes) if tests.require == "all" else any(votes)
    return FeatureDrift(
        name, int(values.size), p, ks_stat, ks_p, drifted, profile.mean, float(np.mean(values))
    )


def judge_window(
    profile: ReferenceProfile,
    columns: dict[str, FloatArray],
    rows: int,
    tests: DriftTests,
    min_rows: int,
) -> tuple[DriftStatus, str, tuple[FeatureDrift, ...]]:
    """The window's status, a message, and each feature's figures."""
    if rows < min_rows:
        return (
            "insufficient",
            f"{rows} input rows in the window, fewer than min_rows {min_rows}",
            (),
        )
    n = len(profile.features)
    empty = np.empty(0, dtype=np.float64)
    judged = tuple(
        judge_feature(name, fp, columns.get(name, empty), tests, n)
        for name, fp in profile.features.items()
    )
    drifted = [f.name for f in judged if f.drifted]
    if len(drifted) >= tests.min_drifted_features:
        return (
            "drift",
            f"{len(drifted)} of {n} features drifted: " + ", ".join(drifted[:10]),
            judged,
        )
    return (
        "ok",
        f"{len(drifted)} of {n} features drifted (alert at {tests.min_drifted_features})",
        judged,
    )

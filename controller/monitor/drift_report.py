"""What judging a window says: per feature (`FeatureDrift`) and per window (`DriftReport`), as
the controller stores, exports, alerts on and renders them (monitor/drift.py computes them)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

DriftStatus = Literal["drift", "ok", "insufficient", "error"]


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
    js_distance: float = float("nan")  # Jensen-Shannon distance on PSI's bins (base 2: 0..1)
    missing_share: float = 0.0  # rows without a number for this feature
    out_of_range_share: float = 0.0  # values outside the reference's [min, max]
    flags: tuple[str, ...] = ()  # the tests that flagged it (psi, ks, js, missing, out_of_range)
    # PSI's bins, for reports that draw them: edges (the reference's min, the inner edges, its
    # max: one more than bins), the reference's share and the window's count per bin.
    bin_edges: tuple[float, ...] = ()
    reference_shares: tuple[float, ...] = ()
    window_counts: tuple[int, ...] = ()
    categories: tuple[str, ...] = ()  # class labels, one per bin (categorical predictions)


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
        tuples = ("flags", "bin_edges", "reference_shares", "window_counts", "categories")
        data["features"] = tuple(
            FeatureDrift(**{**f, **{k: tuple(f.get(k, ())) for k in tuples}})
            for f in data.get("features", [])
        )
        data["problems"] = tuple(data.get("problems", []))
        return cls(**data)


def _finite(x: float) -> float:
    return x if np.isfinite(x) else -1.0

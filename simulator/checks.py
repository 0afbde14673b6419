"""What every check of the judge takes and gives: thresholds, one side's results, a result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from simulator.stats import FloatArray

BoolArray = npt.NDArray[np.bool_]
Status = Literal["pass", "fail", "inconclusive", "info"]
Verdict = Literal["pass", "fail", "inconclusive"]


class Thresholds(BaseModel):
    """When a candidate may be promoted. Fractions, not percent."""

    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(default=0.05, gt=0, lt=1, description="1 - confidence level.")
    bootstrap_resamples: int = Field(default=1000, ge=100)
    seed: int = 0
    min_requests: int = Field(default=200, ge=1, description="Fewer per side: inconclusive.")
    latency_quantiles: list[float] = Field(default_factory=lambda: [0.5, 0.95, 0.99])
    gate_quantiles: list[float] = Field(
        default_factory=lambda: [0.5, 0.95], description="Quantiles whose delta gates."
    )
    latency_tolerance: float = Field(
        default=0.05, ge=0, description="Relative slowdown accepted (0.05 = 5%)."
    )
    latency_max_unresolved: float = Field(
        default=0.25, gt=0, description="Pass only if the CI's upper end is below this."
    )
    max_error_rate_increase: float = Field(
        default=0.005, ge=0, description="Absolute error-rate increase accepted."
    )
    min_agreement: float | None = Field(
        default=0.99, description="Classification: least share of identical predictions."
    )
    regression_abs_tol: float = 1e-6
    regression_rel_tol: float = 1e-3
    max_out_of_tolerance: float | None = Field(
        default=0.01, description="Regression: greatest share of outputs outside tolerance."
    )
    max_output_psi: float | None = Field(default=0.25, description="Output shift that fails.")
    max_input_psi: float | None = Field(
        default=None, description="Input drift that fails; None reports drift without gating."
    )
    max_generator_lag_p99_ms: float = Field(default=5.0, gt=0)
    max_dropped_fraction: float = Field(default=0.0, ge=0)
    power: float = Field(
        default=0.95,
        gt=0.5,
        lt=1,
        description="Probability of catching an effect that a "
        "minimum detectable effect (MDE) and sample-size planning refer to.",
    )
    max_detectable_slowdown: float | None = Field(
        default=0.25,
        gt=0,
        description="A latency pass whose p50/p95 MDE exceeds this is "
        "inconclusive (underpowered); None turns the rule off.",
    )
    sequential: bool = Field(
        default=False,
        description="Decide with the sequential judge (always-valid tests at "
        "every look) instead of one fixed-horizon test over all pairs.",
    )
    detect_slowdown: float = Field(
        default=0.20,
        gt=0,
        description="Sequential judge: latency passes once every gated "
        "quantile's confidence sequence rules out a slowdown this large; also the default "
        "target of sample-size planning.",
    )
    look_every: int = Field(
        default=100, ge=10, description="Sequential judge: pairs between two looks."
    )


class CheckResult(BaseModel):
    name: str
    status: Status
    gating: bool = True
    reason: str
    figures: dict[str, Any] = Field(default_factory=dict)


@dataclass
class Side:
    """One side's per-request results, aligned by request when the run is paired."""

    latency_ms: FloatArray
    error: BoolArray
    censored: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    outputs: list[Any] | None = None  # one entry per request: a list of per-row predictions

    def __post_init__(self) -> None:
        self.latency_ms = np.asarray(self.latency_ms, dtype=np.float64)
        self.error = np.asarray(self.error, dtype=bool)
        if self.censored.size == 0:
            self.censored = np.zeros(self.latency_ms.shape, dtype=bool)
        if not (self.latency_ms.shape == self.error.shape == self.censored.shape):
            raise ValueError("latency_ms, error and censored must have the same length")

    @property
    def n(self) -> int:
        return int(self.latency_ms.size)


def pct(x: float) -> str:
    return f"{x * 100:+.1f}%"

"""`spec.monitoring`: live drift monitoring of a deployment's inputs (docs/monitoring.md).

The controller reads the router's recordings (`spec.recording`) one window at a time and
compares each watched feature with a reference, per feature: the population stability index
(PSI, on bins fixed from the reference's quantiles) and the two-sample Kolmogorov-Smirnov test
(SciPy). A window drifts when at least `tests.min_drifted_features` features drift.

Everything here comes from a pull request, so nothing here names a URL or reads a file outside
the places the operator chose: reference files are paths relative to the controller's reference
directory (`--monitor-reference-dir`), and alerts name targets the operator configured.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controller.spec.durations import DURATION_PATTERN, parse_duration

# A relative path below the reference directory: no `..`, no absolute path, no hidden parts.
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*"  # never `.`, `..` or `.hidden`
REFERENCE_PATH_PATTERN = rf"^{_SEGMENT}(/{_SEGMENT})*$"
# Column names as data frames have them (scikit-learn's `mean radius`): letters, digits,
# `_ . : -` and inner spaces; at most 128 characters.
FEATURE_PATTERN = r"^[A-Za-z0-9_]([A-Za-z0-9_.: -]{0,126}[A-Za-z0-9_.:-])?$"
TARGET_PATTERN = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"
MAX_FEATURES = 512
MIN_WINDOW_S = 10.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Reference(_Strict):
    kind: Literal["recording", "dataset", "mlflow"] = Field(
        description="Where the reference distribution comes from. `recording`: a traffic file "
        "recorded by the router (`serveops-traffic/v1` JSON Lines, e.g. a window of known-good "
        "traffic); `dataset`: a CSV file with a header row, or JSON Lines of objects; "
        "`mlflow`: the training data of the model version being served, as an artifact of the "
        "run that logged it (`artifact`), or else the model's logged input example."
    )
    path: str | None = Field(
        default=None,
        pattern=REFERENCE_PATH_PATTERN,
        max_length=300,
        description="For `recording` and `dataset`: the file, relative to the controller's "
        "reference directory (`serveops controller --monitor-reference-dir`, trusted "
        "configuration); no `..`, no absolute path.",
    )
    artifact: str | None = Field(
        default=None,
        pattern=REFERENCE_PATH_PATTERN,
        max_length=300,
        description="For `mlflow`: path of the training-data artifact (CSV or JSON Lines) in the "
        "run that logged the model version, e.g. `training/reference.csv`. Unset: the model's "
        "input example (few rows: a weak reference).",
    )

    prediction_column: str | None = Field(
        default=None,
        pattern=FEATURE_PATTERN,
        description="For `dataset` and `mlflow` artifacts: the column that holds the model's "
        "predictions on the reference's rows (what a training pipeline logs with its "
        "validation set). It becomes the reference of prediction drift and is never a watched "
        "feature. Unset: only a `recording` reference has predictions.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Reference:
        if self.kind in ("recording", "dataset") and self.path is None:
            raise ValueError(f"reference kind {self.kind!r} needs 'path'")
        if self.kind == "mlflow" and self.path is not None:
            raise ValueError("reference kind 'mlflow' reads the run's artifact, not 'path'")
        if self.kind != "mlflow" and self.artifact is not None:
            raise ValueError(
                f"'artifact' only applies to reference kind 'mlflow', not {self.kind!r}"
            )
        if self.prediction_column is not None and (
            self.kind == "recording" or (self.kind == "mlflow" and self.artifact is None)
        ):
            raise ValueError(
                "'prediction_column' reads a data file: kind 'dataset', or 'mlflow' with "
                "'artifact' (a recording holds its predictions already)"
            )
        return self


class PredictionTests(_Strict):
    max_psi: float | None = Field(
        default=0.2,
        gt=0,
        le=10,
        description="Predictions drift when the PSI of the window's predictions against the "
        "reference's exceeds this: on bins fixed from the reference's quantiles for numbers, "
        "on the share of each class for labels. Unset: reported, not judged.",
    )
    max_js: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Predictions drift when the Jensen-Shannon distance (base 2, 0 to 1) "
        "between the window's and the reference's shares per bin or class exceeds this. "
        "Unset (default): reported, not judged.",
    )

    @model_validator(mode="after")
    def _some_test(self) -> PredictionTests:
        if self.max_psi is None and self.max_js is None:
            raise ValueError("set 'max_psi' or 'max_js': no prediction shift would be judged")
        return self


class SchemaTests(_Strict):
    max_share: float = Field(
        default=0.01,
        ge=0,
        lt=1,
        description="The window is flagged when more than this share of its input rows break "
        "the model's signature: a declared input column absent, a column it does not declare, "
        "or a value of the wrong type (text or a boolean where it declares a number).",
    )


class DriftTests(_Strict):
    max_psi: float | None = Field(
        default=0.1,
        gt=0,
        le=10,
        description="A feature drifts when its PSI against the reference exceeds this (0.1: "
        "moderate shift, 0.25: large; a shift of 0.5 standard deviations is about 0.25). Unset (`null`): PSI is reported, not judged.",
    )
    ks_p_value: float | None = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="A feature drifts when the Kolmogorov-Smirnov test rejects 'same "
        "distribution as the reference' at this level, Bonferroni-corrected over the features "
        "watched (each test uses `ks_p_value / features`), so more features do not mean more "
        "false alarms. Unset: KS is reported, not judged.",
    )
    max_js: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="A feature drifts when the Jensen-Shannon distance (base 2, 0 to 1) between "
        "its share per PSI bin and the reference's exceeds this (0.1: a noticeable shift). "
        "Unset (default): reported, not judged.",
    )
    require: Literal["any", "all"] = Field(
        default="all",
        description="With more than one of PSI, KS and JS set: `all` (default) flags a feature "
        "only when every one of them says drift (a large and a significant shift); `any` when "
        "one does.",
    )
    max_missing_share: float | None = Field(
        default=None,
        ge=0,
        lt=1,
        description="A feature is flagged when more than this share of the window's rows have "
        "no number for it (absent, null, or not a number), whatever PSI and KS say. Unset "
        "(default): reported, not judged.",
    )
    max_out_of_range_share: float | None = Field(
        default=None,
        ge=0,
        lt=1,
        description="A feature is flagged when more than this share of its values fall outside "
        "the reference's range (below its minimum or above its maximum). Unset (default): "
        "reported, not judged.",
    )
    min_drifted_features: int = Field(
        default=1,
        ge=1,
        le=MAX_FEATURES,
        description="Features that must drift for the window to count as drifted.",
    )
    bins: int = Field(
        default=10,
        ge=2,
        le=100,
        description="PSI bins, fixed once from the reference's quantiles.",
    )
    prediction: PredictionTests | None = Field(
        default=None,
        description="Prediction drift: the model's outputs in the window against the "
        "reference's. Needs a reference that holds predictions (kind `recording`: the "
        "recorded responses); with another the report says it was skipped and why. A drifted "
        "prediction makes the window drift whatever `min_drifted_features` says. Unset "
        "(default): the prediction is reported when the reference has one, not judged.",
    )
    schema_violations: SchemaTests | None = Field(
        default=None,
        description="Rows that break the model's signature (kind `mlflow` references: the "
        "logged signature's inputs). A share above `max_share` makes the window drift. "
        "Unset (default): counted and reported when a signature is known, not judged.",
    )

    @model_validator(mode="after")
    def _some_test(self) -> DriftTests:
        if self.max_psi is None and self.ks_p_value is None and self.max_js is None:
            raise ValueError(
                "set 'max_psi', 'ks_p_value' or 'max_js' (or several): no shift would be judged"
            )
        return self


class MonitoringActions(_Strict):
    retrain: list[str] = Field(
        default_factory=list,
        max_length=10,
        description="Retraining targets to trigger when a drift episode opens (once per "
        "episode), with the drift report attached: names of targets the operator configured "
        "on the controller (`--retrain-target NAME=webhook:URL`, `github-dispatch:OWNER/REPO`, "
        "`command:PATH`), never URLs or commands. Empty (default): no retraining is triggered.",
    )

    @field_validator("retrain")
    @classmethod
    def _retrain(cls, values: list[str]) -> list[str]:
        for v in values:
            if not re.match(TARGET_PATTERN, v):
                raise ValueError(f"retrain target {v!r} must be a name such as 'nightly-train'")
        if len(set(values)) != len(values):
            raise ValueError("a retrain target is listed twice")
        return values


class LabelSource(_Strict):
    path: str = Field(
        pattern=REFERENCE_PATH_PATTERN,
        max_length=300,
        description="A CSV or JSON Lines file with `request_id` and `label` columns, or a "
        "directory of them, relative to the controller's labels directory (`serveops "
        "controller --monitor-labels-dir`, trusted configuration); no `..`, no absolute path. "
        "Joined with the recorded requests by the id the client sent (`X-Request-Id`).",
    )
    delay: str = Field(
        default="24h",
        pattern=DURATION_PATTERN,
        description="How long after a window ends its labels are in: with each window it "
        "judges, the controller scores the window that ended this long before (accuracy and "
        "ROC AUC for classifiers, MAE for regressors, per model version).",
    )
    task: Literal["auto", "classification", "regression"] = Field(
        default="auto",
        description="What the labels are: `auto` takes numbers for a regression when the "
        "answers are numbers that are not all whole, classes otherwise.",
    )
    min_accuracy: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Quality is low when the scored window's accuracy falls below this (the "
        "version that answered most of its labelled requests): one `model_quality_low` alert "
        "per episode, one `model_quality_recovered` when it is back. Unset: reported, not "
        "judged.",
    )
    max_mae: float | None = Field(
        default=None,
        ge=0,
        description="For regressors: quality is low when the scored window's mean absolute "
        "error exceeds this. Unset: reported, not judged.",
    )
    min_labelled: int = Field(
        default=100,
        ge=1,
        le=10_000_000,
        description="Fewest labelled requests the scored version needs for its quality to be "
        "judged; fewer: `insufficient`, neither low nor healthy.",
    )

    @property
    def delay_s(self) -> float:
        return parse_duration(self.delay)


class Monitoring(_Strict):
    reference: Reference = Field(description="The distribution live inputs are compared with.")
    features: list[str] = Field(
        default_factory=list,
        max_length=MAX_FEATURES,
        description="Input columns to watch (names as the requests' `dataframe_split` columns "
        "or record keys). Empty: every numeric column of the reference.",
    )
    tests: DriftTests = Field(
        default_factory=DriftTests, description="Per-feature drift tests and thresholds."
    )
    window: str = Field(
        default="1h",
        pattern=DURATION_PATTERN,
        description="Length of a monitoring window: the controller judges the requests recorded "
        "in each window once the window has ended, at most once per window. At least 10s.",
    )
    min_rows: int = Field(
        default=200,
        ge=10,
        le=10_000_000,
        description="Fewest recorded input rows a window needs to be judged; fewer: "
        "`insufficient`, neither drift nor healthy.",
    )
    max_rows: int = Field(
        default=200_000,
        ge=100,
        le=10_000_000,
        description="Most rows read from one window (the newest files first are not "
        "preferred: files are read oldest first); beyond it the window is judged on what was "
        "read and says so.",
    )
    alert_targets: list[str] = Field(
        default_factory=lambda: ["default"],
        max_length=10,
        description="Who hears of a drift episode (once when it starts, once when it ends): "
        "names of targets the operator configured (`--alert-target NAME=URL`); `default` is "
        "the controller's own notifications (`--notify-webhook`, `--notify-slack`). Empty: "
        "nothing is sent; the result is still stored and exported.",
    )
    actions: MonitoringActions = Field(
        default_factory=MonitoringActions,
        description="What else a drift episode sets off (a retraining request).",
    )
    labels: LabelSource | None = Field(
        default=None,
        description="Delayed ground truth: live quality per model version, from labels that "
        "arrive after the requests. Unset (default): drift only.",
    )

    @field_validator("features")
    @classmethod
    def _features(cls, values: list[str]) -> list[str]:
        seen: set[str] = set()
        for v in values:
            if not re.match(FEATURE_PATTERN, v):
                raise ValueError(f"feature {v!r} must match {FEATURE_PATTERN}")
            if v in seen:
                raise ValueError(f"feature {v!r} is listed twice")
            seen.add(v)
        return values

    @field_validator("alert_targets")
    @classmethod
    def _targets(cls, values: list[str]) -> list[str]:
        for v in values:
            if not re.match(TARGET_PATTERN, v):
                raise ValueError(f"alert target {v!r} must be a name such as 'default' or 'oncall'")
        if len(set(values)) != len(values):
            raise ValueError("an alert target is listed twice")
        return values

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        if parse_duration(value) < MIN_WINDOW_S:
            raise ValueError(f"window must be at least {MIN_WINDOW_S:g}s")
        return value

    @model_validator(mode="after")
    def _rows(self) -> Monitoring:
        if self.min_rows > self.max_rows:
            raise ValueError("min_rows must not exceed max_rows")
        if self.tests.min_drifted_features > max(len(self.features), 1) and self.features:
            raise ValueError(
                f"tests.min_drifted_features ({self.tests.min_drifted_features}) exceeds the "
                f"{len(self.features)} feature(s) watched"
            )
        return self

    @property
    def window_s(self) -> float:
        return parse_duration(self.window)

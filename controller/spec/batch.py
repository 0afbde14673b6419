"""The batch inference file: `kind: BatchInference`, beside ModelDeployment in deployments/<env>/.

A table scored on a schedule by a registered model, run as a Ray Job on Ray Data. The field
descriptions are the reference docs (docs/spec-reference.md); the JSON Schema in
schema/batchinference.schema.json is generated from these models (`serveops schema`).
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Literal

from pydantic import Field, field_validator, model_validator

from controller.spec.durations import DURATION_PATTERN, parse_duration
from controller.spec.models import (
    API_VERSION,
    MAX_MODEL_URI_LENGTH,
    MODEL_URI_PATTERN,
    Metadata,
    _raise_located,
    _Strict,
)

BATCH_KIND = "BatchInference"
MAX_URI_LENGTH = 1000
MAX_CRON_LENGTH = 100
MAX_COLUMNS = 1000
# An absolute local path on the cluster's nodes, `file://`, or an object store pyarrow's
# filesystems read (`s3://`, `gs://`, `abfs://`, `hdfs://`). No credentials, query or `..`.
URI_PATTERN = r"^(?:(?:file|s3|gs|gcs|abfs|abfss|hdfs)://[^\s@?#]+|/[^\s:@?#]*)$"
COLUMN_PATTERN = r"^[A-Za-z_][A-Za-z0-9_. -]{0,127}$"
Format = Literal["parquet", "csv", "jsonl"]


class BatchInput(_Strict):
    uri: str = Field(
        pattern=URI_PATTERN,
        max_length=MAX_URI_LENGTH,
        description="Where the table is read from: a file or a folder of files; an absolute "
        "path on the cluster's nodes, `file://`, or object storage through pyarrow's filesystems (`s3://`, `gs://`, "
        "`abfs://`, `hdfs://`). Credentials never go here: the cluster's environment holds them.",
    )
    format: Format = Field(default="parquet", description="How the input is written.")

    _no_parent = field_validator("uri")(lambda cls, uri: _no_dotdot(uri))
    columns: list[str] | None = Field(
        default=None,
        max_length=MAX_COLUMNS,
        description="The columns the model reads, in order. Unset: every column but the id.",
    )

    @field_validator("columns")
    @classmethod
    def _column_names(cls, columns: list[str] | None) -> list[str] | None:
        for c in columns or []:
            if not re.match(COLUMN_PATTERN, c):
                raise ValueError(f"column name {c[:60]!r} must match {COLUMN_PATTERN}")
        return columns


class BatchOutput(_Strict):
    uri: str = Field(
        pattern=URI_PATTERN,
        max_length=MAX_URI_LENGTH,
        description="Folder the runs write to, one sub-folder per run (`run=<scheduled time>`) "
        "that appears whole, with its `_manifest.json`, or not at all. Unique across the "
        "environment's batch deployments.",
    )
    format: Format = Field(default="parquet", description="How the output is written.")

    _no_parent = field_validator("uri")(lambda cls, uri: _no_dotdot(uri))
    id_column: str | None = Field(
        default=None,
        pattern=COLUMN_PATTERN,
        description="An input column carried through to the output unchanged, so each "
        "prediction can be joined back to its row. Unset: no id.",
    )
    prediction_column: str = Field(
        default="prediction",
        pattern=COLUMN_PATTERN,
        description="Name of the output column holding the model's prediction.",
    )


class Schedule(_Strict):
    cron: str = Field(
        max_length=MAX_CRON_LENGTH,
        description="When runs are due: a five-field cron expression (minute hour day month "
        "weekday), e.g. `0 2 * * *` for 02:00 every day.",
    )
    timezone: str = Field(
        default="UTC",
        max_length=64,
        description="IANA time zone the cron expression is read in, e.g. `Europe/Paris`; "
        "daylight saving is honoured.",
    )
    missed: Literal["skip", "run_once"] = Field(
        default="run_once",
        description="Runs that fell due while no controller was running: `run_once` runs the "
        "latest of them once, `skip` waits for the next one.",
    )

    @field_validator("cron")
    @classmethod
    def _cron(cls, cron: str) -> str:
        from controller.batch.schedule import check_cron  # cronsim: only when a file has one

        check_cron(cron)
        return cron

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, name: str) -> str:
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {name!r} (an IANA name, e.g. Europe/Paris)"
            ) from None
        return name


class BatchResources(_Strict):
    num_cpus: float = Field(
        default=0.5,
        gt=0,
        le=64,
        description="Logical CPUs each scoring actor reserves. Fractions are allowed: Ray only "
        "starts an actor where its whole reservation fits.",
    )
    batch_size: int = Field(
        default=1024, ge=1, le=1_000_000, description="Rows handed to the model at once."
    )
    concurrency: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Scoring actors, each loading the model once.",
    )


class Promotion(_Strict):
    sample_rows: int = Field(
        default=1000,
        ge=10,
        le=100_000,
        description="Rows at the head of the input scored by both the previous and the new "
        "model version when the version changes.",
    )
    min_agreement: float = Field(
        default=0.9,
        ge=0,
        le=1,
        description="Share of sampled rows whose predictions must agree (within `tolerance`) "
        "for the new version's run to be committed; below it the run is rejected, nothing is "
        "written, and the previous version stays the one promoted.",
    )
    tolerance: float = Field(
        default=0.0,
        ge=0,
        description="Numeric predictions agree when they differ by at most this much.",
    )


class BatchSpec(_Strict):
    model: str = Field(
        pattern=MODEL_URI_PATTERN,
        max_length=MAX_MODEL_URI_LENGTH,
        description="MLflow registry URI: `models:/<name>/<version>` pins a version, "
        "`models:/<name>@<alias>` follows an alias, resolved to a version when a run is "
        "planned.",
    )
    input: BatchInput = Field(description="The table scored.")
    output: BatchOutput = Field(description="Where predictions go.")
    schedule: Schedule | None = Field(
        default=None,
        description="When runs are due. Unset: runs only by hand (`serveops batch run`).",
    )
    on_model_change: bool = Field(
        default=False,
        description="Also run when `model` resolves to a new version (an alias moved to "
        "another version): once per version, after the promotion check, and once for the "
        "version it resolves to when it has no run yet. (Not `on:`, which YAML 1.1 reads as "
        "`true`.)",
    )
    resources: BatchResources = Field(
        default_factory=BatchResources, description="What the scoring actors reserve."
    )
    timeout: str = Field(
        default="1h",
        pattern=DURATION_PATTERN,
        description="A run still going after this long is stopped and counts as failed.",
    )
    retries: int = Field(
        default=1, ge=0, le=10, description="Attempts after a failed one, for the same run."
    )
    promotion: Promotion = Field(
        default_factory=Promotion,
        description="The sample check a model version change passes before its output counts.",
    )

    @model_validator(mode="after")
    def _paths(self) -> BatchSpec:
        errors: list[tuple[tuple[str | int, ...], str, object]] = []
        if _norm(self.input.uri) == _norm(self.output.uri):
            errors.append((("output", "uri"), "output.uri must differ from input.uri", {}))
        if parse_duration(self.timeout) <= 0:
            errors.append((("timeout",), "timeout must be positive", {}))
        _raise_located(errors, "BatchSpec")
        return self

    @property
    def timeout_s(self) -> float:
        return parse_duration(self.timeout)


class BatchInference(_Strict):
    """A batch inference: a table scored by a registered model, on a schedule or by hand."""

    apiVersion: Literal["serveops.dev/v1alpha1"] = Field(
        description=f"Schema version of this file; `{API_VERSION}`."
    )
    kind: Literal["BatchInference"] = Field(description=f"Always `{BATCH_KIND}`.")
    metadata: Metadata = Field(description="Who and where: name, environment, owner, labels.")
    spec: BatchSpec = Field(description="What is scored, by which model, when, where to.")


def _no_dotdot(uri: str) -> str:
    if ".." in uri.split("/"):
        raise ValueError("a path segment `..` is not allowed: write the path it means")
    return uri


def _norm(uri: str) -> str:
    return uri.removeprefix("file://").rstrip("/")

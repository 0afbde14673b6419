"""The reference a deployment's live inputs are compared with, loaded within limits.

- `recording`: a traffic file, read like the router's recordings.
- `dataset`: a CSV file with a header row (one record a line) or JSON Lines of objects.
- `mlflow`: an artifact of the run that logged the served model version (CSV or JSON Lines),
  or the model's logged input example.

Paths come from a pull request, so they are resolved under the operator's reference directory
and must stay inside it (symbolic links included).
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from controller.errors import BadInput
from controller.monitor.columns import WindowRows
from controller.monitor.drift import ReferenceProfile
from controller.monitor.features import body_rows
from controller.monitor.predictions import MAX_LABEL, PredictionColumn
from controller.monitor.recordings import RowReader
from controller.monitor.schema import Signature, signature_of
from controller.monitor.selection import MIB, ReadLimits
from controller.monitor.window import read_traffic_file
from controller.registry.mlflow import Registry
from controller.spec.monitoring import Monitoring

REFERENCE_LIMITS = ReadLimits(
    max_line_bytes=1 * MIB, max_rows=1_000_000, max_bytes=512 * MIB, max_files=1, deadline_s=60
)


def inside(root: Path, relative: str, what: str = "reference") -> Path:
    """`root/relative`, refused when it leaves `root` (through `..` or a symbolic link)."""
    base = root.expanduser().resolve()
    path = (base / relative).resolve()
    if not path.is_relative_to(base):
        raise BadInput(f"{what} {relative!r} leaves the {what} directory {base}")
    return path


# A reference file's column of predictions, and where its values go.
PredictionsOf = tuple[str, PredictionColumn]


def read_dataset(
    path: Path,
    features: list[str] | None = None,
    limits: ReadLimits = REFERENCE_LIMITS,
    predictions: PredictionsOf | None = None,
) -> WindowRows:
    """Numeric columns of a CSV (header row) or JSON Lines file, within `limits`; with
    `predictions`, that column's values go to its PredictionColumn, not to the features."""
    if not path.is_file():
        raise BadInput(f"{path}: no such reference file")
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise BadInput(
            f"{path}: {size:,} bytes, more than a reference may have ({limits.max_bytes:,})"
        )
    if path.suffix in (".jsonl", ".json"):
        return _jsonl(path, features, limits, predictions)
    return _csv(path, features, limits, predictions)


def _prediction(value: object) -> float | str | None:
    """A reference file's prediction cell: a number, or a class (text, a boolean)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip():
        number = _float(value)
        return number if number is not None else value.strip()[:MAX_LABEL]
    return None


def _jsonl(
    path: Path, features: list[str] | None, limits: ReadLimits, predictions: PredictionsOf | None
) -> WindowRows:
    reader = RowReader(features, limits)
    with path.open("rb") as f:
        for number, line in enumerate(iter(lambda: f.readline(limits.max_line_bytes + 1), b""), 1):
            if len(line) > limits.max_line_bytes:
                raise BadInput(f"{path}:{number}: line longer than {limits.max_line_bytes:,} bytes")
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as err:
                raise BadInput(f"{path}:{number}: not JSON ({err})") from None
            except RecursionError:
                raise BadInput(f"{path}:{number}: JSON nested too deep") from None
            if predictions is not None and isinstance(record, dict):
                value = _prediction(record.pop(predictions[0], None))
                if value is not None:
                    predictions[1].add_value(value)
            rows = list(body_rows({"dataframe_records": [record]}))
            if not rows:
                raise BadInput(f"{path}:{number}: not a JSON object of features")
            if not reader.add_row(rows[0]):
                break
    return reader.finish()


def _csv(
    path: Path, features: list[str] | None, limits: ReadLimits, predictions: PredictionsOf | None
) -> WindowRows:
    reader = RowReader(features, limits)
    previous = csv.field_size_limit(limits.max_line_bytes)  # process-wide: put back below

    def lines(f: TextIO) -> Iterator[str]:
        """The file's lines, none longer than the limit (never read whole)."""
        for number, line in enumerate(iter(lambda: f.readline(limits.max_line_bytes + 1), ""), 1):
            if len(line) > limits.max_line_bytes:
                raise BadInput(f"{path}:{number}: line longer than {limits.max_line_bytes:,} bytes")
            yield line

    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as f:
            rows = csv.reader(lines(f))
            try:
                header = next(rows)
                at = _column(header, predictions, path)
                for row in rows:
                    values = {name: _float(v) for name, v in zip(header, row, strict=False)}
                    if predictions is not None and at is not None:
                        values.pop(header[at], None)
                        value = _prediction(row[at]) if at < len(row) else None
                        if value is not None:
                            predictions[1].add_value(value)
                    if not reader.add_row(values):
                        break
            except StopIteration:
                raise BadInput(f"{path}: empty (a CSV reference needs a header row)") from None
            except csv.Error as err:
                raise BadInput(f"{path}:{rows.line_num}: {err}") from None
    finally:
        csv.field_size_limit(previous)
    return reader.finish()


def _column(header: list[str], predictions: PredictionsOf | None, path: Path) -> int | None:
    """Where the predictions' column is in a CSV header (BadInput when it is not there)."""
    if predictions is None:
        return None
    if predictions[0] not in header:
        raise BadInput(f"{path}:1: no column {predictions[0]!r} (prediction_column) in the header")
    return header.index(predictions[0])


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def load_reference(
    monitoring: Monitoring,
    *,
    reference_dir: Path | None,
    registry: Registry | None,
    model_name: str,
    version: str,
) -> ReferenceProfile:
    """The reference profile a deployment declares. Raises BadInput when it cannot be read."""
    ref = monitoring.reference
    features = monitoring.features or None
    outputs: PredictionColumn | None = None  # a recorded reference's predictions
    signature: tuple[Signature | None, str] = (
        None,
        f"schema not checked: a {ref.kind} reference has no model signature (kind 'mlflow' has)",
    )
    if ref.kind in ("recording", "dataset"):
        assert ref.path is not None
        if reference_dir is None:
            raise BadInput(
                f"reference {ref.kind} {ref.path!r}: the controller has no reference directory "
                "(--monitor-reference-dir)"
            )
        path = inside(reference_dir, ref.path)
        if ref.kind == "recording":
            if not path.is_file():
                raise BadInput(f"{path}: no such reference file")
            outputs = PredictionColumn()
            rows = read_traffic_file(
                path, features=features, limits=REFERENCE_LIMITS, outputs=outputs
            )
        else:
            outputs = PredictionColumn() if ref.prediction_column else None
            rows = read_dataset(path, features, predictions=_of(ref.prediction_column, outputs))
        source = f"{ref.kind} {ref.path}"
    else:
        outputs = PredictionColumn() if ref.prediction_column else None
        rows, source, signature = _mlflow_reference(
            monitoring, registry, model_name, version, features, outputs
        )
    bins = monitoring.tests.bins
    try:
        profile = ReferenceProfile.build(rows.columns, features=features, bins=bins, source=source)
    except ValueError as err:
        raise BadInput(str(err)) from None
    sig, note = signature
    return replace(profile.with_predictions(outputs, bins), signature=sig, signature_note=note)


def _of(column: str | None, outputs: PredictionColumn | None) -> PredictionsOf | None:
    return (column, outputs) if column is not None and outputs is not None else None


def _mlflow_reference(
    monitoring: Monitoring,
    registry: Registry | None,
    name: str,
    version: str,
    features: list[str] | None,
    outputs: PredictionColumn | None = None,
) -> tuple[WindowRows, str, tuple[Signature | None, str]]:
    if registry is None or registry.tracking_uri is None:
        raise BadInput("reference kind 'mlflow' needs the controller's MLflow registry")
    import mlflow.artifacts

    uri = f"models:/{name}/{version}"
    artifact = monitoring.reference.artifact
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    with tempfile.TemporaryDirectory(prefix="serveops-reference-") as tmp:
        if artifact is not None:
            record = registry.describe(uri)
            if not record.run_id:
                raise BadInput(f"{uri}: the model version names no run to read {artifact!r} from")
            try:
                local = mlflow.artifacts.download_artifacts(
                    run_id=record.run_id,
                    artifact_path=artifact,
                    dst_path=tmp,
                    tracking_uri=registry.tracking_uri,
                )
            except Exception as err:  # MLflow raises many kinds; all mean "cannot read it"
                raise BadInput(f"{uri}: cannot read run artifact {artifact!r}: {err}") from None
            source = f"mlflow {uri} run artifact {artifact}"
            column = _of(monitoring.reference.prediction_column, outputs)
            return (
                read_dataset(Path(local), features, predictions=column),
                source,
                _signature(uri, registry.tracking_uri),
            )
        rows, signature = _input_example(uri, registry.tracking_uri, tmp, features)
        return rows, f"mlflow {uri} input example", signature


def _signature(uri: str, tracking_uri: str) -> tuple[Signature | None, str]:
    """The model's input signature (only its MLmodel file is read)."""
    import mlflow
    from mlflow.models import get_model_info

    mlflow.set_tracking_uri(tracking_uri)
    try:
        sig = get_model_info(uri).signature
    except Exception as err:  # MLflow raises many kinds; all mean "cannot read it"
        return None, f"schema not checked: cannot read the signature of {uri}: {err}"[:500]
    return _from_mlflow(sig)


def _from_mlflow(sig: Any) -> tuple[Signature | None, str]:
    found, why = signature_of(sig.inputs.to_dict() if sig is not None else None)
    return found, f"schema not checked: {why}" if why else ""


def _input_example(
    uri: str, tracking_uri: str, tmp: str, features: list[str] | None
) -> tuple[WindowRows, tuple[Signature | None, str]]:
    import mlflow
    from mlflow.models import Model

    mlflow.set_tracking_uri(tracking_uri)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        model = Model.load(local)
        example = model.load_input_example(local)
    except Exception as err:
        raise BadInput(f"{uri}: cannot read the model's input example: {err}") from None
    if example is None:
        raise BadInput(f"{uri}: the model has no input example; name a run artifact instead")
    reader = RowReader(features, REFERENCE_LIMITS)
    records = example.to_dict(orient="records") if hasattr(example, "to_dict") else example
    for row in body_rows({"inputs": records if isinstance(records, list) else [records]}):
        if not reader.add_row(row):
            break
    return reader.finish(), _from_mlflow(model.signature)

"""The program a batch run executes on the cluster: `python -m controller.batch.job <request>`.

Submitted by the controller as a Ray Job; reads the input with Ray Data, scores it with
`map_batches` on an actor pool (each actor loads the MLflow model once), and streams the
predictions to a staging folder, so an input larger than memory completes. The run appears
whole or not at all: its `_manifest.json` (model version, Git commit, input fingerprint, rows,
duration) is written into the staging folder, which is then renamed to
`<output>/run=<run key>` (atomic on a local or shared file system; on object stores a run
counts once its manifest is there). A killed job leaves only `<output>/_staging/`, which no
reader looks at. A run whose folder already holds a manifest is not written again.

When the model version changed since the last committed run, a sample of the input is first
scored by both versions in this process; below the declared agreement the run is rejected and
nothing is written. The last line of the log is the result (controller/batch/request.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from controller.batch.request import Progress, RunRequest, RunResult

MANIFEST = "_manifest.json"
STAGING = "_staging"
MAX_LISTED_FILES = 100_000
# Read and write tasks are light next to scoring: small reservations leave the CPUs to the
# scoring actors (a 2-CPU cluster runs 2 actors of 0.5 CPU plus reads and writes).
IO_CPUS = 0.25
LIST_CPUS = 1.0  # Ray Data's file listing task: one CPU, whatever the read asks for
PROGRESS_S = 2.0


def _fs(uri: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    if "://" not in uri:
        return pafs.LocalFileSystem(), uri
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path


def _join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *parts])


def fingerprint(uri: str) -> tuple[str, list[str]]:
    """A digest of the input's files (path, size, modification time) and their paths."""
    import pyarrow.fs as pafs

    fs, path = _fs(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"input {uri} does not exist")
    if info.type == pafs.FileType.File:
        files = [info]
    else:
        files = [
            f
            for f in fs.get_file_info(pafs.FileSelector(path, recursive=True))
            if f.type == pafs.FileType.File and not os.path.basename(f.path).startswith(("_", "."))
        ]
    if len(files) > MAX_LISTED_FILES:
        raise ValueError(f"input {uri} holds more than {MAX_LISTED_FILES} files")
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        digest.update(f"{f.path}\0{f.size}\0{f.mtime_ns}\n".encode())
    return digest.hexdigest()[:32], sorted(f.path for f in files)


def read(request: RunRequest) -> Any:
    import ray.data

    spec = request.input
    fs, path = _fs(spec.uri)
    args: dict[str, Any] = {"filesystem": fs, "num_cpus": IO_CPUS}
    if spec.format == "csv":
        return ray.data.read_csv(path, **args)
    if spec.format == "jsonl":
        return ray.data.read_json(path, lines=True, **args)
    return ray.data.read_parquet(path, **args)


class Scorer:
    """One per actor: loads the model once, then scores batches (pandas DataFrames)."""

    def __init__(self, request_json: str, model_uri: str) -> None:
        request = RunRequest.model_validate_json(request_json)
        self.model = load_model(model_uri, request.tracking_uri)
        self.input = request.input
        self.output = request.output

    def __call__(self, batch: Any) -> Any:
        return score(self.model, batch, self.input.columns, self.output)


def load_model(model_uri: str, tracking_uri: str | None) -> Any:
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    return mlflow.pyfunc.load_model(model_uri)


def features(batch: Any, columns: list[str] | None, id_column: str | None) -> Any:
    if columns is not None:
        missing = [c for c in columns if c not in batch.columns]
        if missing:
            raise KeyError(f"input has no column(s) {missing}")
        return batch[columns]
    return batch.drop(columns=[id_column]) if id_column else batch


def score(model: Any, batch: Any, columns: list[str] | None, output: Any) -> Any:
    """A batch of input rows -> the output rows: the id (when declared) and the prediction."""
    import numpy as np
    import pandas as pd

    predictions = model.predict(features(batch, columns, output.id_column))
    if isinstance(predictions, pd.DataFrame):
        predictions = predictions.iloc[:, 0]
    out = pd.DataFrame({output.prediction_column: np.asarray(predictions).reshape(len(batch))})
    if output.id_column:
        out.insert(0, output.id_column, batch[output.id_column].to_numpy())
    return out


def agreement(old: Any, new: Any, tolerance: float) -> float:
    """Share of rows whose two predictions agree (numbers within `tolerance`)."""
    import numpy as np

    a, b = np.asarray(old), np.asarray(new)
    if len(a) == 0:
        return 1.0
    if np.issubdtype(a.dtype, np.number) and np.issubdtype(b.dtype, np.number):
        same = np.abs(a.astype(float) - b.astype(float)) <= tolerance
    else:
        same = a == b
    return float(np.mean(same))


def promotion_check(request: RunRequest) -> RunResult | None:
    """Score the head of the input with the previous and the new version and compare them with
    the simulator's output checks; a rejection, or None when the version did not change.
    Rejected below `min_agreement` (the share of the sample that agrees) or when a gating check
    fails (e.g. the output distribution shifted)."""
    if request.previous_model_uri in (None, request.model_uri):
        return None
    assert request.previous_model_uri is not None
    sample = head(request.input.uri, request.input.format, request.promotion.sample_rows)
    timed: dict[str, tuple[Any, float]] = {}
    for side, uri in (("new", request.model_uri), ("previous", request.previous_model_uri)):
        model = load_model(uri, request.tracking_uri)
        began = time.perf_counter()
        scored = score(model, sample, request.input.columns, request.output)
        timed[side] = (scored[request.output.prediction_column], time.perf_counter() - began)
    (old, old_s), (new, new_s) = timed["previous"], timed["new"]
    share = agreement(old, new, request.promotion.tolerance)
    comparison = compare(old, new, request.promotion)
    rows = max(1, len(sample))
    comparison["us_per_row"] = {"previous": old_s / rows * 1e6, "new": new_s / rows * 1e6}
    failed = [c["reason"] for c in comparison["checks"] if c["gating"] and c["status"] == "fail"]
    if share < request.promotion.min_agreement or failed:
        why = "; ".join(failed) or f"below the {request.promotion.min_agreement:.1%} required"
        return RunResult(
            status="rejected",
            agreement=share,
            comparison=comparison,
            message=f"{request.model_uri} agrees with {request.previous_model_uri} on "
            f"{share:.1%} of {len(sample)} sampled rows: {why}; nothing written, the previous "
            "version stays",
        )
    return RunResult(status="succeeded", agreement=share, comparison=comparison)


MAX_FLIPS_SHOWN = 50


def compare(old: Any, new: Any, promotion: Any) -> dict[str, Any]:
    """The simulator's output checks (simulator/outputs.py) on two columns of predictions, one
    row per paired request: for labels agreement with its Wilson interval, Cohen's kappa, the
    flip matrix and the class shift (PSI, JS); for numbers the share outside `tolerance` and
    the shift. Thresholds in the simulator's format, from the spec's `promotion`."""
    import numpy as np

    a, b = np.asarray(old).tolist(), np.asarray(new).tolist()
    try:  # the simulator needs SciPy, which a node with serveops[serving] only may lack
        from simulator.checks import Side, Thresholds
        from simulator.outputs import output_checks
    except ImportError as err:
        return {"rows": len(a), "checks": [], "note": f"agreement only: {err}"}
    zeros = np.zeros(len(a))
    thresholds = Thresholds(
        min_agreement=promotion.min_agreement,
        regression_abs_tol=promotion.tolerance,
        regression_rel_tol=0.0,
        max_out_of_tolerance=1 - promotion.min_agreement,
    )
    sides = [Side(zeros, zeros.astype(bool), outputs=[[v] for v in values]) for values in (a, b)]
    checks = []
    for check in output_checks(sides[0], sides[1], thresholds):
        figures = dict(check.figures)
        if "flip_matrix" in figures:  # only the cells that happened, most frequent first
            cells = sorted(((v, k) for k, v in figures["flip_matrix"].items() if v), reverse=True)
            figures["flip_matrix"] = {k: v for v, k in cells[:MAX_FLIPS_SHOWN]}
        figures.pop("labels", None)
        checks.append(
            {"name": check.name, "status": check.status, "gating": check.gating,
             "reason": check.reason, "figures": figures}
        )  # fmt: skip
    return {"rows": len(a), "checks": checks}


def write(ds: Any, request: RunRequest, staging: str) -> None:
    fs, path = _fs(staging)
    args: dict[str, Any] = {"filesystem": fs, "ray_remote_args": {"num_cpus": IO_CPUS}}
    fmt = request.output.format
    if fmt == "csv":
        ds.write_csv(path, **args)
    elif fmt == "jsonl":
        ds.write_json(path, **args)
    else:
        ds.write_parquet(path, **args)


def _dataset(uri: str, fmt: str) -> Any:
    """The files Ray Data reads too (names starting with `_` or `.` left out), as pyarrow's."""
    import pyarrow.dataset as pads

    fs, path = _fs(uri)
    return pads.dataset(
        path,
        filesystem=fs,
        format="json" if fmt == "jsonl" else fmt,
        exclude_invalid_files=False,
        ignore_prefixes=["_", "."],
    )


@contextlib.contextmanager
def progress_lines(
    request: RunRequest, staging: str, every_s: float = PROGRESS_S
) -> Iterator[None]:
    """Print a Progress line every `every_s` while the body runs: rows in the files written to
    staging so far (Ray Data writes each file whole), of the input's rows when its format
    says them cheaply (Parquet footers)."""
    total = None
    if request.input.format == "parquet":
        with contextlib.suppress(Exception):
            total = count_rows(request.input.uri, "parquet")
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(every_s):
            try:
                rows = count_rows(staging, request.output.format)
            except Exception:  # the folder is being written: next time
                continue
            print(Progress(rows=rows, total=total).line(), flush=True)

    thread = threading.Thread(target=report, name="serveops-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def count_rows(uri: str, fmt: str) -> int:
    return int(_dataset(uri, fmt).count_rows())


def head(uri: str, fmt: str, rows: int) -> Any:
    """The first `rows` rows as pandas, read in this process: the promotion check's sample
    without starting a Ray Data pipeline for it (seconds of fixed cost on a small cluster)."""
    return _dataset(uri, fmt).head(rows).to_pandas()


def committed(final: str) -> dict[str, Any] | None:
    fs, path = _fs(_join(final, MANIFEST))
    try:
        with fs.open_input_stream(path) as f:
            data = f.read(1024 * 1024)
    except (FileNotFoundError, OSError):
        return None
    manifest = json.loads(data)
    return manifest if isinstance(manifest, dict) else None


def check_fits(request: RunRequest, cpus: float) -> None:
    """Refuse a run whose actors would starve its own reads: Ray Data starts the actor pool
    first, and listing the input's files takes a whole CPU (Ray 2.60, not configurable). Seen
    on a 2-CPU cluster with 2 actors of 0.75 CPU: the run waited forever, never failed."""
    res = request.resources
    actors = res.concurrency * res.num_cpus
    if actors + LIST_CPUS > cpus:
        raise ValueError(
            f"{res.concurrency} actors of {res.num_cpus:g} CPU reserve {actors:g} of the "
            f"cluster's {cpus:g} CPUs; reading the input needs {LIST_CPUS:g} more: lower "
            "resources.concurrency or resources.num_cpus"
        )


def run(request: RunRequest) -> RunResult:
    import ray
    import ray.data

    began = time.monotonic()
    final = _join(request.output.uri, f"run={request.run_key}")
    done = committed(final)
    if done is not None:  # the same run again (a retry after a lost answer): no duplicate
        return RunResult(
            status="succeeded",
            rows=done.get("rows"),
            output=final,
            message="already committed; nothing written again",
        )
    phases: dict[str, float] = {}  # seconds per phase, in the manifest: where a run's time goes
    mark = time.monotonic()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        phases[name] = round(now - mark, 3)
        mark = now

    digest, _ = fingerprint(request.input.uri)
    if not ray.is_initialized():
        ray.init(log_to_driver=False)
    phase("connect")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    check_fits(request, float(ray.cluster_resources().get("CPU", 0.0)))  # type: ignore[no-untyped-call]
    check = promotion_check(request)
    if check is not None and check.status == "rejected":
        return check
    if check is not None:
        phase("promotion_check")
    staging = _join(
        request.output.uri,
        STAGING,
        f"run={request.run_key}-a{request.attempt}-{uuid.uuid4().hex[:8]}",
    )
    res = request.resources
    scored = read(request).map_batches(
        Scorer,
        fn_constructor_kwargs={
            "request_json": request.model_dump_json(),
            "model_uri": request.model_uri,
        },
        batch_size=res.batch_size,
        batch_format="pandas",
        zero_copy_batch=True,  # score() builds new frames, never writes to the batch
        compute=ray.data.ActorPoolStrategy(size=res.concurrency),
        num_cpus=res.num_cpus,
    )
    with progress_lines(request, staging):
        write(scored, request, staging)
    phase("read_score_write")
    rows = count_rows(staging, request.output.format)
    manifest = {
        "deployment": f"{request.environment}/{request.deployment}",
        "run": request.run_key,
        "attempt": request.attempt,
        "model": request.model_uri,
        "previous_model": request.previous_model_uri,
        "agreement": check.agreement if check else None,
        "comparison": check.comparison if check else None,
        "commit": request.commit,
        "input": request.input.uri,
        "input_fingerprint": digest,
        "rows": rows,
        "duration_s": round(time.monotonic() - began, 3),
        "phases_s": phases,
        "format": request.output.format,
    }
    fs, path = _fs(_join(staging, MANIFEST))
    with fs.open_output_stream(path) as f:
        f.write(json.dumps(manifest, indent=2).encode())
    fs.create_dir(_fs(request.output.uri)[1], recursive=True)
    if committed(final) is None:
        fs.move(_fs(staging)[1], _fs(final)[1])
    return RunResult(
        status="succeeded",
        rows=rows,
        output=final,
        agreement=check.agreement if check else None,
        duration_s=manifest["duration_s"],
    )


def main(argv: list[str]) -> int:
    request = RunRequest.decode(argv[1])
    try:
        result = run(request)
    except Exception as err:  # the controller reads why from the result line
        result = RunResult(status="failed", message=f"{type(err).__name__}: {err}"[:2000])
    print(result.line(), flush=True)
    return 0 if result.status != "failed" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

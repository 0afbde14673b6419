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
import json
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from controller.batch.promotion import promotion_check
from controller.batch.request import Progress, RunRequest, RunResult
from controller.batch.scoring import Scorer
from controller.batch.storage import (
    MANIFEST,
    STAGING,
    committed,
    count_rows,
    filesystem,
    fingerprint,
    join_uri,
)

# Read and write tasks are light next to scoring: small reservations leave the CPUs to the
# scoring actors (a 2-CPU cluster runs 2 actors of 0.5 CPU plus reads and writes).
IO_CPUS = 0.25
LIST_CPUS = 1.0  # Ray Data's file listing task: one CPU, whatever the read asks for
PROGRESS_S = 2.0


def read(request: RunRequest) -> Any:
    import ray.data

    spec = request.input
    fs, path = filesystem(spec.uri)
    args: dict[str, Any] = {"filesystem": fs, "num_cpus": IO_CPUS}
    if spec.format == "csv":
        return ray.data.read_csv(path, **args)
    if spec.format == "jsonl":
        return ray.data.read_json(path, lines=True, **args)
    return ray.data.read_parquet(path, **args)


def write(ds: Any, request: RunRequest, staging: str) -> None:
    fs, path = filesystem(staging)
    args: dict[str, Any] = {"filesystem": fs, "ray_remote_args": {"num_cpus": IO_CPUS}}
    fmt = request.output.format
    if fmt == "csv":
        ds.write_csv(path, **args)
    elif fmt == "jsonl":
        ds.write_json(path, **args)
    else:
        ds.write_parquet(path, **args)


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
    final = join_uri(request.output.uri, f"run={request.run_key}")
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
    staging = join_uri(
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
    fs, path = filesystem(join_uri(staging, MANIFEST))
    with fs.open_output_stream(path) as f:
        f.write(json.dumps(manifest, indent=2).encode())
    fs.create_dir(filesystem(request.output.uri)[1], recursive=True)
    if committed(final) is None:
        fs.move(filesystem(staging)[1], filesystem(final)[1])
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

"""Batch inference throughput: a run on Ray Data vs the same model's `predict` in one process.

    flock /tmp/serveops-ray.lock .venv/bin/python bench/batch_throughput.py [--rows 2000000]
        [--model logreg|forest] [--object-store-mb 100] [--actors 1,2]

`--batch-size` is the rows per `predict` call in the actors (the loop calls it once per file).
`--model forest` scores with a random forest (200 trees) instead of the demo's logistic
regression: a model whose `predict` costs more than reading and writing the rows, where
spreading the work over actors can pay. `--object-store-mb` starts Ray with that object store
(input larger than it must still complete) and the peak resident memory of the job's processes
is printed.

Same machine, same run, same parquet files (the breast-cancer features, repeated): first the
baseline, a plain loop in this process (read each file with pandas, `predict`, write parquet),
then the same input as a serveops batch run submitted as a Ray Job to a local Ray started with
`--num-cpus 2`, with one scoring actor and then with two (0.5 CPU each: Ray Data's file listing needs a whole CPU beside them). Prints rows per second
for each, the ratio of each run to the baseline, and the ratio between 2 actors and 1.

A run's rows/s counts from its submission to the job's end (what a user waits for: job start,
actors loading the model, reading, scoring, writing, the commit); the job's own figure (from
its manifest, the run inside the job) is printed beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controller.batch.jobs import RayJobs  # noqa: E402
from controller.batch.request import parse_result  # noqa: E402
from controller.batch.step import ENTRYPOINT, BatchEdges, start_run  # noqa: E402
from controller.dev.demo import MODEL_NAME, train_and_register  # noqa: E402
from controller.dev.localray import LocalRay  # noqa: E402
from controller.gitops.state import StateStore  # noqa: E402
from controller.registry.mlflow import MlflowRegistry  # noqa: E402
from controller.spec.batchfile import load_batches  # noqa: E402

FILES = 8
FOREST_TREES = 200


def register_forest(tracking_uri: str, artifact_dir: Path) -> str:
    """A random forest on the same data set, registered as model `bench-forest`; its URI."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier

    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.create_experiment("bench-forest", artifact_location=str(artifact_dir))
    data = load_breast_cancer(as_frame=True)
    model = RandomForestClassifier(n_estimators=FOREST_TREES, random_state=0)
    model.fit(data.data, data.target)
    with mlflow.start_run(experiment_id=experiment):
        mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name="bench-forest",
            signature=infer_signature(data.data, model.predict(data.data)),
            # MLflow saves scikit-learn models with skops, which refuses tree nodes unless
            # told: this bench trains the model itself.
            skops_trusted_types=["sklearn.tree._tree.Tree"],
        )
    return "models:/bench-forest/1"


class MemoryPeak:
    """Peak resident memory of a Ray job's processes, sampled every 0.2 s in a thread: the
    job's driver and Ray's non-idle workers (its actors and tasks). Pages of Ray's shared object
    store mapped by several processes count once per process, so the sum is an upper bound."""

    def __init__(self) -> None:
        import threading

        self.peak_sum = 0
        self.peak_one = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> MemoryPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        import psutil

        while not self._stop.wait(0.2):
            total = 0
            for proc in psutil.process_iter(["cmdline", "memory_info"]):
                cmd = " ".join(proc.info["cmdline"] or [])
                mem = proc.info["memory_info"]
                if mem is None or "IDLE" in cmd:
                    continue
                if cmd.startswith("ray::") or "controller.batch.job" in cmd:
                    total += mem.rss
                    self.peak_one = max(self.peak_one, mem.rss)
            self.peak_sum = max(self.peak_sum, total)


def make_input(root: Path, rows: int) -> Path:
    import pandas as pd
    from sklearn.datasets import load_breast_cancer

    base = load_breast_cancer(as_frame=True).data
    reps = -(-rows // (len(base) * FILES))
    folder = root / "input"
    folder.mkdir()
    start = 0
    for i in range(FILES):
        part = pd.concat([base] * reps, ignore_index=True).head(rows // FILES)
        part.insert(0, "row_id", range(start, start + len(part)))
        start += len(part)
        part.to_parquet(folder / f"part-{i}.parquet", index=False)
    return folder


def baseline(folder: Path, out: Path, model_uri: str, tracking_uri: str) -> tuple[int, float]:
    """The plain loop: pandas in, predict, parquet out, one process."""
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(tracking_uri)
    began = time.monotonic()
    model = mlflow.pyfunc.load_model(model_uri)
    out.mkdir()
    rows = 0
    for path in sorted(folder.glob("*.parquet")):
        frame = pd.read_parquet(path)
        scored = pd.DataFrame(
            {"row_id": frame["row_id"], "prediction": model.predict(frame.drop(columns=["row_id"]))}
        )
        scored.to_parquet(out / path.name, index=False)
        rows += len(frame)
    return rows, time.monotonic() - began


def spec(
    folder: Path, out: Path, model: str, actors: int, cpus: float, batch_size: int = 4096
) -> str:
    return f"""\
apiVersion: serveops.dev/v1alpha1
kind: BatchInference
metadata: {{name: bench-a{actors}, environment: bench, owner: bench}}
spec:
  model: {model}
  input: {{uri: {folder}, format: parquet}}
  output: {{uri: {out}, format: parquet, id_column: row_id}}
  resources: {{num_cpus: {cpus}, batch_size: {batch_size}, concurrency: {actors}}}
  timeout: 30m
  retries: 0
"""


def ray_run(
    edges: BatchEdges, text: str, name: str, jobs: RayJobs
) -> tuple[int, float, dict[str, object]]:
    [batch] = load_batches({f"deployments/bench/{name}.yaml": text}, "bench")
    now = dt.datetime.now(dt.UTC)
    began = time.monotonic()
    run = start_run(edges, batch, "bench", now, "manual", now)
    assert run is not None
    assert run.status == "running", run
    while True:
        info = jobs.info(run.submission_id)
        if info is not None and info.done:
            break
        time.sleep(0.5)
    wall = time.monotonic() - began
    result = parse_result(jobs.logs(run.submission_id))
    assert result is not None, (info, jobs.logs(run.submission_id)[-3000:])
    assert result.status == "succeeded", result
    assert result.output is not None
    manifest = json.loads((Path(result.output) / "_manifest.json").read_text())
    return int(result.rows or 0), wall, manifest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--model", choices=("logreg", "forest"), default="logreg")
    parser.add_argument("--object-store-mb", type=int, default=None)
    parser.add_argument("--actors", default="1,2", help="actor counts to run, e.g. 1,2")
    parser.add_argument("--batch-size", type=int, default=4096, help="rows per predict call")
    args = parser.parse_args()
    counts = [int(a) for a in args.actors.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        if args.model == "forest":
            model = register_forest(tracking_uri, root / "artifacts")
        else:
            train_and_register(tracking_uri, root / "artifacts")
            model = f"models:/{MODEL_NAME}/1"
        folder = make_input(root, args.rows)
        size = sum(p.stat().st_size for p in folder.iterdir())
        in_memory = args.rows * 31 * 8  # 30 float64 features and the int64 id
        print(
            f"model: {args.model} ({model}); input: {args.rows:,} rows in {FILES} parquet files, "
            f"{size / 1e6:.1f} MB on disk, {in_memory / 1e6:.0f} MB in memory; "
            f"load {os.getloadavg()[0]:.2f}"
        )
        rows, seconds = baseline(folder, root / "baseline", model, tracking_uri)
        base_rate = rows / seconds
        print(f"in-process pandas loop: {rows:,} rows in {seconds:.2f} s = {base_rate:,.0f} rows/s")
        store_bytes = args.object_store_mb * 1024 * 1024 if args.object_store_mb else None
        with (
            LocalRay(num_cpus=2, object_store_bytes=store_bytes) as ray,
            RayJobs(ray.address) as jobs,
            StateStore(root / "state.db") as store,
        ):
            if store_bytes:
                print(
                    f"Ray object store {args.object_store_mb} MB: the input is "
                    f"{in_memory / store_bytes:.1f}x the store"
                )
            registry = MlflowRegistry(tracking_uri)
            entrypoint = ENTRYPOINT.replace("python", sys.executable, 1)
            edges = BatchEdges(store, jobs, lambda: registry, "bench", entrypoint=entrypoint)
            rates = {}
            for actors in counts:
                out = root / f"out-a{actors}"
                with MemoryPeak() as memory:
                    n, wall, manifest = ray_run(
                        edges,
                        spec(folder, out, model, actors, 0.5, args.batch_size),
                        f"bench-a{actors}",
                        jobs,
                    )
                assert n == rows, (n, rows)
                inside = float(manifest["duration_s"])  # type: ignore[arg-type]
                rates[actors] = n / wall
                print(
                    f"Ray Data, {actors} actor(s) of 0.5 CPU, batches of {args.batch_size:,}: {n:,} rows in {wall:.2f} s from "
                    f"submission = {n / wall:,.0f} rows/s ({n / wall / base_rate:.2f}x the loop); "
                    f"inside the job {inside:.2f} s = {n / inside:,.0f} rows/s "
                    f"({n / inside / base_rate:.2f}x)"
                )
                print(f"  phases: {manifest.get('phases_s')}")
                print(
                    f"  peak resident memory: job processes {memory.peak_sum / 1e6:,.0f} MB "
                    f"(sum, upper bound), largest one {memory.peak_one / 1e6:,.0f} MB"
                )
            if 1 in rates and 2 in rates:
                print(f"2 actors / 1 actor: {rates[2] / rates[1]:.2f}x")
        print(f"load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

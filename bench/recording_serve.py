"""Recording through a real router: latency and throughput with recording off and on.

On a real local Ray Serve (2 CPUs) with a real MLflow store and a real Git repository, one
deployment is applied from two revisions that differ only in `spec.recording` (absent, or
`sample_rate: 1`: every request recorded). Switching between them is a `reconfigure()` of the
same router replica (nothing restarts), so in alternating rounds the same replicas answer:

- latency: one client sending requests one after another for --seconds (p50, p99);
- throughput: --concurrency clients for --seconds (answers per second).

Printed: each round's figures and the on / off ratios, median over rounds, and the records
the recording holds (every request of the `on` phases must be there).

    .venv/bin/python bench/recording_serve.py [--rounds 3] [--seconds 10] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.cluster.serve_api import ServeClient
from controller.dev.demo import MODEL_NAME, sample_request, train_and_register
from controller.dev.localray import LocalRay, free_port
from controller.registry.mlflow import registry_from_uri
from controller.sync.apply import apply_plan
from controller.sync.read import Revision, plan_revision
from simulator.traffic import read_traffic

ENV, NAME = "bench", "rec"


def spec(version: str, recording: Path | None) -> str:
    text = f"""\
apiVersion: serveops.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: {NAME}, environment: {ENV}, owner: bench}}
spec:
  route: /{NAME}
  model: models:/{MODEL_NAME}/{version}
  replicas: 1
  resources: {{num_cpus: 0.5}}
  max_ongoing_requests: 32
"""
    if recording is not None:
        text += f"  recording: {{sample_rate: 1, dir: {recording}}}\n"
    return text


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@localhost", *args],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


def sequential(url: str, body: object, seconds: float) -> tuple[float, float, int]:
    """(p50 ms, p99 ms, answers) of one client sending back to back."""
    lat: list[float] = []
    with httpx.Client(timeout=30) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.perf_counter()
            r = client.post(url, json=body)
            if r.status_code == 200:
                lat.append((time.perf_counter() - t0) * 1000)
    lat.sort()
    return lat[len(lat) // 2], lat[int(len(lat) * 0.99)], len(lat)


def concurrent(url: str, body: object, clients: int, seconds: float) -> tuple[float, int]:
    """(answers 200 per second, failed) of `clients` closed-loop clients."""
    ok = [0] * clients
    bad = [0] * clients
    end = time.monotonic() + seconds

    def run(i: int) -> None:
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < end:
                if client.post(url, json=body).status_code == 200:
                    ok[i] += 1
                else:
                    bad[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(ok) / seconds, sum(bad)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="serveops-rec-serve-") as tmp:
        root = Path(tmp)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        version = train_and_register(uri, root / "artifacts")[0]
        registry = registry_from_uri(uri)
        repo, recording = root / "repo", root / "recording"
        path = repo / "deployments" / ENV / f"{NAME}.yaml"
        path.parent.mkdir(parents=True)
        subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
        revs = {}
        for mode, rec in (("off", None), ("on", recording)):
            path.write_text(spec(version, rec))
            git(repo, "add", ".")
            git(repo, "commit", "-qm", mode)
            revs[mode] = git(repo, "rev-parse", "HEAD")
        os.environ["MLFLOW_TRACKING_URI"] = uri
        with LocalRay(2) as ray, ServeClient(ray.address, http_port=free_port()) as client:
            url = f"http://127.0.0.1:{client.http_port}/{NAME}"
            body = sample_request()
            sent_on = 0
            ratios: list[tuple[float, float, float]] = []
            for r in range(args.rounds):
                figures = {}
                for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                    plan = plan_revision(Revision(str(repo), revs[mode], ENV), client, registry)
                    apply_plan(plan, client)
                    deadline = time.monotonic() + 60
                    while httpx.post(url, json=body, timeout=30).status_code != 200:
                        assert time.monotonic() < deadline, "route never answered"
                        time.sleep(0.5)
                    p50, p99, n = sequential(url, body, args.seconds)
                    rps, failed = concurrent(url, body, args.concurrency, args.seconds)
                    if mode == "on":
                        sent_on += n + round(rps * args.seconds) + failed
                    figures[mode] = (p50, p99, rps)
                    print(
                        f"round {r + 1} {mode:>3}: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
                        f"({n} sequential), {rps:.0f} answers/s at {args.concurrency} clients, "
                        f"{failed} failed",
                        flush=True,
                    )
                off, on = figures["off"], figures["on"]
                ratios.append((on[0] / off[0], on[1] / off[1], on[2] / off[2]))
            time.sleep(2)  # the writer flushes after each batch
            recorded = len(read_traffic(recording)[1]) if recording.exists() else 0
    print(
        f"on / off: p50 x{statistics.median(r[0] for r in ratios):.3f}, "
        f"p99 x{statistics.median(r[1] for r in ratios):.3f}, "
        f"throughput x{statistics.median(r[2] for r in ratios):.3f} "
        f"(median of {len(ratios)} rounds)"
    )
    print(f"recorded {recorded} requests (about {sent_on} sent while on, warm-up included)")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

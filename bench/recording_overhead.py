"""Recording overhead on the router's request path, in process (no Ray, no HTTP).

Per simulated request, the main thread does the work the router does anyway to answer (parse
the JSON body, build the JSONResponse of a breast-cancer-sized answer: the baseline), plus,
when recording, what the router adds for a sampled request (build the `Exchange`, `offer` it).
Three modes, in alternating rounds in one process:

Requests come `--rate` per second (a busy router replica, every request sampled).

- off: no recorder;
- disk: a real recorder writing rotated files to a temporary directory; its writer thread
  decodes, filters and serializes in this process, so it competes for the GIL;
- stuck: a recorder whose sink blocks forever (a disk that hangs): the queue fills, and every
  further sampled request takes the drop path.

Reported: per-request time of the main thread, p50 and p99, and each mode's ratio to `off`
measured in the same round. The claim to check: `stuck` costs no more than `disk` (a slow sink
never slows a request), and both stay close to `off`.

    .venv/bin/python bench/recording_overhead.py [--rounds 5] [--requests 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starlette.responses import JSONResponse

from controller.serving.recorder import Exchange, Recorder, RotatingFileSink
from controller.spec.models import RECORDING_DENY_HEADERS

QUEUE = 1000  # far fewer than --requests: the stuck mode spends most requests on the drop path


class StuckSink:
    """Blocks on its first write until the bench ends: a hung disk."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def write(self, lines: list[bytes], grids: object = None) -> None:
        self.release.wait()

    def close(self) -> None:
        pass

    @property
    def files(self) -> list[str]:
        return []


def request_body() -> bytes:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True).data
    return json.dumps({"dataframe_split": data.iloc[:2].to_dict(orient="split")}).encode()


HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"content-type", b"application/json"),
    (b"authorization", b"Bearer x"),
    (b"x-user-id", b"u-17"),
    (b"content-length", b"1500"),
]


def run(mode: str, n: int, rate: float, body: bytes, workdir: Path) -> list[float]:
    """Per-request main-thread times (microseconds) for one mode, requests `1/rate` apart."""
    recorder = None
    stuck = None
    if mode == "disk":
        sink = RotatingFileSink(
            workdir / mode, "bench", max_bytes=64 << 20, keep_files=3, columns=True
        )
        recorder = Recorder(sink, deny_headers=RECORDING_DENY_HEADERS, queue_size=QUEUE)
    elif mode == "stuck":
        stuck = StuckSink()
        recorder = Recorder(stuck, deny_headers=RECORDING_DENY_HEADERS, queue_size=QUEUE)
    times: list[float] = []
    clock = time.perf_counter
    start = clock()
    for i in range(n):
        while (wait := start + i / rate - clock()) > 0:
            time.sleep(wait)
        t0 = clock()
        payload = json.loads(body)  # the router's request.json()
        response = JSONResponse({"predictions": [1, 0]}, status_code=200)
        if recorder is not None:
            recorder.offer(
                Exchange(
                    arrived=time.time(),
                    method="POST",
                    path="/breast-cancer",
                    headers=HEADERS,
                    body=body,
                    status=response.status_code,
                    response_body=bytes(response.body),
                    latency_ms=(clock() - t0) * 1000.0,
                    version="1",
                )
            )
        times.append((clock() - t0) * 1e6)
        del payload
    if recorder is not None:
        if stuck is not None:
            stuck.release.set()
        recorder.close(timeout_s=30)
        stats = recorder.stats()
        print(
            f"    {mode}: recorded {stats.recorded}, dropped {stats.dropped}, "
            f"write errors {stats.write_errors}",
            flush=True,
        )
    return times


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=2000.0, help="Requests per second.")
    args = parser.parse_args()
    body = request_body()
    print(f"load average {os.getloadavg()[0]:.2f}; request body {len(body)} bytes", flush=True)
    ratios: dict[str, list[tuple[float, float]]] = {"disk": [], "stuck": []}
    modes = ["off", "disk", "stuck"]
    with tempfile.TemporaryDirectory(prefix="serveops-rec-bench-") as tmp:
        for r in range(args.rounds):
            order = modes if r % 2 == 0 else modes[::-1]
            figures = {}
            for mode in order:
                t = run(mode, args.requests, args.rate, body, Path(tmp) / str(r))
                figures[mode] = (quantile(t, 0.5), quantile(t, 0.99))
            off50, off99 = figures["off"]
            print(
                f"round {r + 1}: "
                + ", ".join(f"{m} p50 {p50:.1f} us p99 {p99:.1f} us" for m, (p50, p99) in
                            figures.items()),
                flush=True,
            )  # fmt: skip
            for mode in ("disk", "stuck"):
                p50, p99 = figures[mode]
                ratios[mode].append((p50 / off50, p99 / off99))
    for mode, rs in ratios.items():
        print(
            f"{mode} / off: p50 x{statistics.median(a for a, _ in rs):.2f}, "
            f"p99 x{statistics.median(b for _, b in rs):.2f} (median of {len(rs)} rounds)"
        )
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

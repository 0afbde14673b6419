"""Run a replay in a child process, so the caller never imports Locust (and gevent's patches).

The child reads a traffic file, replays it with `simulator.replay.replay`, reports progress as
`progress <done> <total>` lines on stdout and writes the `ReplayResult` as JSON.

    python -m simulator.replay_process --traffic T.jsonl --targets '{"a": "http://..."}' \
        --options '{"speed": 10}' --out result.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from simulator.results import ReplayOptions, ReplayResult


class ReplayFailed(RuntimeError):
    """The replay process failed; the message carries the end of its log."""


def run_replay_process(
    traffic: Path,
    targets: dict[str, str],
    options: ReplayOptions,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    timeout_s: float | None = None,
    workers: int = 1,
    extra_args: list[str] | None = None,
) -> ReplayResult:
    """Replay in a child process (locally, with local workers, or as a remote-worker master)."""
    args = ["--targets", json.dumps(targets), "--options", options.model_dump_json()]
    if workers > 1:
        args += ["--workers", str(workers)]
    result = _child(traffic, args + (extra_args or []), on_progress, timeout_s)
    if result is None:
        raise ReplayFailed("the replay process wrote no result")
    return result


def run_remote_worker_process(
    traffic: Path, master_host: str, master_port: int, *, timeout_s: float | None = None
) -> ReplayResult | None:
    """Join a master as a worker in a child process; None if the master did not need it."""
    args = ["--remote-worker", "--master-host", master_host, "--master-port", str(master_port)]
    return _child(traffic, args, None, timeout_s)


def _child(
    traffic: Path,
    args: list[str],
    on_progress: Callable[[int, int], None] | None,
    timeout_s: float | None,
) -> ReplayResult | None:
    with tempfile.TemporaryDirectory(prefix="serveops-replay-") as tmp:
        out = Path(tmp) / "result.json"
        log = Path(tmp) / "replay.log"
        cmd = [sys.executable, "-m", "simulator.replay_process", "--traffic", str(traffic),
               "--out", str(out), *args]  # fmt: skip
        with log.open("w") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    parts = line.split()
                    if len(parts) == 3 and parts[0] == "progress" and on_progress is not None:
                        on_progress(int(parts[1]), int(parts[2]))
                code = proc.wait(timeout=timeout_s)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if code != 0:
            tail = log.read_text()[-3000:]
            raise ReplayFailed(f"the replay process failed (exit {code}):\n{tail}")
        if not out.exists():
            return None
        return ReplayResult.model_validate_json(out.read_text())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--traffic", type=Path, required=True)
    ap.add_argument("--targets", default="{}")
    ap.add_argument("--options", default="{}")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--workers", type=int, default=1, help="Locust workers (master/worker).")
    ap.add_argument("--worker", action="store_true", help="Run as a Locust worker.")
    ap.add_argument("--master-host", default="127.0.0.1")
    ap.add_argument("--master-port", type=int, default=5557)
    ap.add_argument("--master", action="store_true", help="Serve remote workers (TCP).")
    ap.add_argument("--master-bind", default="0.0.0.0")
    ap.add_argument("--expect-workers", type=int, default=1)
    ap.add_argument("--ready-timeout", type=float, default=120.0)
    ap.add_argument("--remote-worker", action="store_true", help="Join a remote master.")
    args = ap.parse_args(argv)

    if args.master or args.remote_worker:
        _distributed(args)
        return
    pinned = _pin(ReplayOptions.model_validate_json(args.options).cpu_affinity)

    # These import Locust: only here, in the child.
    from simulator.replay import replay
    from simulator.replay_workers import replay_master, replay_worker
    from simulator.traffic import read_jsonl

    targets = json.loads(args.targets)
    options = ReplayOptions.model_validate_json(args.options)
    if args.worker:
        _, records = read_jsonl(args.traffic)
        result = replay_worker(records, targets, options, args.master_host, args.master_port)
        args.out.write_text(result.model_dump_json())
        return
    if args.workers > 1:
        with tempfile.TemporaryDirectory(prefix="serveops-shards-") as tmp:
            result = replay_master(str(args.traffic), targets, options, args.workers, tmp)
        result.generator_cpus = pinned
        args.out.write_text(result.model_dump_json())
        return

    _, records = read_jsonl(args.traffic)

    def progress(done: int, total: int) -> None:
        print(f"progress {done} {total}", flush=True)

    result = replay(records, targets, options, progress=progress)
    result.generator_cpus = pinned
    args.out.write_text(result.model_dump_json())


def _pin(cpus: list[int] | None) -> list[int] | None:
    """Pin this process (and the workers it starts) to `cpus`; the cores it runs on after."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return None
    os.sched_setaffinity(0, set(cpus))
    return sorted(os.sched_getaffinity(0))


def _distributed(args: argparse.Namespace) -> None:
    from simulator.distributed import run_master, run_worker
    from simulator.traffic import read_traffic

    _, records = read_traffic(args.traffic)
    if args.remote_worker:
        result = run_worker(records, args.master_host, args.master_port)
        if result is None:
            print("the master started without this worker: nothing to do", file=sys.stderr)
            return
        args.out.write_text(result.model_dump_json())
        return
    result = run_master(
        records, json.loads(args.targets), ReplayOptions.model_validate_json(args.options),
        bind_host=args.master_bind, port=args.master_port, expect_workers=args.expect_workers,
        ready_timeout_s=args.ready_timeout,
    )  # fmt: skip
    args.out.write_text(result.model_dump_json())


if __name__ == "__main__":
    main()

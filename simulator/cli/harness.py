"""What the replay commands share: the traffic loaded and sliced, the replay in a child process
(this one never imports Locust) behind a progress bar, and the Ray cluster replayed against."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from controller.errors import ServeopsError
from simulator.cli.common import err
from simulator.results import ReplayOptions, ReplayResult
from simulator.traffic import (
    TrafficError,
    TrafficRecord,
    parse_window,
    read_traffic,
    slice_records,
    write_jsonl,
)


@contextlib.contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int, int], None]]:
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def load_traffic(
    traffic: Path, window: str | None, routes: set[str] | None = None
) -> tuple[Any, list[TrafficRecord]]:
    header, records = read_traffic(traffic)
    if not records:
        raise TrafficError(f"{traffic}: no requests")
    if window:
        start, end = parse_window(window, min(r.ts for r in records))
        records = slice_records(records, start, end)
    if routes is not None:
        records = [r for r in records if r.route in routes]
    if not records:
        raise TrafficError(f"{traffic}: no requests left in the window / for the routes replayed")
    return header, records


def replay_in_child(
    records: list[TrafficRecord],
    targets: dict[str, str],
    options: ReplayOptions,
    label: str,
    workers: int = 1,
    extra_args: list[str] | None = None,
) -> ReplayResult:
    from simulator.replay_process import ReplayFailed, run_replay_process

    with tempfile.TemporaryDirectory(prefix="serveops-traffic-") as tmp:
        path = Path(tmp) / "traffic.jsonl"
        write_jsonl(path, records)
        try:
            with progress_bar(label) as update:
                return run_replay_process(
                    path, targets, options, on_progress=update, workers=workers,
                    extra_args=extra_args,
                )  # fmt: skip
        except ReplayFailed as e:
            raise ServeopsError(str(e)) from None


@contextlib.contextmanager
def replay_cluster(
    address: str | None, num_cpus: int, reserve: int = 0
) -> Iterator[tuple[str, bool, list[int] | None]]:
    """The given Ray dashboard, or a local Ray we start and stop; with `reserve`, the local Ray
    is pinned to all but the last `reserve` cores, which are yielded for the load generator."""
    if address:
        yield address, False, None
        return
    from controller.dev.localray import LocalRay, reserve_cpus

    split = reserve_cpus(reserve)
    if split is None:
        if reserve:
            err.print(f"not reserving {reserve} core(s) for the generator: too few cores")
        err.print(f"starting a local Ray (--num-cpus {num_cpus})")
        with LocalRay(num_cpus) as ray:
            yield ray.address, True, None
        return
    ray_cores, gen_cores = split
    err.print(
        f"starting a local Ray (--num-cpus {num_cpus}) on cores {sorted(ray_cores)}; cores "
        f"{sorted(gen_cores)} kept for the load generator"
    )
    with LocalRay(num_cpus, cpu_affinity=ray_cores) as ray:
        yield ray.address, True, sorted(gen_cores)


def registry_from(uri: str | None) -> Any:
    from controller.registry.mlflow import registry_from_uri

    return registry_from_uri(uri)


def print_indented(message: str) -> None:
    err.print(f"  {message}")


def serve_http_port(client: Any) -> int:
    http = client.get().http_options or {}
    return int(http.get("port") or client.http_port)

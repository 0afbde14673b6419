"""`serveops replay`, `replay-worker` and `simulate`: replays in a child process (this one never
imports Locust), their results and the judge's report."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from controller.cluster.serving_code import parse_serving_code
from controller.errors import BadInput, ServeopsError
from simulator.cli.common import err, guarded, out
from simulator.cli.traffic import parse_fraction
from simulator.results import ReplayOptions, ReplayResult, StopWhenDecided
from simulator.traffic import (
    TrafficError,
    TrafficRecord,
    parse_window,
    read_traffic,
    slice_records,
    write_jsonl,
)


@contextlib.contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None]]:
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


def _load(
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


def _replay(
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
            with _progress(label) as update:
                return run_replay_process(
                    path, targets, options, on_progress=update, workers=workers,
                    extra_args=extra_args,
                )  # fmt: skip
        except ReplayFailed as e:
            raise ServeopsError(str(e)) from None


def _summary_table(result: ReplayResult) -> Table:
    import numpy as np

    table = Table(title=f"replay at {result.speed:g}x: {result.scheduled} requests")
    for col in ("target", "sent", "dropped", "timed out", "non-2xx", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(col, justify="left" if col == "target" else "right")
    for name in result.targets:
        outs = result.by_target(name)
        lat = np.array([o.latency_ms for o in outs if o.latency_ms is not None] or [0.0])
        q = np.quantile(lat, [0.5, 0.95, 0.99])
        table.add_row(
            name,
            str(sum(1 for o in outs if not o.dropped)),
            str(result.dropped.get(name, 0)),
            str(result.timed_out.get(name, 0)),
            str(sum(1 for o in outs if not o.dropped and o.failed)),
            f"{q[0]:.2f}",
            f"{q[1]:.2f}",
            f"{q[2]:.2f}",
        )
    return table


@contextlib.contextmanager
def _cluster(
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


def _registry(uri: str | None) -> Any:
    from controller.registry.mlflow import registry_from_uri

    return registry_from_uri(uri)


def _indented(message: str) -> None:
    err.print(f"  {message}")


def _http_port(client: Any) -> int:
    http = client.get().http_options or {}
    return int(http.get("port") or client.http_port)


RegistryOpt = Annotated[
    str | None,
    typer.Option("--registry-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI."),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        envvar="SERVEOPS_ADDRESS",
        help="Ray dashboard of an existing cluster (default: start a local Ray and stop it).",
    ),
]
ServingCodeOpt = Annotated[
    str,
    typer.Option(
        "--serving-code",
        envvar="SERVEOPS_SERVING_CODE",
        help="With --address: where its nodes get serveops' serving code: installed, pip, or a "
        "`serveops bundle` URI (docs/getting-started.md).",
    ),
]
SpeedOpt = Annotated[float, typer.Option(help="Replay speed: 1 = as recorded, 10 = 10x faster.")]
WindowOpt = Annotated[
    str | None, typer.Option(help="Only this window, A..B (seconds from start or timestamps).")
]
NumCpusOpt = Annotated[int, typer.Option(help="CPUs for a local Ray we start.")]
ReserveCpusOpt = Annotated[
    int,
    typer.Option(
        "--reserve-cpus",
        min=0,
        help="With a local Ray we start: cores kept free of Ray for the load generator (it is "
        "pinned to them, Ray to the rest); 0 shares every core.",
    ),
]
WorkersOpt = Annotated[
    int,
    typer.Option(help="Locust worker processes (master/worker, sharded by request id)."),
]


def replay_command(
    traffic: Annotated[
        Path, typer.Argument(help="Recorded traffic: a JSON Lines file, or a directory of them.")
    ],
    rev: Annotated[
        str | None, typer.Option(help="Deploy this Git revision on Ray Serve and replay on it.")
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="Replay against this base URL instead (no deploy).")
    ] = None,
    repo: Annotated[Path, typer.Option(help="Git repository holding deployments/.")] = Path("."),
    env: Annotated[str, typer.Option("--env", help="Environment to deploy.")] = "staging",
    speed: SpeedOpt = 1.0,
    window: WindowOpt = None,
    address: AddressOpt = None,
    registry_uri: RegistryOpt = None,
    serving_code: ServingCodeOpt = "installed",
    num_cpus: NumCpusOpt = 2,
    reserve_cpus: ReserveCpusOpt = 0,
    max_in_flight: Annotated[int, typer.Option(help="Cap on requests in flight.")] = 512,
    timeout: Annotated[float, typer.Option(help="Per-request timeout, seconds.")] = 10.0,
    web_ui: Annotated[
        int | None, typer.Option(help="Serve Locust's web UI on this port during the replay.")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Write outcomes.jsonl and summary.json here.")
    ] = None,
    workers: WorkersOpt = 1,
    master: Annotated[
        bool,
        typer.Option(
            "--master",
            help="With --url: serve the replay to workers on other hosts (`serveops "
            "replay-worker`) over TCP instead of replaying here.",
        ),
    ] = False,
    expect_workers: Annotated[
        int, typer.Option(min=1, max=1024, help="With --master: workers to wait for.")
    ] = 1,
    master_bind: Annotated[
        str, typer.Option(help="With --master: address to listen on.")
    ] = "0.0.0.0",
    master_port: Annotated[
        int, typer.Option(min=1, max=65535, help="With --master: TCP port to listen on.")
    ] = 5557,
    ready_timeout: Annotated[
        float,
        typer.Option(
            min=1,
            help="With --master: seconds to wait for the workers; then start "
            "with those present and say so.",
        ),
    ] = 120.0,
) -> None:
    """Replay recorded traffic open loop against a Git revision or a URL.

    Requests go out at their recorded pace times --speed, against the state of a Git revision on
    a local Ray Serve (--rev) or against a running endpoint (--url)."""

    def run() -> None:
        if (rev is None) == (url is None):
            raise BadInput("pass exactly one of --rev REV (deploy and replay) or --url URL")
        _, records = _load(traffic, window)
        options = ReplayOptions(
            speed=speed, max_in_flight=max_in_flight, timeout_s=timeout, web_ui_port=web_ui
        )
        if master and url is None:
            raise BadInput("--master serves a replay against --url (workers need a URL to reach)")
        if master:
            assert url is not None
            extra = ["--master", "--master-bind", master_bind, "--master-port", str(master_port),
                     "--expect-workers", str(expect_workers), "--ready-timeout", str(ready_timeout)]  # fmt: skip
            err.print(
                f"master on {master_bind}:{master_port}: waiting for {expect_workers} worker(s) "
                f"(serveops replay-worker {traffic} --master-host <this host> "
                f"--master-port {master_port})"
            )
            result = _replay(records, {"target": url}, options, "replay (master)", 1, extra)
        elif url is not None:
            result = _replay(records, {"target": url}, options, "replay", workers)
        else:
            assert rev is not None
            result = _replay_revision(records, rev, options)
        out.print(_summary_table(result))
        out.print(
            f"generator lag p50 {result.lag_p50_ms:.2f} ms, p99 {result.lag_p99_ms:.2f} ms, "
            f"max {result.lag_max_ms:.1f} ms: {'valid' if result.valid else 'INVALID'}"
        )
        for p in result.problems:
            err.print(f"[yellow]warning:[/] {p}")
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            with (out_dir / "outcomes.jsonl").open("w") as f:
                for o in result.outcomes:
                    f.write(o.model_dump_json(exclude={"body"}) + "\n")
            summary = result.model_dump(exclude={"outcomes"})
            (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            out.print(f"wrote {out_dir}/outcomes.jsonl and summary.json")

    def _replay_revision(
        records: list[TrafficRecord], the_rev: str, options: ReplayOptions
    ) -> ReplayResult:
        from controller.cluster.serve_api import ServeClient
        from controller.dev.localray import free_port
        from controller.sync.apply import apply_plan
        from controller.sync.read import Revision, plan_revision

        registry = _registry(registry_uri)
        code = parse_serving_code(serving_code if address else None)  # a local Ray has the venv
        with (
            _cluster(address, num_cpus, reserve_cpus) as (addr, _ours, gen_cpus),
            ServeClient(addr, http_port=free_port()) as client,
        ):
            target = Revision(str(repo), the_rev, env)
            plan = plan_revision(target, client, registry, serving_code=code)
            err.print(f"deploying {the_rev} ({plan.source.commit[:12]}) of {env!r} on {addr}")
            apply_plan(plan, client, log=lambda m: err.print(f"  {m}"))
            base = f"http://127.0.0.1:{_http_port(client)}"
            options = options.model_copy(update={"cpu_affinity": gen_cpus})
            return _replay(records, {the_rev: base}, options, f"replay {the_rev}", workers)

    guarded(run)


def replay_worker_command(
    traffic: Annotated[Path, typer.Argument(help="The same recorded traffic the master replays.")],
    master_host: Annotated[str, typer.Option(help="Host of `serveops replay --master`.")],
    master_port: Annotated[int, typer.Option(min=1, max=65535, help="Its port.")] = 5557,
    window: WindowOpt = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Also keep this worker's summary.json here.")
    ] = None,
) -> None:
    """Join a replay master on another host and replay the shard it assigns.

    The master sends the targets, options and a shared start time; this worker sends its
    outcomes back. Its traffic (after --window) must equal the master's (checked by digest)."""
    from simulator.replay_process import ReplayFailed, run_remote_worker_process

    def run() -> None:
        _, records = _load(traffic, window)
        with tempfile.TemporaryDirectory(prefix="serveops-traffic-") as tmp:
            path = Path(tmp) / "traffic.jsonl"
            write_jsonl(path, records)
            err.print(f"joining the master at {master_host}:{master_port}")
            try:
                result = run_remote_worker_process(path, master_host, master_port)
            except ReplayFailed as e:
                raise ServeopsError(str(e)) from None
        if result is None:
            out.print("the master started without this worker: nothing to do")
            return
        sent = sum(1 for o in result.outcomes if not o.dropped)
        out.print(
            f"sent {sent} of {result.scheduled} scheduled requests; generator lag p99 "
            f"{result.lag_p99_ms:.2f} ms: {'valid' if result.valid else 'INVALID'}"
        )
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            summary = result.model_dump(exclude={"outcomes"})
            (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    guarded(run)


def simulate_command(
    traffic: Annotated[
        Path,
        typer.Option(
            "--traffic", help="Recorded traffic: a JSON Lines file, or a directory of them."
        ),
    ],
    base: Annotated[str, typer.Option("--base", help="Baseline revision (e.g. main).")],
    head: Annotated[str, typer.Option("--head", help="Candidate revision (e.g. the PR head).")],
    repo: Annotated[Path, typer.Option(help="Git repository holding deployments/.")] = Path("."),
    env: Annotated[
        str, typer.Option("--env", help="Environment whose changes to test.")
    ] = "staging",
    speed: SpeedOpt = 1.0,
    window: WindowOpt = None,
    address: AddressOpt = None,
    registry_uri: RegistryOpt = None,
    serving_code: ServingCodeOpt = "installed",
    num_cpus: NumCpusOpt = 2,
    reserve_cpus: ReserveCpusOpt = 0,
    noise_floor: Annotated[
        bool, typer.Option(help="Also replay to a second baseline (A/A noise floor).")
    ] = False,
    thresholds_file: Annotated[
        Path | None,
        typer.Option(
            "--thresholds",
            help="Policy file: JSON or YAML thresholds for the run; a deployment's "
            "spec.simulation and spec.rollout.analysis refine them (see docs).",
        ),
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where the reports go.")] = Path(
        "simulation"
    ),
    fail_on_inconclusive: Annotated[
        bool, typer.Option(help="Exit 1 on an inconclusive verdict too.")
    ] = False,
    workers: WorkersOpt = 1,
    sequential: Annotated[
        bool | None,
        typer.Option(
            "--sequential/--fixed-horizon",
            help="Decide with the sequential judge (always-valid tests at every look; the "
            "report says where it stopped) or one test over all pairs. Default: the "
            "thresholds' `sequential` field (off).",
        ),
    ] = None,
    detect: Annotated[
        str | None,
        typer.Option(
            help="With --sequential: the slowdown a pass must rule out, e.g. 10% (the "
            "thresholds' detect_slowdown; plan the traffic it needs with `serveops traffic "
            "power`).",
        ),
    ] = None,
    max_requests: Annotated[
        int | None,
        typer.Option(min=1, help="Budget: replay at most the first N requests of the traffic."),
    ] = None,
) -> None:
    """Replay traffic to --base and --head side by side and decide; exit 1 on fail.

    Brings up the deployments that differ between the revisions on Ray Serve, replays traffic to
    both (paired), compares, and writes report.json, report.md and report.html."""

    def run() -> None:
        from controller.cluster.serve_api import ServeClient
        from controller.dev.localray import free_port
        from simulator import deploy
        from simulator.report import build_report, reference_features, write_reports
        from simulator.thresholds import resolve, spec_source

        detect_value = parse_fraction(detect, "--detect") if detect is not None else None
        changed = deploy.changed_deployments(repo, base, head, env)
        deploy.require_changes(changed, base, head, env)
        thresholds, sources = resolve(
            [spec_source(c.path, c.base_text, base) for c in changed], thresholds_file
        )
        if sequential is not None:
            thresholds = thresholds.model_copy(update={"sequential": sequential})
            sources["sequential"] = "command line"
        if detect_value is not None:
            thresholds = thresholds.model_copy(update={"detect_slowdown": detect_value})
            sources["detect_slowdown"] = "command line"
        routes = {c.route for c in changed}
        header, records = _load(traffic, window, routes)
        if max_requests is not None:
            records = sorted(records, key=lambda r: r.ts)[:max_requests]
        registry = _registry(registry_uri)
        code = parse_serving_code(serving_code if address else None)  # a local Ray has the venv
        err.print(f"changed in {env!r}: {', '.join(c.name for c in changed)}")
        with tempfile.TemporaryDirectory(prefix="serveops-sim-") as tmp:
            sim_repo, prefixes = deploy.write_sim_repo(Path(tmp), changed, noise_floor)
            with (
                _cluster(address, num_cpus, reserve_cpus) as (addr, ours, gen_cpus),
                ServeClient(addr, http_port=free_port()) as client,
            ):
                err.print(f"bringing up {base} and {head} side by side on {addr}")
                try:
                    deploy.bring_up(sim_repo, client, registry, serving_code=code, log=_indented)
                    http = f"http://127.0.0.1:{_http_port(client)}"
                    targets = {role: http + prefix for role, prefix in prefixes.items()}
                    stop = None
                    if thresholds.sequential and workers == 1:
                        stop = StopWhenDecided(
                            thresholds=thresholds.model_dump(),
                            noise="baseline_b" if noise_floor else None,
                        )
                    options = ReplayOptions(
                        speed=speed,
                        max_lag_p99_ms=thresholds.max_generator_lag_p99_ms,
                        stop_when_decided=stop,
                        cpu_affinity=gen_cpus,
                    )
                    result = _replay(records, targets, options, "simulate", workers)
                finally:
                    if not ours:  # on a cluster we do not own, leave nothing behind
                        deploy.tear_down(sim_repo, client, registry)
        report, sides = build_report(
            result,
            records,
            thresholds,
            threshold_sources=sources,
            noise="baseline_b" if noise_floor else None,
            reference_inputs=reference_features(),
            header=header,
            meta={"base": base, "head": head, "environment": env, "traffic": str(traffic),
                  "generator_cpus": result.generator_cpus,
                  "deployments": [c.name for c in changed]},
        )  # fmt: skip
        written = write_reports(report, out_dir, sides=sides, outcomes=result.outcomes)
        colour = {"pass": "green", "fail": "red", "inconclusive": "yellow"}[report.verdict]
        out.print(f"[bold {colour}]{report.verdict.upper()}[/]: {report.reason}")
        for c in report.checks:
            out.print(f"  {c.status:<12} {c.name}: {c.reason}", highlight=False)
        for name, source in sources.items():
            if source != "default":
                value = getattr(thresholds, name)
                out.print(f"  threshold {name} = {value} from {source}", highlight=False)
        out.print("wrote " + ", ".join(str(p) for p in written))
        if report.verdict == "fail" or (fail_on_inconclusive and report.verdict != "pass"):
            raise typer.Exit(1)

    guarded(run)

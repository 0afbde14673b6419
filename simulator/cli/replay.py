"""`serveops replay` and `replay-worker`: one recorded traffic file against one target or revision,
in a child process (this one never imports Locust), and the summary table of its result."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from controller.cluster.serving_code import parse_serving_code
from controller.errors import BadInput, ServeopsError
from simulator.cli.common import err, guarded, out
from simulator.cli.harness import (
    load_traffic,
    registry_from,
    replay_cluster,
    replay_in_child,
    serve_http_port,
)
from simulator.cli.options import (
    AddressOpt,
    NumCpusOpt,
    RegistryOpt,
    ReserveCpusOpt,
    ServingCodeOpt,
    SpeedOpt,
    WindowOpt,
    WorkersOpt,
    reserve_count,
)
from simulator.results import ReplayOptions, ReplayResult
from simulator.traffic import (
    TrafficRecord,
    write_jsonl,
)


def summary_table(result: ReplayResult) -> Table:
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
    reserve_cpus: ReserveCpusOpt = "auto",
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
        _, records = load_traffic(traffic, window)
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
            result = replay_in_child(records, {"target": url}, options, "replay (master)", 1, extra)
        elif url is not None:
            result = replay_in_child(records, {"target": url}, options, "replay", workers)
        else:
            assert rev is not None
            result = _replay_revision(records, rev, options)
        out.print(summary_table(result))
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

        registry = registry_from(registry_uri)
        code = parse_serving_code(serving_code if address else None)  # a local Ray has the venv
        with (
            replay_cluster(address, num_cpus, reserve_count(reserve_cpus)) as (
                addr,
                _ours,
                gen_cpus,
            ),
            ServeClient(addr, http_port=free_port()) as client,
        ):
            target = Revision(str(repo), the_rev, env)
            plan = plan_revision(target, client, registry, serving_code=code)
            err.print(f"deploying {the_rev} ({plan.source.commit[:12]}) of {env!r} on {addr}")
            apply_plan(plan, client, log=lambda m: err.print(f"  {m}"))
            base = f"http://127.0.0.1:{serve_http_port(client)}"
            options = options.model_copy(update={"cpu_affinity": gen_cpus})
            return replay_in_child(records, {the_rev: base}, options, f"replay {the_rev}", workers)

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
        _, records = load_traffic(traffic, window)
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

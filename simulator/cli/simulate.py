"""`serveops simulate`: a revision's candidates replayed side by side on recorded traffic, and the
judge's report."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from controller.cluster.serving_code import parse_serving_code
from simulator.cli.common import err, guarded, out
from simulator.cli.harness import (
    load_traffic,
    print_indented,
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
from simulator.cli.traffic import parse_fraction
from simulator.results import ReplayOptions, StopWhenDecided


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
    reserve_cpus: ReserveCpusOpt = "auto",
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
        from simulator.report import build_report, reference_features
        from simulator.report_files import write_reports
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
        header, records = load_traffic(traffic, window, routes)
        if max_requests is not None:
            records = sorted(records, key=lambda r: r.ts)[:max_requests]
        registry = registry_from(registry_uri)
        code = parse_serving_code(serving_code if address else None)  # a local Ray has the venv
        err.print(f"changed in {env!r}: {', '.join(c.name for c in changed)}")
        with tempfile.TemporaryDirectory(prefix="serveops-sim-") as tmp:
            sim_repo, prefixes = deploy.write_sim_repo(Path(tmp), changed, noise_floor)
            with (
                replay_cluster(address, num_cpus, reserve_count(reserve_cpus)) as (
                    addr,
                    ours,
                    gen_cpus,
                ),
                ServeClient(addr, http_port=free_port()) as client,
            ):
                err.print(f"bringing up {base} and {head} side by side on {addr}")
                try:
                    deploy.bring_up(
                        sim_repo, client, registry, serving_code=code, log=print_indented
                    )
                    http = f"http://127.0.0.1:{serve_http_port(client)}"
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
                    result = replay_in_child(records, targets, options, "simulate", workers)
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

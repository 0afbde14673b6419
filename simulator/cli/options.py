"""Options the replay commands share (`serveops replay` and `serveops simulate`)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from controller.errors import BadInput

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
    str,
    typer.Option(
        "--reserve-cpus",
        help="With a local Ray we start: cores kept free of Ray for the load generator (it is "
        "pinned to them, Ray to the rest). `auto`: one when this process may run on 2 cores "
        "or more; 0 shares every core.",
    ),
]


def reserve_count(text: str) -> int:
    """`--reserve-cpus` as a number of cores: `auto` keeps one for the generator when there are
    two or more (measured: its lag p99 4 to 200 times lower beside a local Ray, docs/benchmarks.md)."""
    if text == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return 1 if (cores or 1) >= 2 else 0
    try:
        count = int(text)
    except ValueError:
        count = -1
    if count < 0:
        raise BadInput(f"--reserve-cpus must be auto or a number of cores, not {text!r}")
    return count


WorkersOpt = Annotated[
    int,
    typer.Option(help="Locust worker processes (master/worker, sharded by request id)."),
]

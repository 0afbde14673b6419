"""Options the replay commands share (`serveops replay` and `serveops simulate`)."""

from __future__ import annotations

from typing import Annotated

import typer

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

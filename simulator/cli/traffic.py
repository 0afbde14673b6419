"""`serveops traffic import|slice|power`: recorded traffic in, windows out, a replay sized."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from simulator.cli.common import guarded, out
from simulator.traffic import (
    TrafficError,
    import_csv_trace,
    read_traffic,
    slice_file,
    write_jsonl,
)

traffic_app = typer.Typer(
    help="Recorded traffic (JSON Lines): import other sources, cut time windows.",
    no_args_is_help=True,
)


@traffic_app.command("import")
def traffic_import(
    source: Annotated[
        Path,
        typer.Argument(
            help="A CSV trace (TIMESTAMP, ContextTokens, ...), a HAR 1.2 archive, or a JSON or "
            "CSV request list."
        ),
    ],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="JSON Lines file to write.")],
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="azure-csv, har, json or csv; auto: by extension and content.",
        ),
    ] = "auto",
    route: Annotated[
        str | None,
        typer.Option(
            help="CSV traces: the route every request goes to (default /breast-cancer). HAR and "
            "lists: replaces every request's path."
        ),
    ] = None,
    path_prefix: Annotated[
        str | None,
        typer.Option(help="HAR and lists: keep only requests whose path starts with this."),
    ] = None,
    tokens_per_row: Annotated[int, typer.Option(help="Request tokens per payload row.")] = 256,
    max_rows: Annotated[int, typer.Option(help="Most rows in one payload.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed for drawing payload rows.")] = 0,
    limit: Annotated[int | None, typer.Option(help="Import only the first N requests.")] = None,
) -> None:
    """Turn a CSV arrival trace, a HAR archive or a request list into recorded traffic.

    CSV traces keep their arrival times; payloads are rows of the breast cancer data set in
    MLflow's `dataframe_split`, as many as each request's size asks for. HAR archives and
    request lists keep their requests (credentials, cookies and connection headers removed)
    and, for HAR, the recorded responses. Bad input names the file, entry or line, and field,
    and writes nothing."""

    def run() -> None:
        from simulator.imports import FORMATS, detect_format, import_har, import_request_list

        if fmt not in FORMATS:
            raise TrafficError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
        kind = detect_format(source) if fmt == "auto" else fmt
        if kind == "azure-csv":
            header, records = import_csv_trace(
                source, route=route or "/breast-cancer", tokens_per_row=tokens_per_row,
                max_rows=max_rows, seed=seed, limit=limit,
            )  # fmt: skip
        elif kind == "har":
            header, records = import_har(source, path_prefix=path_prefix, route=route, limit=limit)
        else:
            header, records = import_request_list(
                source, fmt="json" if kind == "json" else "csv", path_prefix=path_prefix,
                route=route, limit=limit,
            )  # fmt: skip
        if not records:
            raise TrafficError(f"{source}: no requests to import")
        n = write_jsonl(out_file, records, header)
        span = records[-1].ts - records[0].ts if records else 0.0
        out.print(f"wrote {n} requests ({kind}) spanning {span:.0f}s to {out_file}")
        for line in header.attribution:
            out.print(f"[dim]{line}[/]", highlight=False)

    guarded(run)


@traffic_app.command("slice")
def traffic_slice(
    source: Annotated[
        Path, typer.Argument(help="Recorded traffic: a JSON Lines file, or a directory of them.")
    ],
    window: Annotated[
        str, typer.Option(help="A..B: seconds after the first request, or ISO timestamps.")
    ],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="File to write.")],
) -> None:
    """Cut a time window (an incident) out of recorded traffic, keeping its header."""
    guarded(
        lambda: out.print(f"wrote {slice_file(source, out_file, window)} requests to {out_file}")
    )


def parse_fraction(text: str, what: str) -> float:
    """'10%' or '0.1' -> 0.1; anything else is bad input naming the option."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise TrafficError(f"{what}: expected a fraction like 0.1 or a percentage like 10%, "
                           f"got {text!r}") from None  # fmt: skip
    if not 0 < value < 10:
        raise TrafficError(f"{what}: {text!r} is out of range (0, 1000%)")
    return value


@traffic_app.command("power")
def traffic_power(
    source: Annotated[
        Path, typer.Argument(help="Recorded traffic with recorded latencies: the pilot.")
    ],
    detect: Annotated[
        str, typer.Option(help="Relative slowdown to catch, e.g. 10% or 0.1.")
    ] = "15%",
    quantile: Annotated[float, typer.Option(min=0.01, max=0.99, help="Quantile judged.")] = 0.95,
    power: Annotated[
        float, typer.Option(min=0.5, max=0.999, help="Probability of catching it.")
    ] = 0.95,
    alpha: Annotated[float, typer.Option(min=0.001, max=0.5, help="1 - confidence.")] = 0.05,
    budget: Annotated[
        int | None, typer.Option(min=1, help="Most pairs a replay may use; exit 1 if short.")
    ] = None,
) -> None:
    """Plan a simulation: how many paired requests catch a --detect slowdown at --quantile.

    The recorded latencies are the pilot; the candidate is assumed as noisy as the baseline and
    independent of it (conservative: pairing only removes shared noise)."""

    def run() -> None:
        import numpy as np

        from simulator.power import latency_mde, pilot_sd, required_pairs

        effect = parse_fraction(detect, "--detect")
        _, records = read_traffic(source)
        lat = [r.response.latency_ms for r in records if r.response and r.response.latency_ms]
        try:
            sd = pilot_sd(np.asarray(lat, dtype=np.float64), quantile)
        except ValueError as e:
            raise TrafficError(f"{source}: {e} (record traffic with responses)") from None
        fixed = required_pairs(sd, effect, alpha, power)
        seq = required_pairs(sd, effect, alpha, power, sequential=True)
        label = f"p{round(quantile * 100)}"
        out.print(
            f"pilot: {len(lat)} recorded latencies, per-pair sd of log {label} ratio {sd:.3f}"
        )
        out.print(f"to catch a {effect:.0%} {label} slowdown with {power:.0%} probability "
                  f"(alpha {alpha}):")  # fmt: skip
        out.print(f"  fixed horizon:  {fixed} pairs")
        out.print(f"  sequential:     at most {seq} pairs (stops earlier when the effect is "
                  "clearly larger or clearly absent)")  # fmt: skip
        n = len(lat)
        mde = latency_mde(sd, n, alpha, power)
        out.print(f"  this recording's {n} requests would catch a {label} slowdown of {mde:.1%}")
        if budget is not None and fixed > budget:
            have = latency_mde(sd, budget, alpha, power)
            out.print(f"over budget: {budget} pairs catch only {have:.1%} at {label}")
            raise typer.Exit(1)

    guarded(run)


# --- replay ------------------------------------------------------------------------------------

"""What every command shares: its options (defined once, one meaning per name), the consoles,
the error-to-exit-code wrapper and the parsers of option values.

Every option that names the cluster (`--address`) honours SERVEOPS_ADDRESS, the registry
(`--registry-uri`) MLFLOW_TRACKING_URI, the state file (`--state`) SERVEOPS_STATE.
Durations follow the deployment files' grammar (controller/spec/durations.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from controller.cli.display import print_error
from controller.cluster.serve_api import DEFAULT_ADDRESS as DEFAULT_ADDRESS  # one default
from controller.errors import BadInput, ServeopsError
from controller.spec.durations import parse_duration

T = TypeVar("T")

# Piped output (CI logs, the demo) is never cut to rich's 80-column default.
out = Console(soft_wrap=True, highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, soft_wrap=True, highlight=False)

DEFAULT_STATE = Path(".serveops/state.db")


def run(fn: Callable[[], T]) -> T:
    """Turn serveops errors into one message on stderr and the error's exit code (1, or 2 for
    bad input), never a traceback."""
    try:
        return fn()
    except ServeopsError as e:
        print_error(err, e.message)
        raise typer.Exit(e.exit_code) from None


def check_output(output: str, formats: tuple[str, ...] = ("text", "json")) -> None:
    if output not in formats:
        choices = " or ".join(repr(f) for f in formats)
        raise BadInput(f"--output must be {choices}, not {output!r}")


def seconds(option: str, text: str) -> float:
    """A duration option's value in seconds (positive); bad input names the option."""
    try:
        value = parse_duration(text)
    except ValueError as e:
        raise BadInput(f"{option}: {e}") from None
    if value <= 0:
        raise BadInput(f"{option}: {text!r}: a duration must be positive")
    return value


# --- where: the repository, the revision, the environment ------------------------------------

RepoPathOpt = Annotated[
    Path, typer.Option("--repo", help="Git repository (a local directory) holding deployments/.")
]
RepoOpt = Annotated[
    str,
    typer.Option(
        "--repo",
        help="Git repository to follow: a local directory, or a URL to clone and fetch.",
    ),
]
RevOpt = Annotated[str, typer.Option("--rev", help="Git revision to read (branch, tag, sha).")]
EnvOpt = Annotated[str, typer.Option("--env", help="Environment: the folder deployments/<env>/.")]

# --- the cluster and the registry --------------------------------------------------------------

AddressOpt = Annotated[
    str,
    typer.Option("--address", envvar="SERVEOPS_ADDRESS", help="Ray dashboard URL of the cluster."),
]
HttpPortOpt = Annotated[
    int,
    typer.Option(
        "--http-port",
        envvar="SERVEOPS_HTTP_PORT",
        help="Serve HTTP port, used only when Serve is not running yet.",
    ),
]
RegistryOpt = Annotated[
    str | None,
    typer.Option(
        "--registry-uri",
        envvar="MLFLOW_TRACKING_URI",
        help="MLflow tracking/registry URI (sqlite:////abs/path.db, http://host:5000, ...).",
    ),
]
ServingCodeOpt = Annotated[
    str,
    typer.Option(
        "--serving-code",
        envvar="SERVEOPS_SERVING_CODE",
        help="Where the cluster's nodes get serveops' serving code: installed (in their Python), "
        "pip (serveops==<this version> from their index), or the URI of a bundle made by "
        "`serveops bundle` (https://, s3://, gs://, file://...).",
    ),
]

# --- what an apply may do ----------------------------------------------------------------------

PruneOpt = Annotated[
    bool, typer.Option("--prune", help="Delete deployments that are gone from Git.")
]
AllowEmptyOpt = Annotated[
    bool,
    typer.Option(
        "--allow-empty", help="With --prune, let an empty desired state delete every deployment."
    ),
]
TimeoutOpt = Annotated[
    str,
    typer.Option(
        "--timeout", help="How long an apply waits for new versions to run (300s, 5m, ...)."
    ),
]

# --- the controller's state and identity -------------------------------------------------------

StateOpt = Annotated[
    Path,
    typer.Option(
        "--state", envvar="SERVEOPS_STATE", help="SQLite file of the controller's state and audit."
    ),
]
ActorOpt = Annotated[
    str | None, typer.Option("--actor", help="Who acts, for the audit (default: user@host).")
]

# --- output --------------------------------------------------------------------------------------

OutputOpt = Annotated[str, typer.Option("--output", "-o", help="text or json.")]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Debug logs of serveops itself (not its libraries).")
]
LogFormatOpt = Annotated[
    str, typer.Option("--log-format", help="text, or json (one object per line, for shippers).")
]

"""What the simulator's commands share: consoles, and errors turned into exit codes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console

from controller.errors import ServeopsError
from simulator.traffic import (
    TrafficError,
)

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")


def guarded(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except TrafficError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(2) from None
    except ServeopsError as e:
        err.print(f"[bold red]error:[/] {e.message}", highlight=False)
        raise typer.Exit(e.exit_code) from None

"""`serveops traffic import|slice`, `serveops replay` and `serveops simulate`.

Registered on the main `serveops` app by `register(app)`. Replays run in a child process
(`simulator.replay_process`), so this process never imports Locust and its gevent patches.
Exit codes as the rest of serveops: 0 ok, 1 failure (a failed verdict), 2 bad input.
"""

from __future__ import annotations

import typer

from simulator.cli.replay import replay_command, replay_worker_command
from simulator.cli.simulate import simulate_command
from simulator.cli.traffic import traffic_app


def register(app: typer.Typer) -> None:
    """Add the simulator's commands to the `serveops` app."""
    app.add_typer(traffic_app, name="traffic")
    app.command("replay")(replay_command)
    app.command("replay-worker")(replay_worker_command)
    app.command("simulate")(simulate_command)

"""What the tour needs besides its story: a serveops process in the background (stopped even
when the tour is killed), the recording read as far as it is written, and the tour's own
applications removed from a cluster it did not start."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from controller.cluster.serve_api import ServeClient
from controller.dev.localray import kill_tree


def serveops_bin() -> str:
    return str(Path(sys.executable).with_name("serveops"))


class Background:
    """`serveops ARGS` in a session of its own, its output appended to `log`, with a watchdog
    that stops it if the tour's process dies without stopping it."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [serveops_bin(), *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._watchdog: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-m", "controller.dev.localray", str(os.getpid()), str(self.proc.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exited(self) -> int | None:
        return self.proc.poll()

    def stop(self, timeout_s: float = 60) -> None:
        """SIGTERM (the controller finishes its pass and gives up its lease), then the tree."""
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait(timeout=5)
            self._watchdog = None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            kill_tree(self.proc.pid)
            self.proc.wait(timeout=5)


def count_recorded(recordings: Path) -> int:
    """Records the router wrote so far (each file starts with a header line)."""
    count = 0
    for path in recordings.glob("*.jsonl"):
        with path.open("rb") as f:
            count += max(0, sum(1 for _ in f) - 1)
    return count


def snapshot_recordings(recordings: Path, target: Path) -> int:
    """Copy the recording as it is now to `target`: the router keeps appending, so each file
    up to its last complete line, and none that holds no record yet. Returns the records."""
    target.mkdir(parents=True, exist_ok=True)
    records = 0
    for path in sorted(recordings.glob("*.jsonl")):
        data = path.read_bytes()
        data = data[: data.rfind(b"\n") + 1]
        if data.count(b"\n") < 2:  # a file just started: its header at most
            continue
        (target / path.name).write_bytes(data)
        records += data.count(b"\n") - 1
    return records


def post_until_ok(url: str, body: Any, timeout_s: float) -> bool:
    """The proxy learns a new route asynchronously: True once `url` answers 200."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.post(url, json=body, timeout=30).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def remove_applications(address: str, http_port: int, deployment: str) -> int:
    """Remove a deployment's applications (its router and versions), and nothing else, from
    a cluster; returns how many."""
    with ServeClient(address, http_port=http_port) as client:
        live = client.get()
        ours = {n for n in live.apps if n == deployment or n.startswith(f"{deployment}--")}
        if ours:
            client.put([a.config for n, a in live.apps.items() if n not in ours], live)
        return len(ours)

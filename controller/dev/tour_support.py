"""What the tour needs besides its story: a serveops process in the background (stopped even
when the tour is killed), the recording read as far as it is written, and the tour's own
applications removed from a cluster it did not start."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

from controller.cluster.serve_api import ServeClient
from controller.dev.localray import kill_tree
from controller.errors import ServeopsError


def serveops_bin() -> str:
    return str(Path(sys.executable).with_name("serveops"))


class StepFailed(ServeopsError):
    """A step of the tour did not do what it shows; the tour stops there."""


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


def remove_applications(
    address: str, http_port: int, deployment: str, timeout_s: float = 120
) -> int:
    """Remove a deployment's applications (its router and versions), and nothing else, from
    a cluster, and wait until Serve has deleted them; returns how many there were."""

    def ours(names: Iterable[str]) -> set[str]:
        return {n for n in names if n == deployment or n.startswith(f"{deployment}--")}

    with ServeClient(address, http_port=http_port) as client:
        live = client.get()
        removed = ours(live.apps)
        if removed:
            client.put([a.config for n, a in live.apps.items() if n not in removed], live)
        deadline = time.monotonic() + timeout_s
        while ours(client.get().apps):  # deleting replicas takes Serve a few seconds
            if time.monotonic() > deadline:
                raise ServeopsError(f"Serve did not delete {deployment} in {timeout_s:.0f}s")
            time.sleep(1)
        return len(removed)


def left_to_look_at(workdir: Path, tracking_uri: str, env: str) -> str:
    """What the tour leaves behind in `workdir`, and the command that shows each."""
    repo, state = workdir / "repo", workdir / "state.db"
    return f"""
  Left for you to look at, in {workdir}:
    git -C {repo} log --graph --oneline --all    the pull requests, the merge, the revert
    {workdir / "reports"}/simulate-v2/report.html             the simulation of v2 (open in a browser)
    serveops history --state {state}              the controller's audit
    serveops rollouts --state {state} --env {env}  the last rollout and its analyses
    {workdir / "controller.log"}                              what the controller logged
    {workdir / "recordings"}/                                 the recorded traffic (JSON Lines)
    {workdir / "batch" / "scores"}/               the batch runs' output and manifests
    mlflow ui --backend-store-uri {tracking_uri}  the registered versions"""

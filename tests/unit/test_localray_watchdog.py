"""LocalRay's watchdog with real processes (no Ray): when the owner of a local Ray is SIGKILLed,
the process tree it started is stopped anyway."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import psutil


def test_tree_is_killed_when_its_owner_is_sigkilled() -> None:
    owner = subprocess.Popen(["sleep", "60"])
    # Stands in for `ray start --block`: a parent with children, in its own session.
    tree = subprocess.Popen(["bash", "-c", "sleep 60 & sleep 60 & wait"], start_new_session=True)
    # Reaped as soon as it exits, as init reaps a real orphaned `ray start`.
    reaper = threading.Thread(target=tree.wait, daemon=True)
    reaper.start()
    watchdog = subprocess.Popen(
        [sys.executable, "-m", "controller.dev.localray", str(owner.pid), str(tree.pid)]
    )
    try:
        children: list[psutil.Process] = []
        while len(children) < 2:  # bash has started both
            children = psutil.Process(tree.pid).children(recursive=True)
        assert watchdog.poll() is None  # waits while the owner lives
        owner.send_signal(signal.SIGKILL)  # left unreaped: a zombie counts as gone
        watchdog.wait(timeout=30)
        reaper.join(timeout=10)
        assert tree.returncode is not None
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == []
    finally:
        for proc in (owner, tree, watchdog):
            proc.kill()
            proc.wait()

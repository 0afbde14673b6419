"""controller/dev/workernice.py on real processes, without Ray: a stand-in raylet (a Python
process with a thread of its own), one worker and one agent it started. After
`start_workers_at`, the raylet's and the worker's threads are at the workers' nice, the agent
keeps its own, and a process the raylet forks afterwards, from a thread other than its main
one (as the raylet does), starts at the workers' nice."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import psutil
import pytest

from controller.dev import workernice

pytestmark = pytest.mark.skipif(not workernice.supported(), reason="needs Linux's /proc")

RAYLET = textwrap.dedent(
    """
    import subprocess, sys, threading
    child = "import time; time.sleep(60)"
    worker = subprocess.Popen([sys.executable, "-c", child, "default_worker"])
    agent = subprocess.Popen([sys.executable, "-c", child, "dashboard_agent"])
    def fork_on_request():
        for line in sys.stdin:  # "fork": start one more, from this thread
            born = subprocess.run(
                [sys.executable, "-c", "import os; print(os.nice(0))"],
                capture_output=True, text=True,
            )
            print(born.stdout.strip(), flush=True)
    io = threading.Thread(target=fork_on_request)
    io.start()
    print(worker.pid, agent.pid, flush=True)
    io.join()
    worker.kill(); agent.kill()
    """
)


OURS = os.getpriority(os.PRIO_PROCESS, 0)  # what the stand-ins inherit
LOW = max(OURS, workernice.WORKER_NICE)  # a nice value is only ever raised


def nices(pid: int) -> set[int]:
    return {os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir(f"/proc/{pid}/task")}


@pytest.fixture
def raylet() -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", RAYLET], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    worker, agent = (int(pid) for pid in proc.stdout.readline().split())
    yield proc, worker, agent
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=30)


def test_the_raylet_and_its_workers_move_and_its_agents_stay(
    raylet: tuple[subprocess.Popen[str], int, int],
) -> None:
    proc, worker, agent = raylet
    assert len(os.listdir(f"/proc/{proc.pid}/task")) >= 2  # the main thread and the io one
    moved = workernice.start_workers_at(psutil.Process(proc.pid))
    assert moved >= (3 if OURS < workernice.WORKER_NICE else 0)
    assert nices(proc.pid) == {LOW}
    assert nices(worker) == {LOW}
    assert nices(agent) == {OURS}


def test_a_worker_forked_afterwards_starts_at_the_workers_nice(
    raylet: tuple[subprocess.Popen[str], int, int],
) -> None:
    proc, _, _ = raylet
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write("fork\n")
    proc.stdin.flush()
    assert int(proc.stdout.readline()) == OURS  # before: the raylet's own
    workernice.start_workers_at(psutil.Process(proc.pid))
    proc.stdin.write("fork\n")
    proc.stdin.flush()
    assert int(proc.stdout.readline()) == LOW


def test_a_caller_that_chose_rays_worker_niceness_is_left_alone() -> None:
    assert workernice.wanted({})
    assert not workernice.wanted({workernice.NICE_ENV: "5"})

"""A local Ray's new workers start at the workers' priority, not above the serving replicas.

Ray runs its workers (Serve's replicas, proxy and controller among them) at nice 15, below its
GCS, raylet and agents at 0. A worker sets that itself, once Python has started and imported
Ray: its first 0.67 CPU-seconds run at the raylet's nice 0, 28 times the weight of the replicas
serving beside it. A rollout's candidate starts two such workers at once (Serve's build task and
the replica), and in the second after its config PUT they took 121% of 2 cores while the
serving path's p50 went from 35 to 903 ms (docs/benchmarks.md, zero-downtime items 18 and 20).

So once the head is up, every thread of its raylet, and of the workers it already started, is
moved to the workers' nice, and Ray is told not to add its own (`RAY_worker_niceness=0`): a
worker forked later starts where it will run. The GCS, the agents and the dashboard keep nice
0. Raising a nice value needs no privilege. Where this is not Linux, or the caller set
`RAY_worker_niceness` itself, nothing is moved.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import psutil

WORKER_NICE = 15  # Ray's default RAY_worker_niceness: the nice its workers run at
NICE_ENV = "RAY_worker_niceness"


def supported() -> bool:
    """Threads' nice values can be read and set here (Linux's /proc)."""
    return Path("/proc/self/task").is_dir() and hasattr(os, "setpriority")


def wanted(env: dict[str, str]) -> bool:
    """Whether a local head started with `env` should start its workers at their nice: on
    Linux, unless the caller chose Ray's worker niceness itself."""
    return supported() and NICE_ENV not in env


def _threads(pid: int) -> list[int]:
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:  # gone, or no /proc
        return []


def _to_nice(pid: int, nice: int) -> int:
    """Every thread of `pid` at `nice` (a nice value belongs to a thread on Linux); how many
    were below it. Twice over, for threads created meanwhile by one not yet moved."""
    moved = 0
    for _ in range(2):
        for tid in _threads(pid):
            with contextlib.suppress(OSError):  # the thread ended meanwhile
                if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                    os.setpriority(os.PRIO_PROCESS, tid, nice)
                    moved += 1
    return moved


def _is_agent(proc: psutil.Process) -> bool:
    """The raylet's agents (dashboard, runtime env) are not workers: they keep nice 0."""
    with contextlib.suppress(psutil.Error):
        return "agent" in " ".join(proc.cmdline()).lower()
    return True


def raylet_of(ray_start_pid: int, temp_dir: Path) -> psutil.Process | None:
    """The raylet `ray start` (pid) started for the head whose --temp-dir is `temp_dir`."""
    try:
        tree = psutil.Process(ray_start_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for proc in tree:
        with contextlib.suppress(psutil.Error):
            if proc.name() == "raylet" and str(temp_dir) in " ".join(proc.cmdline()):
                return proc
    return None


def start_workers_at(raylet: psutil.Process, nice: int = WORKER_NICE) -> int:
    """The raylet's threads, and its workers' (not its agents'), at `nice`: workers it forks
    from now on start there. How many threads were moved."""
    moved = _to_nice(raylet.pid, nice)
    with contextlib.suppress(psutil.NoSuchProcess):
        for child in raylet.children(recursive=True):
            if not _is_agent(child):
                moved += _to_nice(child.pid, nice)
    return moved

"""A replica's start in the CPU time the serving replicas leave (Linux's SCHED_IDLE).

A rollout starts a candidate's replica beside the version that serves every request, on the
same cores. Its start (importing MLflow and the model's flavour, loading the model) costs a few
CPU-seconds: 3.7 of the demo model's 6.5, the rest being Ray's new worker and Serve's imports.
At the serving replicas' priority it takes that time from their requests; in a thread of the
idle class it runs only when no other thread wants the CPU, and a serving thread that wakes
preempts it at once. A nice value does not promise that: Linux's scheduler (EEVDF) lets a
low-weight thread finish its slice before a woken thread runs, and Ray already runs its workers
at nice 15.

The class belongs to one thread, so the replica's other threads keep theirs, and any process
may put a thread of its own in it (no privilege). Threads the start creates inherit it (a
flavour's thread pool made at load would then serve in idle time): they are moved back to the
normal class once the start is done, which needs the privilege to raise a thread's priority
(root, CAP_SYS_NICE or RLIMIT_NICE); without it the replica's log names how many stayed. The
warm-up runs after, in the normal class, so pools made by first predictions are normal ones.
An idle-class thread still gets a small share on a saturated node (a weight of 3 against 36 at
nice 15), so a start is slowed there, never stopped. The class orders the threads of one CPU
group (a container's cgroup, or a session where Linux's autogroup is on): to a process outside
the cluster's group the start is that group's ordinary work (docs/rollouts.md).
`SERVEOPS_START_POLICY=normal` (a node's environment or an application's `runtime_env.env_vars`)
turns it off. `worker`, for measurement, starts the whole worker in the idle class through Ray's
setup hook (`WORKER_HOOK`), which the application's env vars must name; serveops does not render
it (measured no clear gain: docs/benchmarks.md, zero-downtime item 25).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

POLICY_ENV = "SERVEOPS_START_POLICY"
# Ray runs the function this (internal) variable names in each new worker process, after it
# connects and before it takes its actor: the only point that precedes Serve's own imports.
WORKER_HOOK_ENV = "__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR"
WORKER_HOOK = "controller.serving.startup.whole_worker_idle"


def idle_start_enabled() -> bool:
    """Whether a replica's start runs in a thread of the idle class (`SERVEOPS_START_POLICY`
    unset or `idle`, on a platform that has SCHED_IDLE)."""
    return os.environ.get(POLICY_ENV, "idle") != "normal" and hasattr(os, "SCHED_IDLE")


@dataclass(frozen=True)
class StartPriority:
    """How a replica's start ran, for its log."""

    idle: bool  # in a thread of the idle class (False: turned off or refused)
    restored: int = 0  # threads the start created, moved back to the normal class
    left_idle: int = 0  # threads it created that could not be moved back (no privilege)

    def line(self) -> str:
        if not self.idle:
            return "at normal priority"
        parts = ["in idle CPU time"]
        if self.restored:
            parts.append(f"{self.restored} thread(s) it started moved back to normal")
        if self.left_idle:
            parts.append(
                f"{self.left_idle} thread(s) it started left in idle time, without the "
                "privilege to raise them"
            )
        return ", ".join(parts)


def whole_worker_policy() -> bool:
    """`SERVEOPS_START_POLICY=worker`: the whole new worker starts in the idle class (through
    `WORKER_HOOK`), not only the model's load."""
    return os.environ.get(POLICY_ENV) == "worker" and hasattr(os, "SCHED_IDLE")


def whole_worker_idle() -> None:
    """Ray's worker setup hook (`WORKER_HOOK_ENV`): under the `worker` policy, every thread
    of this new worker into the idle class, so Serve's imports and the replica's start run in
    idle CPU time too. The model server moves them back once its model is loaded
    (`worker_back_to_normal`)."""
    if not whole_worker_policy():
        return
    for tid in _threads():
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except OSError:  # the thread ended meanwhile
            continue


def worker_back_to_normal() -> tuple[int, int]:
    """Under the `worker` policy, every idle-class thread of this process back to the normal
    class: (moved, refused). (0, 0) otherwise."""
    return _back_to_normal(_threads()) if whole_worker_policy() else (0, 0)


def _threads() -> set[int]:
    """This process's thread ids (Linux's /proc; empty where there is none)."""
    try:
        return {int(tid) for tid in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def _back_to_normal(tids: set[int]) -> tuple[int, int]:
    """Move the idle-class threads among `tids` back to the normal class: (moved, refused)."""
    moved = refused = 0
    for tid in tids:
        try:
            if os.sched_getscheduler(tid) != os.SCHED_IDLE:
                continue
            os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
            moved += 1
        except PermissionError:
            refused += 1
        except OSError:  # the thread ended meanwhile
            continue
    return moved, refused


def in_idle_time(work: Callable[[], T]) -> tuple[T, StartPriority]:
    """`work()`, run in a thread of the idle class, and how it ran. Threads `work` started
    and left running are moved back to the normal class. Exceptions from `work` are raised
    here, as if it had run in the caller's thread."""
    if not idle_start_enabled():
        return work(), StartPriority(idle=False)
    before = _threads()
    out: dict[str, object] = {}

    def run() -> None:
        out["tid"] = threading.get_native_id()
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0: this thread
            out["idle"] = True
        except OSError:
            out["idle"] = False
        try:
            out["value"] = work()
        except BaseException as err:  # raised again in the caller's thread
            out["error"] = err

    thread = threading.Thread(target=run, name="serveops-replica-start")
    thread.start()
    thread.join()
    # The start's own thread may linger a moment after join(): it is not one the work started.
    started = _threads() - before - {out["tid"]}
    moved, refused = _back_to_normal(started) if out["idle"] else (0, 0)
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    priority = StartPriority(idle=bool(out["idle"]), restored=moved, left_idle=refused)
    return out["value"], priority  # type: ignore[return-value]

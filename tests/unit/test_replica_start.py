"""A replica's start in idle CPU time (controller/serving/startup.py), on this machine's real
scheduler: the policy each thread runs under is read back from Linux, no fake."""

from __future__ import annotations

import os
import threading

import pytest

from controller.serving import startup
from controller.serving.startup import StartPriority, in_idle_time

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux's SCHED_IDLE")


def policy() -> int:
    return os.sched_getscheduler(0)  # 0: the calling thread


def test_the_work_runs_in_an_idle_class_thread_and_the_caller_keeps_its_class() -> None:
    seen: dict[str, int] = {}

    def work() -> str:
        seen["policy"], seen["thread"] = policy(), threading.get_ident()
        return "model"

    value, how = in_idle_time(work)
    assert value == "model"
    assert how == StartPriority(idle=True)
    assert seen["policy"] == os.SCHED_IDLE
    assert seen["thread"] != threading.get_ident()
    assert policy() == os.SCHED_OTHER
    assert how.line() == "in idle CPU time"


def test_an_error_in_the_work_is_raised_in_the_callers_thread() -> None:
    def work() -> None:
        raise FileNotFoundError("models:/fraud/9 has no artifacts")

    with pytest.raises(FileNotFoundError, match="has no artifacts"):
        in_idle_time(work)
    assert policy() == os.SCHED_OTHER


def test_turned_off_the_work_runs_in_the_callers_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(startup.POLICY_ENV, "normal")
    seen: dict[str, int] = {}

    def work() -> int:
        seen["policy"], seen["thread"] = policy(), threading.get_ident()
        return 7

    assert in_idle_time(work) == (7, StartPriority(idle=False))
    assert seen == {"policy": os.SCHED_OTHER, "thread": threading.get_ident()}
    assert StartPriority(idle=False).line() == "at normal priority"


def test_a_refused_class_runs_the_work_at_the_callers_priority(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*_: object) -> None:
        raise PermissionError("sched_setscheduler")

    monkeypatch.setattr(startup.os, "sched_setscheduler", refuse)
    value, how = in_idle_time(lambda: policy())
    assert value == os.SCHED_OTHER
    assert how == StartPriority(idle=False)


def test_threads_the_start_leaves_running_are_moved_back_to_the_normal_class() -> None:
    """A flavour's thread pool made while the model loads would otherwise serve in idle time."""
    stop = threading.Event()
    pool_policy: dict[str, int] = {}
    asked = threading.Event()

    def pool() -> None:
        stop.wait(30)
        pool_policy["after"] = policy()
        asked.set()

    def work() -> threading.Thread:
        thread = threading.Thread(target=pool, daemon=True)
        thread.start()
        return thread

    thread, how = in_idle_time(work)
    try:
        tid = thread.native_id
        assert tid is not None
        if os.geteuid() == 0:  # may raise a thread's priority: moved back
            assert how == StartPriority(idle=True, restored=1)
            assert os.sched_getscheduler(tid) == os.SCHED_OTHER
            assert "1 thread(s) it started moved back to normal" in how.line()
        else:  # may not: left in idle time, and the log says so
            assert how == StartPriority(idle=True, left_idle=1)
            assert os.sched_getscheduler(tid) == os.SCHED_IDLE
            assert "left in idle time" in how.line()
    finally:
        stop.set()
        asked.wait(5)
        thread.join(5)
    expected = os.SCHED_OTHER if os.geteuid() == 0 else os.SCHED_IDLE
    assert pool_policy["after"] == expected


def test_a_refused_move_back_is_counted_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.sched_setscheduler

    def only_to_idle(pid: int, policy_: int, param: os.sched_param) -> None:
        if policy_ != os.SCHED_IDLE:
            raise PermissionError("raising a thread's priority needs CAP_SYS_NICE")
        real(pid, policy_, param)

    monkeypatch.setattr(startup.os, "sched_setscheduler", only_to_idle)
    stop = threading.Event()

    def work() -> threading.Thread:
        thread = threading.Thread(target=stop.wait, args=(30,), daemon=True)
        thread.start()
        return thread

    thread, how = in_idle_time(work)
    stop.set()
    thread.join(5)
    assert how == StartPriority(idle=True, left_idle=1)
    assert "1 thread(s) it started left in idle time, without the privilege" in how.line()


WHOLE_WORKER = """
import json, os, threading
from controller.serving import startup

def policies():
    return sorted(os.sched_getscheduler(int(t)) for t in os.listdir("/proc/self/task"))

stop = threading.Event()
threading.Thread(target=stop.wait, daemon=True).start()  # a thread Ray's worker would have
startup.whole_worker_idle()  # as Ray calls the hook, before the actor
during = policies()
moved, refused = startup.worker_back_to_normal()  # as the model server does once loaded
print(json.dumps({"during": during, "after": policies(), "moved": moved, "refused": refused}))
"""


@pytest.mark.parametrize("policy", ["worker", "idle"])
def test_the_worker_policy_puts_every_thread_in_idle_time_until_the_model_is_loaded(
    policy: str,
) -> None:
    """Ray's setup hook in a new process of its own (it changes every thread of the process
    it runs in): under `worker`, all threads idle, then all back; else nothing changes."""
    import json
    import subprocess
    import sys

    env = {**os.environ, startup.POLICY_ENV: policy}
    out = subprocess.run(
        [sys.executable, "-c", WHOLE_WORKER], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    threads = len(seen["during"])
    assert threads >= 2
    if policy == "worker":
        assert seen["during"] == [os.SCHED_IDLE] * threads
        assert seen["moved"] + seen["refused"] == threads
        assert seen["after"].count(os.SCHED_OTHER) == seen["moved"]
    else:
        assert seen["during"] == [os.SCHED_OTHER] * threads
        assert (seen["moved"], seen["refused"]) == (0, 0)

"""A replica's start at a lower CPU priority than the replicas that serve.

A candidate's start (importing MLflow and the model's flavour, loading the model, its warm-up)
takes a CPU-second or more, in the seconds a rollout's loading phase runs beside the version
that serves every request. On a busy node that time is taken from those requests. The model
server therefore does that work in a thread of its own at nice `START_NICE` (Linux: a nice value
belongs to a thread, so the replica's serving threads keep theirs): it yields to serving
processes and takes what they leave. Elsewhere, or where the nice value cannot be set, it runs
as before. `SERVEOPS_START_NICE` (0 to 19) overrides it per node or per application
(`runtime_env.env_vars`); 0 turns it off.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TypeVar

START_NICE = 10
T = TypeVar("T")


def start_nice() -> int:
    """The nice value a replica's start runs at (`SERVEOPS_START_NICE`, else `START_NICE`)."""
    raw = os.environ.get("SERVEOPS_START_NICE", "")
    try:
        value = int(raw) if raw else START_NICE
    except ValueError:
        return START_NICE
    return min(max(value, 0), 19)


def at_low_priority(work: Callable[[], T], nice: int | None = None) -> tuple[T, bool]:
    """`work()`, run in a thread at `nice` (default `start_nice()`); and whether the nice value
    was set. Exceptions are raised here, as if `work` had run in this thread."""
    nice = start_nice() if nice is None else nice
    if nice <= 0 or not hasattr(os, "setpriority") or not hasattr(threading, "get_native_id"):
        return work(), False
    out: dict[str, object] = {}

    def run() -> None:
        try:
            current = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), max(current, nice))
            out["lowered"] = True
        except OSError:
            out["lowered"] = False
        try:
            out["value"] = work()
        except BaseException as err:  # raised again in the caller's thread
            out["error"] = err

    thread = threading.Thread(target=run, name="serveops-replica-start")
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["value"], bool(out.get("lowered"))  # type: ignore[return-value]

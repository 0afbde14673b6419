"""Share the parts of a list-producing function between a process and forked children.

Used by `serveops check` on large repositories: parsing 1,000 deployment files and evaluating
50,000 rule applications take about 0.3 s each on one core, a fork about 10 ms. Never used in
the controller's process, whose threads make forking unsafe (and a process with threads runs
the function itself).
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import Synchronized
from typing import TypeVar

T = TypeVar("T")

# Below this many rule evaluations a second process costs more than it saves.
PARALLEL_MIN_EVALUATIONS = 10_000
# Parts per process: enough that a starved process holds back little, few enough that handing
# them out costs nothing (about 0.1 ms a part).
PARTS_PER_WORKER = 8


def split(n: int, parts: int) -> list[range]:
    """range(n) in `parts` contiguous, near-equal ranges (none empty)."""
    parts = max(1, min(parts, n))
    size, extra = divmod(n, parts)
    out: list[range] = []
    start = 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(range(start, end))
        start = end
    return out


def parallel_map(fn: Callable[[range], list[T]], n: int, workers: int) -> list[T]:
    """fn over contiguous parts of range(n), concatenated in order: the same list as
    fn(range(n)), computed by this process and `workers` - 1 forked children.

    Parts are handed out one at a time, so a child the machine starves of CPU only does less
    of the work; and the parent never waits for one: a part a child took but has not sent
    when everything else is done, the parent computes itself. A child that fails leaves its
    part to the parent, which then returns the same list or raises what fn raises."""
    if workers <= 1 or n < 2 or not _may_fork():
        return fn(range(n))
    parts = split(n, workers * PARTS_PER_WORKER)
    ctx = mp.get_context("fork")
    taken = ctx.Value("i", 0)  # parts handed out so far
    children: list[tuple[BaseProcess, Connection]] = []
    received: dict[int, list[T]] = {}  # filled by the reader threads
    readers: list[threading.Thread] = []
    done: dict[int, list[T]] = {}
    try:
        for _ in range(workers - 1):
            receiver, sender = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(fn, parts, taken, sender), daemon=True)
            proc.start()
            sender.close()
            children.append((proc, receiver))
        # Threads only once every child is forked. They read as soon as a child sends, so a
        # child never waits for the parent to finish a part before it can take the next one.
        for _, receiver in children:
            readers.append(threading.Thread(target=_receive, args=(receiver, received)))
            readers[-1].start()
        while (i := _take(taken, len(parts))) is not None:
            done[i] = fn(parts[i])
        for i, part in enumerate(parts):
            if i not in done and i not in received:  # a child took it and has not answered
                done[i] = fn(part)
    finally:
        for child, _ in children:
            child.kill()  # idle by now, or computing a part done here already
            child.join()
        for reader in readers:
            reader.join()  # the child's end is closed: the reader has stopped
        for _, receiver in children:
            receiver.close()
    results = {**received, **done}
    return [item for i in range(len(parts)) for item in results[i]]


def _receive(receiver: Connection, received: dict[int, list[T]]) -> None:
    """Store what a child sends until it closes its end."""
    try:
        while True:
            i, result = receiver.recv()
            received[i] = result
    except (EOFError, OSError):
        pass


def _take(taken: Synchronized[int], count: int) -> int | None:
    """The index of the next part nobody has taken, or None."""
    with taken.get_lock():
        i = taken.value
        if i >= count:
            return None
        taken.value = i + 1
        return i


def _may_fork() -> bool:
    """Only a single-threaded process forks: a lock another thread holds would stay locked
    in the child for ever."""
    return "fork" in mp.get_all_start_methods() and threading.active_count() == 1


def _child(
    fn: Callable[[range], list[T]],
    parts: list[range],
    taken: Synchronized[int],
    sender: Connection,
) -> None:
    # The collector would visit every object inherited from the parent, and so copy every
    # page of its memory (copy-on-write): it only ever visits what this child allocates.
    gc.freeze()
    try:
        while (i := _take(taken, len(parts))) is not None:
            sender.send((i, fn(parts[i])))
    except BaseException:
        pass  # the parent computes what is left, and raises the error itself
    finally:
        sender.close()

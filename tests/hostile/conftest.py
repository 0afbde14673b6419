"""Hostile-input tests: what an attacker (a pull request, a client of the router, a caller of
the webhook) can send, and what must hold whatever they send.

Commands that could explode on the code under test run in a child process with an address-space
limit and a timeout (`run_bounded`), so a regression fails the test instead of taking the shared
machine's memory or hanging the suite.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, cast

import pytest

from controller.errors import ValidationFailed

SERVEOPS = str(Path(sys.executable).with_name("serveops"))
CHILD_MEMORY = 1024 * 1024 * 1024  # address space of a child: enough to import, not to explode
CHILD_TIMEOUT_S = 60.0
T = TypeVar("T")


def _limit_memory() -> None:
    """Cap this process's address space at what it maps now plus CHILD_MEMORY (a child forked
    from a test process inherits all it had mapped)."""
    with open("/proc/self/statm") as statm:
        mapped = int(statm.read().split()[0]) * resource.getpagesize()
    limit = mapped + CHILD_MEMORY
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_bounded(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `serveops ARGS` in a child bounded in memory and time. A child that hangs past the
    timeout counts as a failure of the command (returncode None is never 2)."""
    try:
        return subprocess.run(
            [SERVEOPS, *args],
            cwd=cwd,
            env={**os.environ, "COLUMNS": "200", **(env or {})},
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
            preexec_fn=_limit_memory,
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"serveops {' '.join(args)} did not finish in {CHILD_TIMEOUT_S:g}s: {err}")


def bounded_call(fn: Callable[[], T], timeout_s: float = CHILD_TIMEOUT_S) -> T:
    """`fn()` in a forked child bounded in memory and time, its result (or exception) sent
    back pickled: the in-process twin of `run_bounded`."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def child() -> None:
        _limit_memory()
        try:
            send.send((True, fn()))
        except ValidationFailed as err:  # rebuilt from its problems (its args are the text)
            send.send((False, (type(err), err.problems)))
        except BaseException as err:  # sent to the parent, which raises it
            send.send((False, (None, err)))

    process = context.Process(target=child, daemon=True)
    process.start()
    try:
        if not receive.poll(timeout_s):
            pytest.fail(f"{fn} did not finish in {timeout_s:g}s (or died: {process.exitcode})")
        ok, value = receive.recv()
    except EOFError:
        pytest.fail(f"{fn} died with exit code {process.exitcode}")
    finally:
        process.kill()
        process.join()
    if not ok:
        kind, detail = value
        raise kind(detail) if kind is not None else detail
    return cast(T, value)

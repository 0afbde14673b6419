"""controller.serving.startup: a replica's start in a thread of its own at a lower CPU priority,
the serving threads' priority untouched. Real threads and the real nice values (Linux)."""

from __future__ import annotations

import os
import threading

import pytest

from controller.serving.startup import START_NICE, at_low_priority, start_nice

linux_only = pytest.mark.skipif(not hasattr(os, "setpriority"), reason="nice values per thread")


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@linux_only
def test_the_work_runs_at_the_lower_priority_and_the_caller_keeps_its_own() -> None:
    before = _nice()
    seen: list[tuple[int, int]] = []
    value, lowered = at_low_priority(
        lambda: seen.append((threading.get_native_id(), _nice())) or 42, nice=before + 5
    )
    assert (value, lowered) == (42, True)
    [(tid, nice)] = seen
    assert tid != threading.get_native_id()  # a thread of its own
    assert nice == min(before + 5, 19)
    assert _nice() == before  # the caller's threads serve at their own priority


def test_nice_zero_runs_the_work_in_the_caller_s_thread() -> None:
    seen: list[int] = []
    value, lowered = at_low_priority(lambda: seen.append(threading.get_native_id()) or "x", 0)
    assert (value, lowered) == ("x", False)
    assert seen == [threading.get_native_id()]


@linux_only
def test_what_the_work_raises_is_raised_to_the_caller() -> None:
    def fail() -> None:
        raise ValueError("no such model")

    with pytest.raises(ValueError, match="no such model"):
        at_low_priority(fail, nice=5)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, START_NICE), ("0", 0), ("5", 5), ("40", 19), ("-3", 0), ("high", START_NICE)],
)
def test_the_environment_sets_the_start_priority_within_0_to_19(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: int
) -> None:
    if value is None:
        monkeypatch.delenv("SERVEOPS_START_NICE", raising=False)
    else:
        monkeypatch.setenv("SERVEOPS_START_NICE", value)
    assert start_nice() == expected

"""Keeping cores free of a local Ray for the load generator (issue 18): the split, and that a
pinned child and everything it starts stay on the given cores (real processes, no Ray)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from controller.dev import localray
from controller.dev.localray import _pin, reserve_cpus

needs_affinity = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform"
)


def test_reserve_splits_off_the_last_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(localray.os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    assert reserve_cpus(1) == ({0, 1, 2}, {3})
    assert reserve_cpus(2) == ({0, 1}, {2, 3})


def test_reserve_refuses_when_nothing_would_be_left(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(localray.os, "sched_getaffinity", lambda _pid: {0})
    assert reserve_cpus(1) is None
    assert reserve_cpus(0) is None


@needs_affinity
def test_a_pinned_child_and_its_children_stay_on_the_cores() -> None:
    core = max(os.sched_getaffinity(0))
    pin = _pin({core})
    assert pin is not None
    code = (
        "import os, subprocess, sys; "
        "print(sorted(os.sched_getaffinity(0))); "
        "subprocess.run([sys.executable, '-c', 'import os; print(sorted(os.sched_getaffinity(0)))'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], preexec_fn=pin, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == f"[{core}]"
    assert out[1] == f"[{core}]"  # inherited by what the child starts (Ray's workers)


def test_no_cores_no_pinning() -> None:
    assert _pin(None) is None
    assert _pin(set()) is None


def test_reserve_cpus_auto_keeps_one_core_when_there_are_two(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from controller.errors import BadInput
    from simulator.cli.options import reserve_count

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert reserve_count("auto") == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert reserve_count("auto") == 0
    assert (reserve_count("0"), reserve_count("2")) == (0, 2)
    for bad in ("-1", "one", ""):
        with pytest.raises(BadInput, match="--reserve-cpus must be auto or a number"):
            reserve_count(bad)

"""Watching the tour's deployment through what users see (`serveops status`'s view, the
rollouts, the load's counts): until Serve holds a version, through a rollout step by step, and
until the router recorded enough requests."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from controller.dev import tour_repo as files
from controller.dev import tour_support as support
from controller.dev.load import Window
from controller.dev.tour_support import StepFailed
from controller.gitops.view import DeploymentView

if TYPE_CHECKING:
    from controller.dev.tour import Tour

ENV = "staging"


def _note(text: str) -> None:
    print(f"  {text}", flush=True)


def serves(d: DeploymentView, version: str) -> bool:
    """Serve holds Git's state: only `version` takes traffic, healthy, no rollout running."""
    live = [v.version for v in d.versions if v.weight > 0]
    rolling = d.rollout is not None and d.rollout.phase not in ("completed", "aborted")
    return live == [version] and d.health == "Healthy" and not rolling


def follow_rollout(tour: Tour, version: str, since: float) -> None:
    """Until the controller serves `version`: `serveops rollouts` at every new position, and
    the load's count of failed requests since `since` at the end (0, or the step fails)."""
    shown = ""

    def progress(d: DeploymentView) -> bool:
        nonlocal shown
        r = d.rollout
        if r is not None and r.candidate == f"v{version}":
            if r.phase == "aborted":
                raise StepFailed(f"the rollout to v{version} aborted: {r.message}")
            position = f"{r.position} {len(r.analyses)}"
            if position != shown:
                shown = position
                tour.serveops("rollouts", "--env", ENV, "--limit", "3")
        return serves(d, version)

    tour.wait(progress, 240, f"the controller to serve v{version}")
    _note(
        f"Serve holds v{version} alone (commit {files.git(tour.repo, 'rev-parse', '--short', 'main')})"
    )
    tour.serveops("rollouts", "--env", ENV, "--limit", "1")  # the last step: completed
    assert tour.load is not None
    window: Window = tour.load.window(since)
    _note("load during the rollout: " + window.line())
    if window.failed:
        first = window.failed[0]
        raise StepFailed(
            f"{len(window.failed)} requests failed during the rollout to v{version}; first: "
            f"status {first.status} {first.error}"
        )


def wait_recorded(tour: Tour, n: int, timeout_s: float) -> None:
    """Until the router has written `n` records (its writer flushes in batches)."""
    deadline = time.monotonic() + timeout_s
    count = 0
    while time.monotonic() < deadline:
        count = support.count_recorded(tour.recordings)
        if count >= n:
            _note(f"the router recorded {count} requests in {tour.recordings}")
            return
        time.sleep(1)
    raise StepFailed(f"the router recorded {count} requests in {timeout_s:.0f}s, not {n}")

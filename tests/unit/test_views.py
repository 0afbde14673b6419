"""One truthful story: every view of an environment says the same at every step of a rollout.

FakeServe, real Git and SQLite, fake router metrics (unit). The views: the pass's own result
(what the controller logs and notifies), `serveops status` and `serveops rollouts` (built by
controller.cli.views from the same state file and Serve), `history`'s "now" line, and the
controller's Prometheus gauges.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from controller.cli.views import load_view, rollouts_renderable, status_renderable
from controller.gitops.outcome import PassResult
from controller.gitops.telemetry import METRICS
from controller.gitops.view import EnvironmentView
from tests.support import World
from tests.unit.test_rollout_controller import BLUE_GREEN, CANARY


def text(renderable: object) -> str:
    console = Console(width=400, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


def gauge(name: str, **labels: str) -> float | None:
    return METRICS.registry.get_sample_value(name, labels)


class Views:
    """Everything a user can look at, read the way the commands read it."""

    def __init__(self, world: World) -> None:
        self.world = world

    def view(self) -> EnvironmentView:
        view, problem = load_view(
            self.world.env,
            state=self.world.state,
            address=None,
            live=self.world.serve.get(),
            now=self.world.clock.now(),
        )
        assert problem is None
        return view

    def check(self, result: PassResult) -> EnvironmentView:
        """The pass's message, status, rollouts, history's now line and the gauges agree."""
        view = self.view()
        [fraud] = view.deployments
        status = text(status_renderable(view, terminal=False))
        rollouts = text(rollouts_renderable(view, terminal=False))
        assert fraud.summary in status
        env = {"environment": self.world.env, "deployment": "fraud"}
        if fraud.rollout is not None:
            line = f"fraud: {fraud.summary}"
            assert line in rollouts
            if result.outcome == "progressing" and "rollouts:" not in result.message:
                assert line in result.message  # the controller's log line says the same
            if fraud.rollout.phase not in ("completed", "aborted"):
                assert gauge("serveops_controller_rollout_weight", **env) == fraud.rollout.weight
                phase = gauge("serveops_controller_rollout_phase", **env, phase=fraud.rollout.phase)
                assert phase == 1
            weights = {v.version: v.weight for v in fraud.versions if v.role != "fallback"}
            assert weights.get(fraud.rollout.candidate[1:], 0) == fraud.rollout.weight
        else:
            assert "no rollouts in flight" in rollouts
        assert view.summary.startswith(f"fraud: {fraud.summary}") or view.waiting
        return view


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, env="views-canary", rollout=CANARY)
    assert w.sync().outcome == "applied"
    yield w
    w.close()


def test_every_view_tells_the_same_canary_step_by_step(canary: World) -> None:
    views = Views(canary)
    canary.push("2")
    seen = []
    for _ in range(12):
        result = canary.pass_()
        view = views.check(result)
        [fraud] = view.deployments
        if fraud.rollout is not None:
            seen.append((fraud.rollout.phase, fraud.rollout.weight, fraud.rollout.waiting))
        canary.traffic(30)
    phases = [s[:2] for s in seen]
    assert ("loading", 0.0) in phases
    assert ("steps", 25.0) in phases
    assert ("steps", 60.0) in phases
    waits = {s[2] for s in seen}
    assert "a passing analysis (step 1/2 at 25%)" in waits
    assert "the end of the pause (step 1/2 at 25%)" in waits
    view = views.view()
    [fraud] = view.deployments
    assert fraud.rollout is None
    assert fraud.sync == "Synced"
    assert fraud.health == "Healthy"


def test_analyses_carry_their_figures_thresholds_and_decision(canary: World) -> None:
    canary.push("2")
    canary.pass_()
    canary.pass_()  # step 1 at 25%
    canary.metrics.serve("1", 90, queue_wait_s=1.8, own_ms=3)  # 20 ms a request queued
    canary.metrics.serve("2", 7)  # too little traffic: inconclusive
    canary.pass_(30)
    [fraud] = Views(canary).view().deployments
    assert fraud.rollout is not None
    [analysis] = fraud.rollout.analyses
    assert analysis.verdict == "inconclusive"
    assert analysis.step == 1
    assert analysis.weight == 25
    assert analysis.candidate["requests"] == 7
    assert analysis.stable["requests"] == 90
    assert analysis.stable["wait_ms"] == 20.0
    assert analysis.candidate["wait_ms"] == 0.0
    assert analysis.thresholds["min_requests"] == 20
    assert "fewer than min_requests 20" in analysis.reasons[0]
    assert "at least 20 candidate requests in the window (so far: 7)" in fraud.rollout.waiting
    rollouts = text(rollouts_renderable(Views(canary).view(), terminal=False))
    assert "step 1 (25%) inconclusive" in rollouts
    assert "held to min 20 req" in rollouts
    assert analysis.stable["own_p95_ms"] == pytest.approx(3.7, abs=0.1)  # 3 ms, by bucket
    assert "stable 90 req, 0.0% err, p95 5.76 ms, queued 20.0 ms avg, own p95 3.7 ms |" in rollouts
    assert "| candidate 7 req, 0.0% err, p95 5.76 ms | stable" in rollouts  # it never waited


def test_blue_green_and_an_aborted_canary_read_the_same_everywhere(tmp_path: Path) -> None:
    bg = World(tmp_path / "bg", env="views-bg", rollout=BLUE_GREEN)
    assert bg.sync().outcome == "applied"
    views = Views(bg)
    bg.push("2")
    for _ in range(8):
        views.check(bg.pass_())
        bg.traffic(30)
    bg.close()

    ab = World(tmp_path / "ab", env="views-abort", rollout=CANARY)
    assert ab.sync().outcome == "applied"
    views = Views(ab)
    ab.push("2")
    ab.pass_()
    ab.pass_()
    ab.traffic(30, errors_v2=10)
    aborted = ab.pass_()
    assert aborted.outcome == "aborted"
    view = views.check(aborted)
    [fraud] = view.deployments
    assert fraud.rollout is not None
    assert fraud.rollout.phase == "aborted"
    assert fraud.health == "Degraded"
    assert "analysis failed" in fraud.summary
    ab.sync()
    held = ab.pass_()
    view = views.check(held)
    assert view.deployments[0].summary in held.message or "held on v1" in held.message
    data = json.loads(view.model_dump_json())
    assert data["deployments"][0]["rollout"]["phase"] == "aborted"
    ab.close()


def test_without_serve_the_view_says_it_did_not_read_it_not_that_nothing_runs(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, env="views-unread")
    assert world.sync().outcome == "applied"
    unread, _ = load_view(world.env, state=world.state, address=None, now=world.clock.now())
    read, _ = load_view(
        world.env, state=world.state, address=None, live=world.serve.get(), now=world.clock.now()
    )
    world.close()
    [fraud] = unread.deployments
    assert fraud.summary == "admitted (Serve not read)"
    assert fraud.health == "Unknown"
    assert read.deployments[0].summary != fraud.summary


def test_status_wait_waits_for_synced_healthy_and_no_rollout(canary: World) -> None:
    from controller.cli.status import settled

    views = Views(canary)
    assert settled(views.view())  # v1 applied, nothing in flight
    canary.push("2")
    canary.pass_()
    assert not settled(views.view())  # the canary has started
    for _ in range(12):
        canary.pass_()
        canary.traffic(30)
    assert settled(views.view())
    empty, _ = load_view("nowhere", state=canary.state, address=None, live=canary.serve.get())
    assert not settled(empty)  # nothing deployed yet is not "settled"

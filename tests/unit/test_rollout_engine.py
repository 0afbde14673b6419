"""The pure rollout engine (controller/rollout/engine.py, phases.py): canary, blue-green, shadow, no Ray."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math

import pytest

from controller.rollout.analysis import AnalysisResult, VersionWindow, analyse
from controller.rollout.engine import analysis_due, decide
from controller.rollout.state import (
    Decision,
    Limits,
    Readiness,
    RolloutState,
    start,
    traffic,
    with_command,
)
from controller.spec.models import Analysis, Rollout

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
PASS = AnalysisResult("pass", [], VersionWindow(100), VersionWindow(900))
FAIL = AnalysisResult("fail", ["error rate 9.00% ..."], VersionWindow(100, 9), VersionWindow(900))
THIN = AnalysisResult("inconclusive", ["too little traffic"], VersionWindow(3), VersionWindow(30))


def canary(*steps: tuple[int, str], analysis: dict[str, object] | None = None) -> Rollout:
    return Rollout.model_validate(
        {
            "strategy": "canary",
            "steps": [{"weight": w, "pause": p} for w, p in steps],
            "analysis": analysis,
        }
    )


def new(strategy: str = "canary") -> RolloutState:
    return start(
        strategy,  # type: ignore[arg-type]
        "fraud",
        stable=("fraud--v1", "1"),
        candidate=("fraud--v2", "2"),
        key="k",
        commit="c0ffee",
        now=T0,
    )


class Run:
    """Drives a rollout like the controller does: a pass every `tick` seconds."""

    def __init__(self, spec: Rollout, state: RolloutState, limits: Limits | None = None) -> None:
        self.spec, self.state, self.now, self.limits = spec, state, T0, limits or Limits()
        self.decisions: list[Decision] = []

    def step(
        self,
        seconds: float = 0,
        *,
        candidate: Readiness = "ready",
        analysis: AnalysisResult | None = None,
    ) -> Decision:
        self.now += dt.timedelta(seconds=seconds)
        if analysis is not None:
            assert analysis_due(self.spec, self.state, self.now)
        d = decide(
            self.spec,
            self.state,
            self.now,
            candidate=candidate,
            analysis=analysis,
            limits=self.limits,
        )
        self.state = d.state
        self.decisions.append(d)
        return d

    @property
    def weight(self) -> float:
        t = traffic(self.spec, self.state)
        return 100.0 if t is None else t.candidate_weight


# --- canary -------------------------------------------------------------------------------------


def test_canary_walks_the_steps_then_ends_at_100_even_when_the_weights_stop_short() -> None:
    run = Run(canary((10, "30s"), (40, "30s")), new())
    assert run.weight == 0  # loading: no traffic to the candidate
    assert run.step().action == "set_weight"
    assert run.weight == 10
    assert run.step(10).action == "wait"
    assert run.weight == 10
    assert run.step(20).action == "set_weight"
    assert run.weight == 40
    assert run.step(29).action == "wait"
    d = run.step(1)
    assert d.action == "complete"
    assert run.state.phase == "completed"
    assert traffic(run.spec, run.state) is None  # Git's steady state: candidate alone at 100%
    assert run.weight == 100


def test_loading_waits_for_the_candidate_then_aborts_at_the_progress_deadline() -> None:
    run = Run(canary((10, "1m")), new(), Limits(progress_deadline_s=300))
    assert run.step(100, candidate="starting").action == "wait"
    assert run.step(150, candidate="starting").action == "wait"
    d = run.step(51, candidate="starting")
    assert d.action == "abort"
    assert "progress deadline" in d.reason
    assert run.weight == 0
    assert traffic(run.spec, run.state) == traffic(run.spec, run.state)


def test_a_candidate_that_starts_slowly_within_the_deadline_is_fine() -> None:
    run = Run(canary((50, "0s")), new(), Limits(progress_deadline_s=600))
    run.step(590, candidate="starting")
    assert run.step(5).action == "set_weight"
    assert run.weight == 50


def test_a_failed_candidate_aborts_with_its_message() -> None:
    run = Run(canary((10, "1m")), new())
    d = decide(run.spec, run.state, T0, candidate="failed", candidate_message="OOM")
    assert d.action == "abort"
    assert "OOM" in d.reason
    t = traffic(run.spec, d.state)
    assert t is not None
    assert t.stable_weight == 100
    assert not t.keep_candidate


def test_indefinite_pause_waits_for_promote() -> None:
    run = Run(canary((20, "indefinite"), (60, "10s")), new())
    run.step()
    for _ in range(5):
        assert run.step(3600).action == "wait"
    assert run.weight == 20
    run.state = with_command(run.state, "promote")
    assert run.step().action == "set_weight"
    assert run.weight == 60
    assert run.state.promote == ""  # consumed: the next step is not promoted too
    assert run.step(5).action == "wait"
    assert run.step(5).action == "complete"


def test_promote_full_goes_to_100_at_once() -> None:
    run = Run(canary((5, "1h"), (50, "1h")), new())
    run.step()
    run.state = with_command(run.state, "promote_full")
    assert run.step().action == "complete"
    assert run.weight == 100


def test_pause_holds_and_resume_continues() -> None:
    run = Run(canary((10, "10s"), (50, "10s")), new())
    run.step()
    run.state = with_command(run.state, "pause", "alice")
    assert run.step(60).action == "wait"
    assert run.weight == 10
    run.state = with_command(run.state, "resume")
    assert run.step().action == "set_weight"
    assert run.weight == 50


def test_operator_abort() -> None:
    run = Run(canary((10, "10s")), new())
    run.step()
    run.state = with_command(run.state, "abort", "bob: looks wrong")
    d = run.step()
    assert d.action == "abort"
    assert "bob: looks wrong" in d.reason
    assert run.weight == 0


def test_commands_do_nothing_to_a_finished_rollout() -> None:
    run = Run(canary((10, "0s")), new())
    run.step()
    run.step(1)
    assert run.state.phase == "completed"
    assert with_command(run.state, "abort", "late") == run.state


# --- canary with analysis -----------------------------------------------------------------------

ANALYSIS = {"interval": "30s", "min_requests": 50, "failure_limit": 2}


def test_each_step_needs_a_passing_analysis_window() -> None:
    run = Run(canary((10, "0s"), (50, "0s"), analysis=ANALYSIS), new())
    d = run.step()
    assert d.reset_window
    assert d.requeue_after == 30
    assert not analysis_due(run.spec, run.state, run.now + dt.timedelta(seconds=29))
    assert run.step(10).action == "wait"  # pause 0s, but no analysis yet
    d = run.step(20, analysis=PASS)
    assert d.action == "set_weight"
    assert d.reset_window
    assert run.weight == 50
    d = run.step(30, analysis=PASS)
    assert d.action == "complete"


def test_failed_analyses_abort_at_the_failure_limit() -> None:
    run = Run(canary((10, "0s"), analysis=ANALYSIS), new())
    run.step()
    d = run.step(30, analysis=FAIL)
    assert d.action == "wait"
    assert run.state.failures == 1
    assert run.weight == 10
    d = run.step(30, analysis=FAIL)
    assert d.action == "abort"
    assert "analysis failed (2/2)" in d.reason
    assert run.weight == 0
    assert run.state.phase == "aborted"


def test_too_little_traffic_holds_then_pauses_never_passes_or_fails() -> None:
    run = Run(canary((10, "0s"), analysis=ANALYSIS), new(), Limits(inconclusive_limit=3))
    run.step()
    assert run.step(30, analysis=THIN).action == "wait"
    assert run.step(30, analysis=THIN).action == "wait"
    d = run.step(30, analysis=THIN)
    assert d.action == "pause"
    assert run.state.paused
    assert "inconclusive" in d.reason
    # Paused: time alone never moves it on, and it never aborts for lack of traffic.
    for _ in range(3):
        assert run.step(30, analysis=THIN).action == "wait"
    assert run.state.phase == "steps"
    assert run.weight == 10
    assert run.state.failures == 0
    run.state = with_command(run.state, "resume")
    assert not run.state.paused
    assert run.state.inconclusive == 0
    assert run.step(30, analysis=PASS).action == "complete"


def test_an_inconclusive_window_keeps_its_baseline_a_conclusive_one_starts_anew() -> None:
    run = Run(canary((10, "0s"), (20, "0s"), analysis=ANALYSIS), new())
    run.step()
    d = run.step(30, analysis=THIN)
    assert d.action == "wait"
    assert not d.reset_window  # the metrics baseline stays: the next window judges both
    assert not analysis_due(run.spec, run.state, run.now + dt.timedelta(seconds=29))
    assert analysis_due(run.spec, run.state, run.now + dt.timedelta(seconds=30))
    assert "at least 50 candidate requests in the window (so far: 3)" in run.state.waiting
    d = run.step(30, analysis=FAIL)
    assert d.reset_window
    assert run.step(30, analysis=PASS).reset_window


def test_a_pass_resets_the_inconclusive_count() -> None:
    run = Run(
        canary((10, "0s"), (20, "0s"), analysis=ANALYSIS), new(), Limits(inconclusive_limit=2)
    )
    run.step()
    run.step(30, analysis=THIN)
    run.step(30, analysis=PASS)  # advances to step 2, counts reset
    assert run.state.inconclusive == 0
    assert run.weight == 20
    assert run.step(30, analysis=THIN).action == "wait"


def test_analysis_still_aborts_a_paused_rollout() -> None:
    run = Run(canary((10, "0s"), analysis={**ANALYSIS, "failure_limit": 1}), new())
    run.step()
    run.state = with_command(run.state, "pause")
    assert run.step(30, analysis=FAIL).action == "abort"


def test_pause_longer_than_the_window_waits_for_both() -> None:
    run = Run(canary((10, "2m"), analysis=ANALYSIS), new())
    run.step()
    assert run.step(30, analysis=PASS).action == "wait"  # passed, but the pause is 2 min
    assert run.step(90).action == "complete"


# --- blue-green and shadow ----------------------------------------------------------------------


def blue_green(**extra: object) -> Rollout:
    return Rollout.model_validate({"strategy": "blue_green", "scale_down_delay": "5m", **extra})


def test_blue_green_previews_then_switches_atomically_and_keeps_the_old_version() -> None:
    spec = blue_green(analysis=ANALYSIS)
    run = Run(spec, new("blue_green"))
    run.step()
    t = traffic(spec, run.state)
    assert t is not None
    assert (t.stable_weight, t.candidate_weight, t.mirror_percent) == (100, 0, 100)
    assert run.step(30, analysis=THIN).action == "wait"
    d = run.step(30, analysis=PASS)
    assert d.action == "switch"
    t = traffic(spec, run.state)
    assert t is not None
    assert (t.stable_weight, t.candidate_weight) == (0, 100)
    assert t.keep_candidate
    assert t.mirror_percent == 0
    assert run.step(120, analysis=None).action == "wait"  # stable kept for rollback
    assert run.step(180).action == "complete"
    assert traffic(spec, run.state) is None


def test_blue_green_preview_mirrors_all_requests_unless_told_a_share() -> None:
    for extra, mirrored in (({}, 100), ({"shadow_percent": 30}, 30)):
        spec = blue_green(analysis=ANALYSIS, **extra)
        run = Run(spec, new("blue_green"))
        run.step()
        t = traffic(spec, run.state)
        assert run.state.phase == "preview"
        assert t is not None
        assert t.mirror_percent == mirrored
        assert t.candidate_weight == 0


def test_blue_green_rolls_back_instantly_when_post_switch_analysis_fails() -> None:
    spec = blue_green(analysis={**ANALYSIS, "failure_limit": 1})
    run = Run(spec, new("blue_green"))
    run.step()
    run.step(30, analysis=PASS)
    assert run.state.phase == "switched"
    d = run.step(30, analysis=FAIL)
    assert d.action == "abort"
    t = traffic(spec, run.state)
    assert t is not None
    assert (t.stable_weight, t.candidate_weight) == (100, 0)


def test_blue_green_without_analysis_switches_once_running() -> None:
    run = Run(blue_green(), new("blue_green"))
    run.step(candidate="starting")
    d = run.step(5)
    assert run.state.phase == "preview"
    assert d.action == "set_weight"
    assert run.step().action == "switch"


def test_shadow_mirrors_its_share_and_switches_after_analysis() -> None:
    spec = Rollout.model_validate(
        {"strategy": "shadow", "shadow_percent": 25, "analysis": ANALYSIS}
    )
    run = Run(spec, new("shadow"))
    run.step()
    t = traffic(spec, run.state)
    assert t is not None
    assert t.mirror_percent == 25
    assert t.candidate_weight == 0
    assert run.step(30, analysis=PASS).action == "switch"


def test_shadow_without_analysis_waits_for_promote() -> None:
    spec = Rollout.model_validate({"strategy": "shadow", "shadow_percent": 10})
    run = Run(spec, new("shadow"))
    run.step()
    assert run.step(3600).action == "wait"
    run.state = with_command(run.state, "promote")
    assert run.step().action == "switch"


# --- durability ---------------------------------------------------------------------------------


@pytest.mark.parametrize("passes", range(0, 7))
def test_state_round_trips_through_json_at_every_point(passes: int) -> None:
    """A controller restarted from the persisted state makes the same decision."""
    spec = canary((10, "10s"), (30, "10s"), (60, "indefinite"), analysis=ANALYSIS)
    run = Run(spec, new())
    for _ in range(passes):
        run.step(
            30,
            analysis=PASS
            if analysis_due(spec, run.state, run.now + dt.timedelta(seconds=30))
            else None,
        )
    restored = RolloutState.from_json(run.state.to_json())
    assert restored == run.state
    later = run.now + dt.timedelta(seconds=30)
    due = analysis_due(spec, restored, later)
    a = decide(spec, restored, later, candidate="ready", analysis=PASS if due else None)
    b = decide(spec, run.state, later, candidate="ready", analysis=PASS if due else None)
    assert a == b


def test_analysis_records_persisted_before_their_newer_figures_still_load() -> None:
    """A rollout persisted by an older controller: its analysis records have no queue wait
    and no own p95. They load, with those figures unknown."""
    run = Run(canary((10, "10s"), (50, "10s"), analysis=ANALYSIS), new())
    run.step()
    run.step(30, analysis=PASS)
    data = json.loads(run.state.to_json())
    assert data["analyses"], "the pass recorded its analysis"
    for record in data["analyses"]:
        for side in ("candidate", "stable"):
            del record[side]["wait_ms"], record[side]["own_p95_ms"]
    restored = RolloutState.from_json(json.dumps(data))
    [record] = restored.analyses
    assert (record.candidate.wait_ms, record.candidate.own_p95_ms) == (None, None)
    assert record.candidate.requests == run.state.analyses[0].candidate.requests


def test_a_decision_replayed_after_a_crash_does_not_skip_a_step() -> None:
    """Persisted state says step 1; deciding again at the same time changes nothing."""
    spec = canary((10, "1m"), (50, "1m"))
    run = Run(spec, new())
    run.step()
    again = decide(spec, run.state, run.now, candidate="ready")
    assert again.action == "wait"
    assert again.state.step == run.state.step == 0


def test_finished_rollouts_are_inert() -> None:
    state = dataclasses.replace(new(), phase="aborted")
    d = decide(canary((10, "0s")), state, T0, candidate="ready", analysis=PASS)
    assert d.action == "wait"
    assert d.state == state


def test_a_saturated_window_holds_the_step_and_never_pauses() -> None:
    """Inconclusive because the router dropped the candidate's mirrors under load: the step
    holds (window kept open) as long as it takes, says why, and no pause is counted."""
    saturated = dataclasses.replace(THIN, reasons=["saturated: ..."], saturated=True)
    run = Run(canary((10, "0s"), analysis=ANALYSIS), new(), Limits(inconclusive_limit=2))
    run.step()
    for _ in range(5):
        d = run.step(30, analysis=saturated)
        assert d.action == "wait"
        assert not d.reset_window  # the window goes on: the next one judges every request
    assert (run.state.paused, run.state.inconclusive) == (False, 0)
    assert run.state.message.startswith("analysis held, the serving path is saturated ")
    assert run.step(30, analysis=THIN).action == "wait"  # light traffic counts as before
    assert run.step(30, analysis=THIN).action == "pause"


def test_a_saturated_hold_says_since_when_in_every_view() -> None:
    """A busy hour can hold a step for long, both versions' replicas up: the message and the
    waiting text say since when, from the first held window's start; any other verdict, or the
    next step, ends the hold."""
    saturated = dataclasses.replace(THIN, reasons=["saturated: ..."], saturated=True)
    run = Run(canary((10, "0s"), (50, "0s"), analysis=ANALYSIS), new())
    run.step()
    window_began = run.state.window_started_at
    assert window_began is not None
    assert run.state.saturated_since is None
    for _ in range(4):
        run.step(30, analysis=saturated)
    assert run.state.saturated_since == window_began
    assert run.state.message.startswith(
        f"analysis held, the serving path is saturated since {window_began:%H:%M:%S} UTC (2m00s): "
    )
    assert run.state.waiting.endswith(
        f", held while the serving path is saturated (since {window_began:%H:%M:%S} UTC)"
    )
    restored = RolloutState.from_json(run.state.to_json())
    assert restored.saturated_since == window_began
    run.step(30, analysis=THIN)  # too little traffic, not saturation: the hold is over
    assert run.state.saturated_since is None
    assert "saturated" not in run.state.waiting
    run.step(30, analysis=saturated)
    assert run.state.saturated_since == run.now - dt.timedelta(seconds=30)
    run.step(30, analysis=PASS)  # passed: the next step begins
    assert (run.state.step, run.state.saturated_since) == (1, None)


def test_a_window_held_for_saturation_with_enough_requests_starts_afresh() -> None:
    """A p95 ceiling broken while requests were shed, with the candidate's requests enough to
    judge: held, and the next window judges only what comes after, so that the saturated
    minutes do not hold the step long after the load fell."""
    s = Analysis.model_validate({"min_requests": 50, "max_p95_latency_ms": 5})
    slow = VersionWindow(100, 0, ((10.0, 100), (math.inf, 100)), shed=3)
    held = analyse(s, slow, VersionWindow(900, 0, ((10.0, 900), (math.inf, 900))))
    assert (held.verdict, held.saturated, held.restart) == ("inconclusive", True, True)
    run = Run(canary((10, "0s"), analysis=ANALYSIS), new())
    run.step()
    d = run.step(30, analysis=held)
    assert (d.action, d.reset_window) == ("wait", True)
    assert run.state.message.startswith("analysis held, the serving path is saturated since ")

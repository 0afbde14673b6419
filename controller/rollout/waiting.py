"""What a rollout waits for, in words that stay the same from pass to pass, and until when.

Every view of a rollout (status, rollouts, the controller's log line) prints this; the engine
stores it in the rollout's state with each decision.
"""

from __future__ import annotations

import datetime as dt

from controller.rollout.state import Limits, Readiness, RolloutState
from controller.spec.durations import parse_duration
from controller.spec.models import Rollout


def waiting_for(
    spec: Rollout, state: RolloutState, limits: Limits, candidate: Readiness = "ready"
) -> tuple[str, dt.datetime | None]:
    """What the rollout waits for in `state`, in words stable from pass to pass, and when a
    time-bound wait ends (None: it waits for something else, or for nothing)."""
    if not state.active:
        return "", None
    if state.paused:
        return f"an operator: {state.message or 'paused'} (`serveops resume` or `promote`)", None
    if state.held_for_room:  # to start (loading), or to be scaled for the switch (preview)
        return f"{state.message} (held since {state.held_since:%H:%M:%S} UTC)", None
    if state.phase == "loading":
        if candidate != "ready":
            deadline = state.phase_started_at + dt.timedelta(seconds=limits.progress_deadline_s)
            return f"{state.candidate_app} to run (progress deadline)", deadline
        return "the pre-rollout hooks", None
    if state.phase == "verifying":
        return "the post-rollout hooks", None
    window = _window_end(spec, state)
    if state.phase == "steps":
        label = f"step {state.step + 1}/{len(spec.steps)} at {state.weight:g}%"
        pause = pause_s(spec, state.step)
        if pause is None:
            return f"`serveops promote` ({label}, pause: indefinite)", None
        pause_end = state.phase_started_at + dt.timedelta(seconds=pause)
        if spec.analysis is not None and state.passes < 1:
            return f"a passing analysis ({label}){_needs(spec, state)}", window
        return f"the end of the pause ({label})", pause_end
    if state.phase == "preview":
        if state.scaling_since is not None:
            deadline = state.scaling_since + dt.timedelta(seconds=limits.progress_deadline_s)
            return f"{state.candidate_app} at its full size (scaled for the switch)", deadline
        if spec.analysis is None:
            return "`serveops promote` (shadowing)", None
        return f"a passing pre-promotion analysis{_needs(spec, state)}", window
    delay = parse_duration(spec.scale_down_delay)
    kept = state.phase_started_at + dt.timedelta(seconds=delay)
    return f"the scale-down delay ({state.stable_app} kept for rollback)", kept


def _window_end(spec: Rollout, state: RolloutState) -> dt.datetime | None:
    if spec.analysis is None or state.window_started_at is None:
        return None
    return state.window_started_at + dt.timedelta(seconds=parse_duration(spec.analysis.interval))


def _needs(spec: Rollout, state: RolloutState) -> str:
    """`, at least 20 candidate requests in the window (so far: 7)` after an inconclusive
    analysis (the window stays open until it holds them); `, held while the serving path is
    saturated (since 19:31:20 UTC)` after analyses held for saturation."""
    if state.saturated_since is not None:
        return (
            f", held while the serving path is saturated "
            f"(since {state.saturated_since:%H:%M:%S} UTC)"
        )
    last = state.last_analysis
    if spec.analysis is None or last is None or last.verdict != "inconclusive":
        return ""
    return (
        f", at least {spec.analysis.min_requests} candidate requests in the window "
        f"(so far: {last.candidate.requests})"
    )


def pause_s(spec: Rollout, step: int) -> float | None:
    """Seconds step `step` is held; None for `indefinite`."""
    pause = spec.steps[step].pause
    return None if pause == "indefinite" else parse_duration(pause)

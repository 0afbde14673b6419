"""What each phase of a rollout does next (loading, steps, preview, switched, verifying) and the
two ends (completed, aborted): the pure transitions `engine.decide` dispatches to."""

from __future__ import annotations

import dataclasses
import datetime as dt

from controller.rollout.state import (
    MIN_REQUEUE_S,
    Decision,
    HookResult,
    Limits,
    Phase,
    Readiness,
    RolloutState,
    mirror_percent,
)
from controller.rollout.waiting import pause_s
from controller.spec.durations import parse_duration
from controller.spec.models import Rollout


def seconds_since(now: dt.datetime, then: dt.datetime | None) -> float:
    return (now - then).total_seconds() if then is not None else 0.0


def in_loading(
    spec: Rollout,
    state: RolloutState,
    now: dt.datetime,
    candidate: Readiness,
    limits: Limits,
    hooks: HookResult | None,
) -> Decision:
    waited = seconds_since(now, state.phase_started_at)  # from when the candidate was started
    if candidate != "ready":
        if waited > limits.progress_deadline_s:
            return abort(
                state,
                now,
                f"candidate {state.candidate_app} did not become ready within the progress "
                f"deadline of {limits.progress_deadline_s:.0f}s",
            )
        return Decision(
            "wait",
            dataclasses.replace(state, message=f"waiting for {state.candidate_app} to run"),
            f"waiting for {state.candidate_app} to run ({waited:.0f}s)",
            limits.loading_poll_s,
        )
    if spec.hooks.pre_rollout and hooks is None:
        # Not run this pass (the caller runs them when `hooks_due` says so): hold, no traffic.
        return Decision(
            "wait",
            dataclasses.replace(state, message="waiting for the pre-rollout hooks"),
            "waiting for the pre-rollout hooks",
            limits.loading_poll_s,
        )
    ran = f"; {hooks.label} passed: {hooks.summary}" if hooks is not None else ""
    if state.strategy == "canary":
        return _enter_step(spec, state, now, 0, f"candidate running{ran}")
    entered = _phase(state, now, "preview", 0.0, f"{state.candidate_app} running; previewing")
    return Decision(
        "set_weight",
        entered,
        f"previewing {state.candidate_app}{ran}: {mirror_percent(spec):.0f}% of requests "
        "mirrored to it, no client traffic",
        _first_requeue(spec),
        reset_window=True,
    )


def _phase(
    state: RolloutState, now: dt.datetime, phase: Phase, weight: float, message: str
) -> RolloutState:
    return dataclasses.replace(
        state,
        phase=phase,
        weight=weight,
        phase_started_at=now,
        window_started_at=now,
        passes=0,
        inconclusive=0,
        saturated_since=None,
        promote="",
        message=message,
    )


def _enter_step(
    spec: Rollout, state: RolloutState, now: dt.datetime, step: int, why: str
) -> Decision:
    weight = float(spec.steps[step].weight)
    entered = dataclasses.replace(
        _phase(state, now, "steps", weight, ""),
        step=step,
        message=f"step {step + 1}/{len(spec.steps)}: {weight:g}% to {state.candidate_app}",
    )
    pause = pause_s(spec, step)
    requeue = _first_requeue(spec) if pause is None else max(pause, _first_requeue(spec))
    return Decision("set_weight", entered, f"{why}; {entered.message}", requeue, True)


def _first_requeue(spec: Rollout) -> float:
    return window_s(spec) if spec.analysis else MIN_REQUEUE_S


def window_s(spec: Rollout) -> float:
    return parse_duration(spec.analysis.interval) if spec.analysis else float("inf")


def _wait(
    spec: Rollout, state: RolloutState, now: dt.datetime, reset: bool, reason: str, until: float
) -> Decision:
    """Hold; look again when the pause ends or the analysis window completes."""
    candidates = [until] if until > 0 else []
    if spec.analysis is not None and state.window_started_at is not None:
        candidates.append(window_s(spec) - seconds_since(now, state.window_started_at))
    requeue = max(MIN_REQUEUE_S, min(candidates)) if candidates else float("inf")
    return Decision("wait", state, reason, requeue, reset)


def in_steps(spec: Rollout, state: RolloutState, now: dt.datetime, reset: bool) -> Decision:
    step = state.step
    n = len(spec.steps)
    if state.promote == "step":
        return _advance(spec, state, now, "promoted by `serveops promote`")
    if state.paused:
        return _wait(spec, state, now, reset, state.message, 0.0)
    pause = pause_s(spec, step)
    label = f"step {step + 1}/{n} ({state.weight:g}%)"
    if pause is None:
        return _wait(
            spec, state, now, reset, f"{label} waits for `serveops promote` (pause: indefinite)", 0
        )
    held = seconds_since(now, state.phase_started_at)
    if held < pause:
        return _wait(
            spec, state, now, reset, f"{label}: paused, {pause - held:.0f}s left", pause - held
        )
    if spec.analysis is not None and state.passes < 1:
        return _wait(spec, state, now, reset, f"{label}: waiting for a passing analysis", 0)
    return _advance(spec, state, now, f"{label} done")


def _advance(spec: Rollout, state: RolloutState, now: dt.datetime, why: str) -> Decision:
    if state.step + 1 < len(spec.steps):
        return _enter_step(spec, state, now, state.step + 1, why)
    return finish(spec, state, now, f"{why}; last step passed, 100% to {state.candidate_app}")


def in_preview(
    spec: Rollout,
    state: RolloutState,
    now: dt.datetime,
    reset: bool,
    full_size: bool | None,
    limits: Limits,
) -> Decision:
    def switch(why: str) -> Decision:
        return _switch_at_full_size(spec, state, now, why, full_size, limits)

    if state.promote == "step":
        return switch("promoted by `serveops promote`")
    if state.paused:
        return _wait(spec, state, now, reset, state.message, 0.0)
    if spec.analysis is None:
        if state.strategy == "blue_green":
            return switch(f"{state.candidate_app} running")
        return _wait(spec, state, now, reset, "shadowing; waits for `serveops promote`", 0.0)
    if state.passes >= 1:
        return switch("pre-promotion analysis passed")
    return _wait(spec, state, now, reset, f"previewing: {state.message or 'analysing'}", 0.0)


def _switch_at_full_size(
    spec: Rollout,
    state: RolloutState,
    now: dt.datetime,
    why: str,
    full_size: bool | None,
    limits: Limits,
) -> Decision:
    """The switch, once a candidate that previewed smaller runs at its full size: scaled
    first (still previewing, no client traffic), switched at the first pass it is; back to
    the stable version if it does not within the progress deadline."""
    if full_size is None or full_size:
        return _switch(spec, state, now, why)
    if state.scaling_since is None:
        scaling = dataclasses.replace(
            state, scaling_since=now, message=f"{why}; scaling {state.candidate_app} to full size"
        )
        return Decision("scale", scaling, scaling.message, MIN_REQUEUE_S)
    if seconds_since(now, state.scaling_since) > limits.progress_deadline_s:
        return abort(
            state,
            now,
            f"candidate {state.candidate_app} did not run at its full size within the progress "
            f"deadline of {limits.progress_deadline_s:.0f}s",
        )
    reason = f"{why}; {state.candidate_app} scaling to full size"
    return Decision("wait", state, reason, limits.loading_poll_s)


def _switch(spec: Rollout, state: RolloutState, now: dt.datetime, why: str) -> Decision:
    delay = parse_duration(spec.scale_down_delay)
    switched = _phase(
        state,
        now,
        "switched",
        100.0,
        f"switched to {state.candidate_app}; {state.stable_app} kept {delay:.0f}s for rollback",
    )
    # With post-rollout hooks, the next pass runs them as soon as the switch is written.
    requeue = MIN_REQUEUE_S if spec.hooks.post_rollout else max(MIN_REQUEUE_S, delay)
    return Decision("switch", switched, f"{why}; {switched.message}", requeue, True)


def in_switched(spec: Rollout, state: RolloutState, now: dt.datetime, reset: bool) -> Decision:
    if state.promote == "step":
        return finish(spec, state, now, "promoted by `serveops promote`")
    delay = parse_duration(spec.scale_down_delay)
    held = seconds_since(now, state.phase_started_at)
    if state.paused:
        return _wait(spec, state, now, reset, state.message, 0.0)
    if held < delay:
        return _wait(
            spec,
            state,
            now,
            reset,
            f"{state.stable_app} kept for rollback, {delay - held:.0f}s left",
            delay - held,
        )
    return finish(spec, state, now, f"scale-down delay over; removing {state.stable_app}")


def finish(spec: Rollout, state: RolloutState, now: dt.datetime, why: str) -> Decision:
    """Complete, or first hold 100% on the candidate with the stable version still up until the
    post-rollout hooks passed (they run at the next pass, once the weights are written)."""
    if not spec.hooks.post_rollout or state.post_hooks_passed:
        return _complete(spec, state, now, why)
    entered = _phase(
        state,
        now,
        "verifying",
        100.0,
        f"100% to {state.candidate_app}; {state.stable_app} kept until the post-rollout hooks pass",
    )
    return Decision("set_weight", entered, f"{why}; {entered.message}", MIN_REQUEUE_S)


def in_verifying(spec: Rollout, state: RolloutState, now: dt.datetime) -> Decision:
    if state.post_hooks_passed:
        return _complete(spec, state, now, state.message)
    return Decision("wait", state, "waiting for the post-rollout hooks", MIN_REQUEUE_S)


def _complete(spec: Rollout, state: RolloutState, now: dt.datetime, why: str) -> Decision:
    done = dataclasses.replace(
        state,
        phase="completed",
        weight=100.0,
        promote="",
        paused=False,
        ended_at=now,
        message=f"completed: {why}",
    )
    return Decision("complete", done, done.message, float("inf"))


def abort(state: RolloutState, now: dt.datetime, reason: str) -> Decision:
    aborted = dataclasses.replace(
        state,
        phase="aborted",
        weight=0.0,
        paused=False,
        promote="",
        ended_at=now,
        message=f"aborted: {reason}; traffic back on {state.stable_app}",
    )
    return Decision("abort", aborted, aborted.message, float("inf"))

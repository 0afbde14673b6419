"""The rollout engine: pure decisions that move traffic from a stable version to a candidate.

Nothing here reads a clock, Serve, metrics or the state store. `decide` takes the deployment's
`rollout` block, the rollout's durable state, the current time, the candidate's readiness and
(when a window of metrics is complete) an analysis result, and returns a `Decision`: the next
state to persist and what it means for the router. The controller persists the state first
and then renders the router from it (`traffic`), so a controller killed between the two
converges to the same weights at its next pass: no step is repeated or skipped.

Phases:

    canary:      loading -> steps[0] -> ... -> steps[n-1] [-> verifying] -> completed
    blue_green:  loading -> preview -> switched -> completed
    shadow:      loading -> preview -> switched -> completed             (any of them: aborted)

- loading: the candidate application starts next to the stable one, with no traffic. It must be
  RUNNING within the progress deadline (which therefore covers model load time), else abort.
- steps: the candidate gets `weights[i]` percent. A step is held for its `pause`, and, with an
  `analysis` block, until one analysis window passed in it. `indefinite` waits for
  `serveops promote`. After the last step traffic goes to 100% whatever the last weight was.
- preview: the candidate takes no client traffic; the router mirrors `shadow_percent` of live
  requests to it (all of them by default for blue_green), answers discarded, so pre-promotion
  analysis has figures. blue_green switches once one window passed (at once without analysis);
  shadow the same, but without analysis it waits for `serveops promote`.
- switched: one reconfigure moved all traffic (stable 0, candidate 100); the stable version stays
  up for `scale_down_delay`, so a rollback is a weight change. Analysis keeps running; a failure
  switches back.
- An analysis `fail` counts a failure; at `failure_limit` the rollout aborts. `inconclusive`
  (too little traffic) holds the step and keeps the window open: the next analysis, one
  `interval` later, covers every request since the window began, so a window is at least
  `interval` long and holds `min_requests` candidate requests. After `inconclusive_limit`
  intervals in a row without them the rollout pauses until `serveops resume` or `promote`: too
  little traffic never passes or fails silently.
- hooks (`rollout.hooks`): the caller runs them when `hooks_due` says so and passes the result.
  `pre_rollout` hooks run once the candidate is RUNNING, before it gets any traffic (the pass
  leaves `loading` only when they passed). `post_rollout` hooks run once the candidate takes all
  the traffic while the stable version is still up: in `switched` (blue_green, shadow), or in
  `verifying`, which a canary (or a promote --full) enters instead of completing. A failing hook
  aborts, so after the candidate took all the traffic that is a switch back to the stable one.
- aborted: the candidate's weight goes back to 0 at once and the deployment stays on the stable
  version; the same desired state is not tried again (the caller keys it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from controller.rollout.analysis import AnalysisResult
from controller.rollout.state import (
    DEFAULT_LIMITS,
    MIN_REQUEUE_S,
    AnalysisRecord,
    Decision,
    HookResult,
    HookStage,
    Limits,
    Phase,
    Readiness,
    RolloutState,
    mirror_percent,
)
from controller.rollout.waiting import pause_s, waiting_for
from controller.spec.durations import parse_duration
from controller.spec.models import Rollout


def analysis_due(spec: Rollout, state: RolloutState, now: dt.datetime) -> bool:
    """Is an analysis window complete? The caller then reads metrics and passes the result."""
    if spec.analysis is None or state.phase not in ("steps", "preview", "switched"):
        return False
    if state.window_started_at is None:
        return False
    return (now - state.window_started_at).total_seconds() >= parse_duration(spec.analysis.interval)


def hooks_due(spec: Rollout, state: RolloutState, candidate: Readiness) -> HookStage | None:
    """Which hooks the caller must run before `decide`, if any."""
    if not state.active or state.abort:
        return None
    if state.phase == "loading" and candidate == "ready" and spec.hooks.pre_rollout:
        return "pre_rollout"
    post = spec.hooks.post_rollout and not state.post_hooks_passed
    if post and state.phase in ("switched", "verifying"):
        return "post_rollout"
    return None


def _since(now: dt.datetime, then: dt.datetime | None) -> float:
    return (now - then).total_seconds() if then is not None else 0.0


def decide(
    spec: Rollout,
    state: RolloutState,
    now: dt.datetime,
    *,
    candidate: Readiness,
    candidate_message: str = "",
    analysis: AnalysisResult | None = None,
    limits: Limits = DEFAULT_LIMITS,
    hooks: HookResult | None = None,
) -> Decision:
    """The next step of a rollout. `analysis` only when `analysis_due` said so, `hooks` only
    when `hooks_due` did. The state it returns says what the rollout waits for next."""
    if analysis is not None and spec.analysis is not None and state.active:
        state = state.with_analysis(AnalysisRecord.of(analysis, spec.analysis, state, now))
    decision = _decide(
        spec,
        state,
        now,
        candidate=candidate,
        candidate_message=candidate_message,
        analysis=analysis,
        limits=limits,
        hooks=hooks,
    )
    waiting, until = waiting_for(spec, decision.state, limits, candidate)
    explained = dataclasses.replace(decision.state, waiting=waiting, until=until)
    return dataclasses.replace(decision, state=explained)


def _decide(
    spec: Rollout,
    state: RolloutState,
    now: dt.datetime,
    *,
    candidate: Readiness,
    candidate_message: str = "",
    analysis: AnalysisResult | None = None,
    limits: Limits = DEFAULT_LIMITS,
    hooks: HookResult | None = None,
) -> Decision:
    if not state.active:
        return Decision("wait", state, state.message, float("inf"))
    if state.abort:
        return _abort(state, now, f"aborted by {state.abort}")
    if candidate == "failed":
        return _abort(
            state, now, f"candidate {state.candidate_app} failed: {candidate_message}".rstrip(": ")
        )
    if hooks is not None and not hooks.passed:
        return _abort(state, now, f"{hooks.label} failed: {hooks.summary}")
    if state.phase == "loading":
        return _loading(spec, state, now, candidate, limits, hooks)
    if hooks is not None:  # post-rollout hooks passed
        state = dataclasses.replace(
            state, post_hooks_passed=True, message=f"{hooks.label} passed: {hooks.summary}"
        )
    if state.phase == "verifying":
        return _verifying(spec, state, now)

    reset = False
    if analysis is not None:
        # The next window starts now, except after an inconclusive one: too little traffic to
        # judge keeps its metrics baseline, so the next analysis, an interval later, judges
        # every request since. A window lasts at least `interval` and until the candidate
        # answered `min_requests`: a slow or lightly loaded service is judged later, not never.
        reset = analysis.verdict != "inconclusive"
        state = dataclasses.replace(state, window_started_at=now)
        if analysis.verdict == "fail":
            failures = state.failures + 1
            limit = spec.analysis.failure_limit if spec.analysis else 1
            state = dataclasses.replace(state, failures=failures, inconclusive=0)
            if failures >= limit:
                return _abort(
                    state,
                    now,
                    f"analysis failed ({failures}/{limit}): {analysis.summary}",
                )
            state = dataclasses.replace(
                state, message=f"analysis failed ({failures}/{limit}): {analysis.summary}"
            )
        elif analysis.verdict == "inconclusive":
            count = state.inconclusive + 1
            state = dataclasses.replace(
                state,
                inconclusive=count,
                message=f"analysis inconclusive ({count}/{limits.inconclusive_limit}): "
                f"{analysis.summary}",
            )
            if count >= limits.inconclusive_limit and not state.paused and not state.promote:
                paused = dataclasses.replace(
                    state,
                    paused=True,
                    message=f"paused: {count} inconclusive analyses in a row, "
                    f"{analysis.summary}; `serveops resume` to keep analysing, `serveops "
                    "promote` to go on without it, `serveops abort` to roll back",
                )
                return Decision("pause", paused, paused.message, _window_s(spec), reset)
        else:
            state = dataclasses.replace(
                state,
                inconclusive=0,
                passes=state.passes + 1,
                message=f"analysis passed: {analysis.summary}",
            )

    if state.promote == "full":
        return _finish(spec, state, now, "promoted to 100% by `serveops promote --full`")
    if state.phase == "steps":
        return _steps(spec, state, now, reset)
    if state.phase == "preview":
        return _preview(spec, state, now, reset)
    return _switched(spec, state, now, reset)


def _loading(
    spec: Rollout,
    state: RolloutState,
    now: dt.datetime,
    candidate: Readiness,
    limits: Limits,
    hooks: HookResult | None,
) -> Decision:
    waited = _since(now, state.phase_started_at)  # from when the candidate was started
    if candidate != "ready":
        if waited > limits.progress_deadline_s:
            return _abort(
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
    return _window_s(spec) if spec.analysis else MIN_REQUEUE_S


def _window_s(spec: Rollout) -> float:
    return parse_duration(spec.analysis.interval) if spec.analysis else float("inf")


def _wait(
    spec: Rollout, state: RolloutState, now: dt.datetime, reset: bool, reason: str, until: float
) -> Decision:
    """Hold; look again when the pause ends or the analysis window completes."""
    candidates = [until] if until > 0 else []
    if spec.analysis is not None and state.window_started_at is not None:
        candidates.append(_window_s(spec) - _since(now, state.window_started_at))
    requeue = max(MIN_REQUEUE_S, min(candidates)) if candidates else float("inf")
    return Decision("wait", state, reason, requeue, reset)


def _steps(spec: Rollout, state: RolloutState, now: dt.datetime, reset: bool) -> Decision:
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
    held = _since(now, state.phase_started_at)
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
    return _finish(spec, state, now, f"{why}; last step passed, 100% to {state.candidate_app}")


def _preview(spec: Rollout, state: RolloutState, now: dt.datetime, reset: bool) -> Decision:
    if state.promote == "step":
        return _switch(spec, state, now, "promoted by `serveops promote`")
    if state.paused:
        return _wait(spec, state, now, reset, state.message, 0.0)
    if spec.analysis is None:
        if state.strategy == "blue_green":
            return _switch(spec, state, now, f"{state.candidate_app} running")
        return _wait(spec, state, now, reset, "shadowing; waits for `serveops promote`", 0.0)
    if state.passes >= 1:
        return _switch(spec, state, now, "pre-promotion analysis passed")
    return _wait(spec, state, now, reset, f"previewing: {state.message or 'analysing'}", 0.0)


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


def _switched(spec: Rollout, state: RolloutState, now: dt.datetime, reset: bool) -> Decision:
    if state.promote == "step":
        return _finish(spec, state, now, "promoted by `serveops promote`")
    delay = parse_duration(spec.scale_down_delay)
    held = _since(now, state.phase_started_at)
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
    return _finish(spec, state, now, f"scale-down delay over; removing {state.stable_app}")


def _finish(spec: Rollout, state: RolloutState, now: dt.datetime, why: str) -> Decision:
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


def _verifying(spec: Rollout, state: RolloutState, now: dt.datetime) -> Decision:
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


def _abort(state: RolloutState, now: dt.datetime, reason: str) -> Decision:
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

"""The rollout engine: pure decisions that move traffic from a stable version to a candidate.

Nothing here reads a clock, Serve, metrics or the state store. `decide` takes the deployment's
`rollout` block, the rollout's durable state, the current time, the candidate's readiness and
(when a window of metrics is complete) an analysis result, and returns a `Decision`: the next
state to persist and what it means for the router. The controller persists the state first
and then renders the router from it (`traffic`), so a controller killed between the two
converges to the same weights at its next pass: no step is repeated or skipped. What each phase
does next is in phases.py.

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
from controller.rollout.phases import (
    abort,
    finish,
    in_loading,
    in_preview,
    in_steps,
    in_switched,
    in_verifying,
    seconds_since,
    window_s,
)
from controller.rollout.state import (
    DEFAULT_LIMITS,
    AnalysisRecord,
    Decision,
    HookResult,
    HookStage,
    Limits,
    Readiness,
    RolloutState,
)
from controller.rollout.waiting import waiting_for
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
    full_size: bool | None = None,
) -> Decision:
    """The next step of a rollout. `analysis` only when `analysis_due` said so, `hooks` only
    when `hooks_due` did; `full_size`, whether a candidate that previews smaller runs at its
    full size now (None: it does not preview smaller). The state it returns says what the
    rollout waits for next."""
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
        full_size=full_size,
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
    full_size: bool | None = None,
) -> Decision:
    if not state.active:
        return Decision("wait", state, state.message, float("inf"))
    if state.abort:
        return abort(state, now, f"aborted by {state.abort}")
    if candidate == "failed":
        return abort(
            state, now, f"candidate {state.candidate_app} failed: {candidate_message}".rstrip(": ")
        )
    if hooks is not None and not hooks.passed:
        return abort(state, now, f"{hooks.label} failed: {hooks.summary}")
    if state.phase == "loading":
        return in_loading(spec, state, now, candidate, limits, hooks)
    if hooks is not None:  # post-rollout hooks passed
        state = dataclasses.replace(
            state, post_hooks_passed=True, message=f"{hooks.label} passed: {hooks.summary}"
        )
    if state.phase == "verifying":
        return in_verifying(spec, state, now)

    reset = False
    if analysis is not None:
        # The next window starts now, except after an inconclusive one: too little traffic to
        # judge keeps its metrics baseline, so the next analysis, an interval later, judges
        # every request since. A window lasts at least `interval` and until the candidate
        # answered `min_requests`: a slow or lightly loaded service is judged later, not never.
        # A window held for saturation with enough requests restarts (analysis.restart).
        reset = analysis.verdict != "inconclusive" or analysis.restart
        # A saturated hold dates from the start of the first window held in a row.
        held_since = state.saturated_since or state.window_started_at or now
        state = dataclasses.replace(state, window_started_at=now, saturated_since=None)
        if analysis.verdict == "fail":
            failures = state.failures + 1
            limit = spec.analysis.failure_limit if spec.analysis else 1
            state = dataclasses.replace(state, failures=failures, inconclusive=0)
            if failures >= limit:
                return abort(
                    state,
                    now,
                    f"analysis failed ({failures}/{limit}): {analysis.summary}",
                )
            state = dataclasses.replace(
                state, message=f"analysis failed ({failures}/{limit}): {analysis.summary}"
            )
        elif analysis.verdict == "inconclusive" and analysis.saturated:
            # The load's doing, not the candidate's: held, said (since when: a busy hour can
            # hold a step for long, both versions' replicas up), and never a step to a pause.
            state = dataclasses.replace(
                state,
                saturated_since=held_since,
                message=f"analysis held, the serving path is saturated "
                f"{held_for(held_since, now)}: {analysis.summary}",
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
                return Decision("pause", paused, paused.message, window_s(spec), reset)
        else:
            state = dataclasses.replace(
                state,
                inconclusive=0,
                passes=state.passes + 1,
                message=f"analysis passed: {analysis.summary}",
            )

    if state.promote == "full":
        return finish(spec, state, now, "promoted to 100% by `serveops promote --full`")
    if state.phase == "steps":
        return in_steps(spec, state, now, reset)
    if state.phase == "preview":
        return in_preview(spec, state, now, reset, full_size, limits)
    return in_switched(spec, state, now, reset)


def held_for(since: dt.datetime, now: dt.datetime) -> str:
    """`since 19:31:20 UTC (4m10s)`: how long a saturated hold has lasted."""
    seconds = int(seconds_since(now, since))
    minutes, seconds = divmod(seconds, 60)
    length = f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
    return f"since {since:%H:%M:%S} UTC ({length})"

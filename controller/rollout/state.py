"""What a rollout is between passes: its durable state and the values the engine passes out.

Plain frozen data, persisted as JSON by the state store (`RolloutState.to_json`); the decisions
that move it live in `engine.py`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from controller.rollout.analysis import AnalysisResult, VersionWindow
from controller.spec.models import Analysis, Rollout

Strategy = Literal["canary", "blue_green", "shadow"]
Phase = Literal["loading", "steps", "preview", "switched", "verifying", "completed", "aborted"]
Command = Literal["promote", "promote_full", "abort", "pause", "resume"]
Action = Literal["wait", "set_weight", "scale", "switch", "pause", "complete", "abort"]
Readiness = Literal["ready", "starting", "failed"]
HookStage = Literal["pre_rollout", "post_rollout"]

ACTIVE_PHASES: frozenset[Phase] = frozenset(
    {"loading", "steps", "preview", "switched", "verifying"}
)
PROGRESSIVE: frozenset[str] = frozenset({"canary", "blue_green", "shadow"})
MIN_REQUEUE_S = 1.0


@dataclass(frozen=True)
class Limits:
    """What the deployment file does not say; controller settings."""

    progress_deadline_s: float = 600.0  # start -> candidate RUNNING (model load time included)
    inconclusive_limit: int = 3  # inconclusive windows in a row before the rollout pauses
    loading_poll_s: float = 2.0  # how soon to look again while the candidate starts
    # How soon to look again while held for room: the queue it waits on is read as the peak
    # of the last 10 s (protocol.SLOT_WAIT_PEAK_S), and each look scrapes every node's metrics.
    held_poll_s: float = 5.0


DEFAULT_LIMITS = Limits()
ANALYSES_KEPT = 20  # analysis records a rollout keeps (the newest)


@dataclass(frozen=True)
class VersionFigures:
    """What one version did in an analysis window."""

    requests: int
    errors: int
    error_rate_pct: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    shed: int = 0  # requests the router shed while this version was full (saturation)
    wait_ms: float | None = None  # mean wait in the router's queue for a slot, per request
    own_p95_ms: float | None = None  # p95 of its own time: slot to answer, without the queue

    @classmethod
    def of(cls, window: VersionWindow) -> VersionFigures:
        return cls(
            window.requests,
            window.errors,
            round(window.error_rate_pct, 3),
            _round(window.quantile_ms(0.5)),
            _round(window.quantile_ms(0.95)),
            _round(window.quantile_ms(0.99)),
            window.shed,
            _round(window.mean_wait_ms),
            _round(window.own_quantile_ms(0.95)),
        )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


@dataclass(frozen=True)
class AnalysisRecord:
    """One analysis window as the rollout judged it: figures, thresholds and the decision."""

    at: str  # ISO 8601, UTC
    step: int
    weight: float
    verdict: Literal["pass", "fail", "inconclusive"]
    reasons: tuple[str, ...]
    candidate: VersionFigures
    stable: VersionFigures
    thresholds: dict[str, float | int | None]

    @classmethod
    def of(
        cls, result: AnalysisResult, spec: Analysis, state: RolloutState, now: dt.datetime
    ) -> AnalysisRecord:
        return cls(
            at=now.isoformat(),
            step=state.step,
            weight=state.weight,
            verdict=result.verdict,
            reasons=tuple(result.reasons),
            candidate=VersionFigures.of(result.candidate),
            stable=VersionFigures.of(result.stable),
            thresholds={
                "min_requests": spec.min_requests,
                "max_error_rate_increase": spec.max_error_rate_increase,
                "max_p95_latency_ms": spec.max_p95_latency_ms,
                "max_p95_regression_pct": spec.max_p95_regression_pct,
            },
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnalysisRecord:
        return cls(
            data["at"],
            data["step"],
            data["weight"],
            data["verdict"],
            tuple(data["reasons"]),
            VersionFigures(**data["candidate"]),
            VersionFigures(**data["stable"]),
            data["thresholds"],
        )


@dataclass(frozen=True)
class RolloutState:
    """Everything a rollout needs between passes; persisted as JSON by the state store."""

    deployment: str
    strategy: Strategy
    stable_app: str
    stable_version: str
    candidate_app: str
    candidate_version: str
    key: str  # fingerprint of the desired state that started it: an abort is not retried on it
    commit: str
    phase: Phase
    started_at: dt.datetime
    phase_started_at: dt.datetime
    step: int = -1  # canary: index of the current step
    weight: float = 0.0  # the candidate's share of client traffic
    window_started_at: dt.datetime | None = None
    failures: int = 0  # failed analyses, whole rollout
    inconclusive: int = 0  # inconclusive analyses in a row
    # Since when every analysis held the rollout because the serving path was saturated (the
    # first of those in a row); None after any other verdict.
    saturated_since: dt.datetime | None = None
    passes: int = 0  # passed analyses in the current step or phase
    paused: bool = False
    promote: Literal["", "step", "full"] = ""  # asked by `serveops promote`
    abort: str = ""  # asked by `serveops abort`: who and why
    message: str = ""
    ended_at: dt.datetime | None = None
    post_hooks_passed: bool = False
    # Since when the candidate waits for room (controller/rollout/headroom.py): in loading to
    # start, in a preview to be scaled to its full size for the switch. None: not held. The
    # progress deadline counts from when it starts or scales, not from this wait.
    held_since: dt.datetime | None = None
    # Preview: since when the candidate, previewed smaller than its full size, is being scaled
    # to it for the switch (controller/rollout/apps.py).
    scaling_since: dt.datetime | None = None
    # What the rollout waits for now, in words that do not change pass to pass, and when a
    # time-bound wait ends: what every view shows as "waiting for".
    waiting: str = ""
    until: dt.datetime | None = None
    analyses: tuple[AnalysisRecord, ...] = field(default=())  # the newest ANALYSES_KEPT

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE_PHASES

    @property
    def held_for_room(self) -> bool:
        return self.held_since is not None

    @property
    def scaling(self) -> bool:
        return self.scaling_since is not None

    @property
    def last_analysis(self) -> AnalysisRecord | None:
        return self.analyses[-1] if self.analyses else None

    def with_analysis(self, record: AnalysisRecord) -> RolloutState:
        return dataclasses.replace(self, analyses=(*self.analyses, record)[-ANALYSES_KEPT:])

    def to_json(self) -> str:
        data: dict[str, Any] = dataclasses.asdict(self)
        for key, value in data.items():
            if isinstance(value, dt.datetime):
                data[key] = value.isoformat()
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RolloutState:
        data = json.loads(text)
        if data.pop("held_for_room", False) and not data.get("held_since"):
            data["held_since"] = data["phase_started_at"]  # stored before the time was kept
        for key in (
            "started_at",
            "phase_started_at",
            "window_started_at",
            "ended_at",
            "until",
            "scaling_since",
            "saturated_since",
            "held_since",
        ):
            if data.get(key):
                data[key] = dt.datetime.fromisoformat(data[key])
        data["analyses"] = tuple(AnalysisRecord.from_dict(a) for a in data.get("analyses", ()))
        return cls(**data)


@dataclass(frozen=True)
class HookResult:
    """What running one stage's hooks gave: passed, and a summary (the failure, if any)."""

    stage: HookStage
    passed: bool
    summary: str

    @property
    def label(self) -> str:
        return self.stage.replace("_", "-") + " hooks"


@dataclass(frozen=True)
class Decision:
    action: Action
    state: RolloutState  # persist this, then render the router from it
    reason: str
    requeue_after: float
    reset_window: bool = False  # a new analysis window starts now: record the metrics baseline

    @property
    def changed(self) -> bool:
        return self.action != "wait"


@dataclass(frozen=True)
class Traffic:
    """What the router does for a rollout's state; None from `traffic` means Git's steady state."""

    stable_weight: float
    candidate_weight: float
    mirror_percent: float  # share of requests mirrored to the candidate, answers discarded
    keep_candidate: bool  # the candidate application stays deployed


def start(
    strategy: Strategy,
    deployment: str,
    *,
    stable: tuple[str, str],
    candidate: tuple[str, str],
    key: str,
    commit: str,
    now: dt.datetime,
) -> RolloutState:
    """A new rollout from `stable` (app, version) to `candidate` (app, version)."""
    return RolloutState(
        deployment=deployment,
        strategy=strategy,
        stable_app=stable[0],
        stable_version=stable[1],
        candidate_app=candidate[0],
        candidate_version=candidate[1],
        key=key,
        commit=commit,
        phase="loading",
        started_at=now,
        phase_started_at=now,
        message=f"starting {candidate[0]} next to {stable[0]}",
    )


def started_message(state: RolloutState) -> str:
    return f"starting {state.candidate_app} next to {state.stable_app}"


def with_command(state: RolloutState, command: Command, note: str = "") -> RolloutState:
    """Fold an operator's command into the state; `decide` acts on it."""
    if not state.active:
        return state
    if command == "pause":
        return dataclasses.replace(state, paused=True, message=f"paused by {note or 'operator'}")
    if command == "resume":
        return dataclasses.replace(state, paused=False, inconclusive=0, message="resumed")
    if command == "promote":
        return dataclasses.replace(state, promote="step", paused=False)
    if command == "promote_full":
        return dataclasses.replace(state, promote="full", paused=False)
    return dataclasses.replace(state, abort=note or "operator")


def mirror_percent(spec: Rollout) -> float:
    """Share of requests mirrored to a previewing candidate: `shadow_percent`, else all."""
    return float(spec.shadow_percent or 100)


def traffic(spec: Rollout, state: RolloutState) -> Traffic | None:
    """The router's weights and mirroring for `state`; None: the rollout no longer shapes it."""
    if state.phase == "completed":
        return None
    if state.phase == "aborted":
        return Traffic(100.0, 0.0, 0.0, keep_candidate=False)
    if state.phase == "preview":
        return Traffic(100.0, 0.0, mirror_percent(spec), keep_candidate=True)
    if state.phase in ("switched", "verifying"):
        return Traffic(0.0, 100.0, 0.0, keep_candidate=True)
    return Traffic(100.0 - state.weight, state.weight, 0.0, keep_candidate=True)

"""The deployment file: pydantic models whose field descriptions are the reference docs.

One YAML file under deployments/<environment>/ declares one ModelDeployment. The JSON Schema in
schema/modeldeployment.schema.json is generated from these models (`serveops schema`), and
docs/spec-reference.md from their descriptions (`serveops docs`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from controller.serving.protocol import DEFAULT_RECORD_HEADERS, MODEL_DEPLOYMENT, MODEL_IMPORT_PATH
from controller.serving.warmup import DEFAULT_WARMUP_PREDICTIONS, MAX_WARMUP_PREDICTIONS
from controller.spec.durations import DURATION_PATTERN
from controller.spec.durations import parse_duration as parse_duration  # spec users read them
from controller.spec.monitoring import Monitoring
from controller.spec.updates import ModelUpdates

API_VERSION = "serveops.dev/v1alpha1"
KIND = "ModelDeployment"

# Names become Serve application names (`<name>--v<version>`), so `--` is reserved.
NAME_PATTERN = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"
ROUTE_PATTERN = r"^/[a-z0-9]([a-z0-9._-]*[a-z0-9])?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*$"
# MLflow registry URIs: models:/<name>/<version> or models:/<name>@<alias>.
# (No named groups: the pattern also goes into the JSON Schema, read by ECMA-regex editors.)
MODEL_URI_PATTERN = (
    r"^models:/([A-Za-z0-9][A-Za-z0-9_.\- ]*?)(?:/([0-9]+)|@([A-Za-z_][A-Za-z0-9_\-]*))$"
)
LABEL_KEY_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$"
# Length limits on free text a pull request writes (docs/security.md): what policies, plans,
# notifications and Serve's config carry stays small whatever a file says.
MAX_OWNER_LENGTH = 100
MAX_LABELS = 64
MAX_LABEL_VALUE_LENGTH = 256
MAX_ROUTE_LENGTH = 200
MAX_MODEL_URI_LENGTH = 300
# `package.module:attribute`, as Ray Serve's `import_path` takes it.
IMPORT_PATH_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
# A pip requirement: a project name with optional extras, then an optional version specifier.
PIP_REQUIREMENT_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?(\[[A-Za-z0-9._,-]+\])?([<>=!~]=?[A-Za-z0-9.*+!_-]+(,[<>=!~]=?[A-Za-z0-9.*+!_-]+)*)?$"
# An HTTP field name (RFC 9110 token).
HEADER_PATTERN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
# Headers that cannot tell one user from another: hop-by-hop, framing, or serveops' own answers.
UNSTICKY_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "content-type",
        "host",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


class _Strict(BaseModel):
    # Unknown fields are errors: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Metadata(_Strict):
    name: str = Field(
        pattern=NAME_PATTERN,
        max_length=50,
        description="Deployment name, unique within its environment: lowercase letters, digits "
        "and single dashes, at most 50 characters. Serve applications are named after it.",
    )
    environment: str = Field(
        pattern=NAME_PATTERN,
        max_length=50,
        description="Environment this deployment belongs to; must match the folder the file is "
        "in (deployments/<environment>/).",
    )
    owner: str = Field(
        min_length=1,
        max_length=MAX_OWNER_LENGTH,
        description="Team or person accountable for this deployment (used by policies and "
        f"notifications), at most {MAX_OWNER_LENGTH} characters.",
    )
    labels: dict[str, Annotated[str, Field(max_length=MAX_LABEL_VALUE_LENGTH)]] = Field(
        default_factory=dict,
        max_length=MAX_LABELS,
        description=f"Free-form key/value labels, matched by policies: at most {MAX_LABELS}, "
        f"keys of at most 63 characters, values of at most {MAX_LABEL_VALUE_LENGTH}.",
    )

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, labels: dict[str, str]) -> dict[str, str]:
        for key in labels:
            if not re.match(LABEL_KEY_PATTERN, key):
                raise ValueError(f"label key {key!r} must match {LABEL_KEY_PATTERN}")
        return labels


class Autoscaling(_Strict):
    min_replicas: int = Field(ge=0, description="Fewest replicas Ray Serve scales down to.")
    max_replicas: int = Field(ge=1, description="Most replicas Ray Serve scales up to.")
    target_ongoing_requests: float = Field(
        default=2.0,
        gt=0,
        description="Average in-flight requests per replica that Ray Serve's autoscaler aims for.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self


class Resources(_Strict):
    num_cpus: float = Field(
        default=0.25,
        gt=0,
        le=512,
        description="Logical CPUs reserved per model replica. Fractions are allowed and useful: "
        "Ray only schedules a replica where its whole reservation fits.",
    )
    num_gpus: float = Field(default=0, ge=0, le=64, description="GPUs reserved per replica.")
    memory_mb: int | None = Field(
        default=None,
        gt=0,
        description="Memory reserved per replica, in MiB (Ray's `memory` resource). "
        "Unset means no reservation.",
    )


class RolloutStep(_Strict):
    weight: int = Field(
        ge=1, le=100, description="Share of traffic, in percent, sent to the new version."
    )
    pause: str = Field(
        default="0s",
        description="How long to hold this step before the next one, e.g. `30s`, `5m`, or "
        "`indefinite` to wait for `serveops promote`.",
    )

    @field_validator("pause")
    @classmethod
    def _pause(cls, value: str) -> str:
        if value != "indefinite" and not re.match(DURATION_PATTERN, value):
            raise ValueError("pause must be a duration such as 30s, 5m, 1h30m, or 'indefinite'")
        return value


class Analysis(_Strict):
    interval: str = Field(
        default="30s",
        pattern=DURATION_PATTERN,
        description="How often an analysis reads the router's metrics: the shortest window.",
    )
    min_requests: int = Field(
        default=50,
        ge=1,
        description="Fewest candidate requests in a window for an analysis to be conclusive; "
        "below it the window stays open for another interval, and after the controller's "
        "inconclusive limit the rollout pauses rather than passing or failing.",
    )
    max_error_rate_increase: float = Field(
        default=0.5,
        ge=0,
        description="Largest allowed increase of the candidate's error rate over the stable "
        "version's, in percentage points.",
    )
    max_p95_latency_ms: float | None = Field(
        default=None,
        gt=0,
        description="Absolute ceiling on the candidate's p95 latency. While the serving path "
        "is saturated (the router shed requests in the window) it is judged by each version's "
        "own time, from its slot to its answer: the candidate fails when its own p95 is above "
        "the ceiling and the stable version's is within it; otherwise the step holds.",
    )
    max_p95_regression_pct: float | None = Field(
        default=20,
        ge=0,
        description="Largest allowed p95 latency regression relative to the stable version, in "
        "percent. While the serving path is saturated (the router shed requests in the window) "
        "the versions' own times (slot to answer, without the router's queue) are compared too.",
    )
    failure_limit: int = Field(
        default=1, ge=1, description="Failed analyses after which the rollout aborts."
    )


class Variant(_Strict):
    name: str = Field(
        pattern=NAME_PATTERN,
        max_length=30,
        description="Name of the variant, unique in the deployment; the router answers with it "
        "in `x-serveops-variant`.",
    )
    model: str | None = Field(
        default=None,
        pattern=MODEL_URI_PATTERN,
        description="MLflow registry URI this variant serves. Left out: `spec.model`. Exactly "
        "one variant serves `spec.model`; no two variants serve the same model.",
    )
    weight: int = Field(
        ge=0,
        le=100,
        description="Share of users, in percent, sent to this variant; the weights of all "
        "variants add up to 100. 0 keeps the variant deployed without traffic.",
    )


class SmokeRequest(_Strict):
    path: str = Field(
        default="",
        pattern=r"^(/[A-Za-z0-9._~%!$&'()*+,;=:@-]*)*$",
        description="Appended to the deployment's route; empty: the route itself.",
    )
    method: Literal["POST", "GET"] = Field(default="POST", description="HTTP method.")
    body: dict[str, Any] | list[Any] | None = Field(
        default=None,
        description="JSON body, in MLflow's scoring format, e.g. `{inputs: [[1.0, 2.0]]}`.",
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")
    expect_status: int = Field(
        default=200, ge=100, le=599, description="Status the candidate's answer must have."
    )


class Hook(_Strict):
    name: str = Field(
        pattern=NAME_PATTERN, max_length=50, description="Names the hook in messages and events."
    )
    smoke: list[SmokeRequest] | None = Field(
        default=None,
        min_length=1,
        description="Requests sent through the deployment's route, pinned to the candidate "
        "version (header `x-serveops-pin-version` with a token the controller signs); each "
        "must get `expect_status` from the candidate. Exclusive with `command`.",
    )
    command: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Program and arguments (no shell) the controller runs; exit 0 passes. It "
        "gets SERVEOPS_ENVIRONMENT, SERVEOPS_DEPLOYMENT, SERVEOPS_STAGE, "
        "SERVEOPS_CANDIDATE_VERSION, SERVEOPS_STABLE_VERSION, SERVEOPS_COMMIT and SERVEOPS_URL "
        "(the route's URL); of the controller's own environment only PATH, HOME, LANG, LC_ALL, "
        "TZ, TMPDIR and the variables the operator lists in $SERVEOPS_HOOK_ENV. Exclusive with "
        "`smoke`.",
    )
    timeout: str = Field(
        default="30s",
        pattern=DURATION_PATTERN,
        description="Longest the hook may take (each smoke request, or the command).",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Hook:
        if (self.smoke is None) == (self.command is None):
            raise ValueError("a hook is either 'smoke' (requests) or 'command', exactly one")
        return self


class RolloutHooks(_Strict):
    pre_rollout: list[Hook] = Field(
        default_factory=list,
        description="Run once the candidate is running, before any traffic moves (or is "
        "mirrored) to it; a failure aborts the rollout.",
    )
    post_rollout: list[Hook] = Field(
        default_factory=list,
        description="Run once the candidate takes all the traffic, while the stable version is "
        "still up; a failure rolls traffic back to the stable version (abort).",
    )


class Rollout(_Strict):
    strategy: Literal["immediate", "canary", "blue_green", "shadow", "ab"] = Field(
        default="immediate",
        description="How a new model version replaces the live one. `immediate` switches once "
        "the new version is running; `canary`, `blue_green` and `shadow` are progressive; `ab` "
        "serves long-lived `variants` side by side (see docs/rollouts.md).",
    )
    steps: list[RolloutStep] = Field(
        default_factory=list,
        description="Canary steps, in order. Traffic ends at 100% after the last step even when "
        "the weights do not reach it.",
    )
    analysis: Analysis | None = Field(
        default=None, description="Checks run between steps; a failure aborts and rolls back."
    )
    shadow_percent: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="For `shadow` (required) and `blue_green` (default 100): share of live "
        "requests mirrored to the candidate while it previews, whose answers are compared but "
        "never returned. Each mirrored request is served twice: below 100 keeps a preview's "
        "extra load in proportion, and with a fixed number of `replicas` the candidate previews "
        "with only the replicas its share needs (at least one) and is scaled to its full size "
        "before the switch.",
    )
    scale_down_delay: str = Field(
        default="5m",
        pattern=DURATION_PATTERN,
        description="For `blue_green`: how long the previous version stays up after the switch, "
        "so a rollback is instant.",
    )
    hooks: RolloutHooks = Field(
        default_factory=RolloutHooks,
        description="Gates before and after a progressive rollout (canary, blue_green, shadow).",
    )
    variants: list[Variant] = Field(
        default_factory=list,
        description="For `ab`: two or more long-lived variants, each a model version with a "
        "share of users. Changing a weight reconfigures the router; nothing restarts.",
    )
    sticky_header: str | None = Field(
        default=None,
        description="For `ab`: request header (e.g. `x-user-id`) whose value picks the "
        "variant, by a stable hash, so one user always sees one variant. Requests without it "
        "are split by weight at random.",
    )

    @field_validator("sticky_header")
    @classmethod
    def _header(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(HEADER_PATTERN, value):
            raise ValueError("sticky_header must be an HTTP header name such as x-user-id")
        return value.lower()  # HTTP field names are case-insensitive

    @model_validator(mode="after")
    def _ab(self) -> Rollout:
        errors: list[tuple[tuple[str | int, ...], str, object]] = []
        if self.strategy != "ab":
            for name in ("variants", "sticky_header"):
                if getattr(self, name):
                    why = f"'{name}' only applies to strategy 'ab', not {self.strategy!r}"
                    errors.append(((name,), why, {}))
            _raise_located(errors, "Rollout")
            return self
        if len(self.variants) < 2:
            errors.append((("variants",), "strategy 'ab' needs at least two variants", {}))
        header = self.sticky_header
        if header is None:
            why = "strategy 'ab' needs 'sticky_header': the request header that identifies a user"
            errors.append((("sticky_header",), why, {}))
        elif header in UNSTICKY_HEADERS or header.startswith("x-serveops-"):
            why = f"header {header!r} cannot tell users apart; use one the client sets per user"
            errors.append((("sticky_header",), why, {}))
        for name in ("analysis", "shadow_percent"):
            if getattr(self, name) is not None:
                errors.append(((name,), f"'{name}' does not apply to strategy 'ab'", {}))
        first: dict[str, int] = {}
        for i, v in enumerate(self.variants):
            if v.name in first:
                why = f"variant name {v.name!r} is already used by variants[{first[v.name]}]"
                errors.append((("variants", i, "name"), why, {}))
            first.setdefault(v.name, i)
        total = sum(v.weight for v in self.variants)
        if self.variants and total != 100:
            why = f"variant weights add up to {total}, not 100"
            errors.append((("variants",), why, {}))
        _raise_located(errors, "Rollout")
        return self

    @model_validator(mode="after")
    def _hooks_progressive(self) -> Rollout:
        hooks = self.hooks.pre_rollout or self.hooks.post_rollout
        if hooks and self.strategy not in ("canary", "blue_green", "shadow"):
            raise ValueError(
                f"'hooks' apply to canary, blue_green and shadow, not {self.strategy!r}"
            )
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Rollout:
        if self.strategy == "canary" and not self.steps:
            raise ValueError("strategy 'canary' needs at least one step in 'steps'")
        if self.strategy != "canary" and self.steps:
            raise ValueError(f"'steps' only applies to strategy 'canary', not {self.strategy!r}")
        if self.strategy == "shadow" and self.shadow_percent is None:
            raise ValueError("strategy 'shadow' needs 'shadow_percent'")
        if self.shadow_percent is not None and self.strategy not in ("shadow", "blue_green"):
            raise ValueError(
                f"'shadow_percent' only applies to strategies 'shadow' and 'blue_green', "
                f"not {self.strategy!r}"
            )
        weights = [s.weight for s in self.steps]
        if weights != sorted(weights):
            raise ValueError("canary step weights must not decrease")
        return self


# Never recorded, whatever a deployment adds: credentials and cookies (names, then globs).
RECORDING_DENY_HEADERS = (
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-csrf-token",
    "*auth*",
    "*cookie*",
    "*token*",
    "*secret*",
    "*password*",
    "*api-key*",
)


class Recording(_Strict):
    sample_rate: float = Field(
        gt=0,
        le=1,
        description="Share of live requests the router records, drawn per request: `1` records "
        "every request, `0.01` one in a hundred.",
    )
    dir: str = Field(
        default="~/.serveops/recordings",
        pattern=r"^(/|~/)",
        description="Absolute directory (or under `~/`, the router replica's home), on the node "
        "of each router replica, the recordings go to: `<dir>/<name>--<UTC start>-<tag>-<n>."
        "jsonl`, one series per router replica, in the format `serveops replay` reads "
        "(docs/simulator.md). Made 0700, files 0600: recordings hold what users sent. Not "
        "/tmp by default: a shared, world-listable directory.",
    )
    max_file_mb: float = Field(
        default=64,
        gt=0,
        le=10240,
        description="Size in MiB at which a file is closed and the next one started.",
    )
    keep_files: int = Field(
        default=20,
        ge=1,
        le=100000,
        description="Files of this deployment the directory keeps, across router replicas and "
        "restarts; beyond it the oldest is deleted.",
    )
    max_total_mb: float = Field(
        default=1024,
        gt=0,
        le=1048576,
        description="Total size in MiB of this deployment's files in the directory, across "
        "router replicas and restarts; beyond it the oldest files are deleted.",
    )
    queue_size: int = Field(
        default=10000,
        ge=1,
        le=1000000,
        description="Sampled requests waiting to be written. When the disk is slow and the "
        "queue is full, a sampled request is not recorded (and counted in the "
        "`serveops_router_recording_dropped` metric); a request never waits for the recorder.",
    )
    deny_headers: list[str] = Field(
        default_factory=list,
        description="Header names or globs (`x-tenant-*`) never recorded, case-insensitive, in "
        "addition to the built-in ones: authorization, proxy-authorization, cookie, set-cookie, "
        "x-api-key, x-csrf-token and any name containing auth, cookie, token, secret, password "
        "or api-key. Connection headers (host, content-length, ...) are never recorded either.",
    )
    headers: list[str] = Field(
        default_factory=lambda: list(DEFAULT_RECORD_HEADERS),
        description="Header names or globs recorded (an allow-list, case-insensitive): "
        f"{', '.join(DEFAULT_RECORD_HEADERS)} unless listed otherwise. No other header is "
        "written, and a denied one never is. Add an A/B deployment's `sticky_header` to replay "
        "its users' routing; it identifies them.",
    )
    redact_query: list[str] = Field(
        default_factory=list,
        description="Query parameter names or globs whose values are written as `***`, in "
        "addition to every name that looks secret (containing token, key, secret, password, "
        "auth, signature, session, ...).",
    )
    redact_fields: list[str] = Field(
        default_factory=list,
        description="JSON body fields written as `***`, in requests and answers: a key or glob "
        "matched at any depth (`email`, `*_ssn`), or a dotted path from the top with `*` for "
        "any key or index (`customer.email`, `inputs.*.0`).",
    )


class Simulation(_Strict):
    latency_tolerance_pct: float | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Slowdown of the candidate's p50 and p95 latency relative to the baseline "
        "that `serveops simulate` accepts, in percent. Unset: `rollout.analysis."
        "max_p95_regression_pct` when it is set, else the policy file's (`--thresholds`) or 5.",
    )
    max_error_rate_increase: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Largest error-rate increase `serveops simulate` accepts, in percentage "
        "points. Unset: `rollout.analysis.max_error_rate_increase` when it is set, else the "
        "policy file's or 0.5.",
    )
    min_agreement_pct: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Classification models: least share of identical predictions, in percent "
        "(the confidence interval decides). Unset: the policy file's or 99.",
    )
    max_out_of_tolerance_pct: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Regression models: greatest share of outputs that differ beyond the "
        "numeric tolerance, in percent. Unset: the policy file's or 1.",
    )
    max_output_psi: float | None = Field(
        default=None,
        ge=0,
        description="Output distribution shift (PSI) that fails. Unset: the policy file's or 0.25.",
    )
    max_input_psi: float | None = Field(
        default=None,
        ge=0,
        description="Input drift (PSI of any feature against the training data) that fails. "
        "Unset: the policy file's, else drift is reported, not gating.",
    )
    min_requests: int | None = Field(
        default=None,
        ge=1,
        description="Fewest paired requests for a latency decision; fewer are inconclusive. "
        "Unset: the policy file's or 200.",
    )


class Server(_Strict):
    import_path: str = Field(
        default=MODEL_IMPORT_PATH,
        pattern=IMPORT_PATH_PATTERN,
        description="The model server's code, as `package.module:builder`. The builder takes "
        "the version application's `args` (`model_uri`, `version`) and returns a Serve "
        f"application whose ingress deployment is named `{MODEL_DEPLOYMENT}` and has "
        '`predict(payload) -> {"status": int, "body": ...}` (the router calls it). The '
        "default is serveops' MLflow pyfunc server. The module must be importable on every "
        "Ray node (the image, or `pip`); policies decide which code may serve "
        "(`allowed-serving-code`).",
    )
    pip: list[str] = Field(
        default_factory=list,
        description="Python packages the server needs, installed by Ray into the replicas' "
        "runtime environment (`runtime_env.pip`), e.g. `fraud-serving==1.4.2`. Pin exact "
        "versions (`==`): a version range can change the code that serves without a commit.",
    )
    warmup: int | None = Field(
        default=None,
        ge=0,
        le=MAX_WARMUP_PREDICTIONS,
        description="Predictions each model replica of serveops' server runs while it loads, "
        "before Serve sends it traffic, on the model's logged input example (else one row of "
        "zeros shaped by its signature), so a canary's first users and a scaled-up replica's "
        "do not pay for a cold model. Unset: "
        f"{DEFAULT_WARMUP_PREDICTIONS}; `0` turns warm-up off.",
    )

    @field_validator("pip")
    @classmethod
    def _requirements(cls, values: list[str]) -> list[str]:
        for v in values:
            if not re.match(PIP_REQUIREMENT_PATTERN, v):
                raise ValueError(
                    f"{v!r} is not a pip requirement such as 'package==1.2.3' (no URLs, "
                    "paths or options)"
                )
        return values


class DeploymentSpec(_Strict):
    route: str = Field(
        pattern=ROUTE_PATTERN,
        max_length=MAX_ROUTE_LENGTH,
        description="HTTP path prefix the model answers on, e.g. `/fraud`; unique within the "
        "environment. Lowercase, no trailing slash.",
    )
    model: str = Field(
        pattern=MODEL_URI_PATTERN,
        max_length=MAX_MODEL_URI_LENGTH,
        description="MLflow registry URI: `models:/<name>/<version>` pins a version, "
        "`models:/<name>@<alias>` follows an alias, resolved to a version at plan time.",
    )
    replicas: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Fixed number of model replicas. Exclusive with `autoscaling`; 1 when "
        "neither is set.",
    )
    autoscaling: Autoscaling | None = Field(
        default=None, description="Let Ray Serve scale replicas between bounds."
    )
    resources: Resources = Field(
        default_factory=Resources, description="What each model replica reserves."
    )
    max_ongoing_requests: int = Field(
        default=8, ge=1, le=10000, description="Requests one replica handles at once."
    )
    max_queued_requests: int | None = Field(
        default=None,
        ge=0,
        le=100000,
        description="Most requests one replica may have waiting beyond "
        "`max_ongoing_requests`. With a fixed number of replicas the router also sheds by "
        "time: a request that would wait for a slot more than half of `request_timeout_s` "
        "(from how long requests now hold a slot) is answered 503 with Retry-After at once "
        "(during a canary, moved to the other version when that one has room) instead of a 504 "
        "when the timeout ends, so the queue is deep for a fast model and shallow for a slow "
        "one, and this count only caps the router's memory (default 1000). An autoscaled "
        "version has no router queue (Serve's autoscaler counts what waits in its handles): "
        "this count is its only bound (default 64).",
    )
    request_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="The router answers 504 when the model has not answered within this "
        "time. A request still waiting for a slot in the router's queue when its answer could "
        "no longer come within it (the time less twice the version's time per slot, at least "
        "half of it) is shed with 503 then instead.",
    )
    router_replicas: int = Field(
        default=1, ge=1, le=100, description="Replicas of the router that owns the route."
    )
    routing: Literal["router", "direct"] = Field(
        default="router",
        description="Who owns the route between rollouts. `router`: serveops' router, always "
        "(it records, sheds a full version at once with 503, and counts requests per version "
        "for `serveops status`). `direct`: the serving version's own application, one hop "
        "less (1.2x to 1.4x the router path's saturation throughput on 2 cores behind Serve's "
        "proxy, 1.9x behind HAProxy, while fewer requests are in flight than the replicas' "
        "`max_ongoing_requests`: past that, Serve's proxy retries with back-off and the "
        "router path answers more); the router takes the route for any change (a new "
        "version, a rollout) and hands it back once the new version runs alone "
        "(docs/rollouts.md). Not with `recording` or an A/B test, which need the router at "
        "all times.",
    )
    access_log: bool = Field(
        default=True,
        description="Ray Serve's access log: a line in the replica's log for every request "
        "this deployment's router and model replicas handle (Serve's "
        "`logging_config.enable_access_log`). `false` takes about 240 of the 350 bytes a "
        "request adds to Serve's logs out (the proxy's line stays: it is cluster-wide, Serve's "
        "own `logging_config`); it saved no CPU measurably (docs/benchmarks.md). serveops' "
        "per-version counters (`serveops status`, analysis) and recordings do not depend on "
        "it. Changed in place: the replicas keep running.",
    )
    server: Server = Field(
        default_factory=Server,
        description="The code that serves each model version. Unset: serveops' MLflow pyfunc "
        "server, which speaks MLflow's scoring protocol.",
    )
    rollout: Rollout = Field(
        default_factory=Rollout, description="How a change of `model` reaches traffic."
    )
    recording: Recording | None = Field(
        default=None,
        description="Record a sample of live requests and their answers for replay "
        "(`serveops replay`, `serveops simulate`). Unset: nothing is recorded.",
    )
    simulation: Simulation | None = Field(
        default=None,
        description="Thresholds `serveops simulate` judges a change of this deployment by; "
        "read from the base revision, so a change cannot loosen its own. Unset: defaults.",
    )
    monitoring: Monitoring | None = Field(
        default=None,
        description="Watch live inputs for drift against a reference, from the router's "
        "recordings (needs `recording`); see docs/monitoring.md. Unset: not monitored.",
    )
    model_updates: ModelUpdates | None = Field(
        default=None,
        description="New registered versions of `model` the controller proposes as a branch "
        "(and a pull request) when run with `--propose-every`; never applied without the usual "
        "gate. Needs `model` pinned to a version. Unset: none proposed.",
    )

    @model_validator(mode="after")
    def _scaling(self) -> DeploymentSpec:
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError("set either 'replicas' or 'autoscaling', not both")
        return self

    @model_validator(mode="after")
    def _monitored_from_recordings(self) -> DeploymentSpec:
        if self.monitoring is not None and self.recording is None:
            why = "monitoring reads the router's recordings: set 'recording' too"
            _raise_located([(("monitoring",), why, {})], "DeploymentSpec")
        return self

    @model_validator(mode="after")
    def _direct_routing_needs_no_router(self) -> DeploymentSpec:
        if self.routing != "direct":
            return self
        if self.recording is not None:
            why = "the router records requests; with routing 'direct' it does not see them"
            _raise_located([(("recording",), why, {})], "DeploymentSpec")
        if self.rollout.strategy == "ab":
            why = "an A/B test splits users in the router: routing 'direct' cannot"
            _raise_located([(("routing",), why, {})], "DeploymentSpec")
        return self

    @model_validator(mode="after")
    def _updates_need_a_pinned_model(self) -> DeploymentSpec:
        if self.model_updates is not None and parse_model_uri(self.model)[1] is None:
            why = "model_updates proposes versions: pin 'model' to one (models:/NAME/N)"
            _raise_located([(("model_updates",), why, {})], "DeploymentSpec")
        return self

    @model_validator(mode="after")
    def _variant_models(self) -> DeploymentSpec:
        """A/B: exactly one variant serves `model`, and no two serve the same model."""
        if self.rollout.strategy != "ab" or not self.rollout.variants:
            return self
        errors: list[tuple[tuple[str | int, ...], str, object]] = []
        first: dict[str, int] = {}
        for i, v in enumerate(self.rollout.variants):
            uri = v.model or self.model
            if uri in first:
                where: tuple[str | int, ...] = ("rollout", "variants", i)
                where += ("model",) if v.model else ()
                why = f"variants[{first[uri]}] already serves {uri}; each variant needs its own"
                errors.append((where, why, {}))
            first.setdefault(uri, i)
        if self.model not in first:
            why = (
                f"no variant serves spec.model ({self.model}); leave 'model' out on the variant "
                "that serves it"
            )
            errors.append((("rollout", "variants"), why, {}))
        _raise_located(errors, "DeploymentSpec")
        return self


class ModelDeployment(_Strict):
    """One model deployment: a route served by a model version from the MLflow registry."""

    apiVersion: Literal["serveops.dev/v1alpha1"] = Field(
        description=f"Schema version of this file; `{API_VERSION}`."
    )
    kind: Literal["ModelDeployment"] = Field(description=f"Always `{KIND}`.")
    metadata: Metadata = Field(description="Who and where: name, environment, owner, labels.")
    spec: DeploymentSpec = Field(description="What serves: route, model, scale, rollout.")


def _raise_located(errors: list[tuple[tuple[str | int, ...], str, object]], title: str) -> None:
    """Raise `errors` (field path relative to the model validated, message, input) as one
    validation error, so each problem is reported at its own field's line."""
    if not errors:
        return
    details = [
        InitErrorDetails(
            type=PydanticCustomError("value_error", "{message}", {"message": message}),
            loc=loc,
            input=value,
        )
        for loc, message, value in errors
    ]
    raise ValidationError.from_exception_data(title, details)


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """Split `models:/name/7` or `models:/name@alias` into (name, version, alias)."""
    match = re.match(MODEL_URI_PATTERN, uri)
    if match is None:
        raise ValueError(f"not an MLflow registry URI: {uri!r}")
    return match[1], match[2], match[3]

"""Specs to Serve applications: one per model version, plus one router per deployment.

Pure: the same specs and resolved versions always render the same configs, so a plan is a plain
diff of dicts. The output is what Ray's REST API takes (`ServeApplicationSchema`).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

from controller.cluster.serving_code import INSTALLED, ServingCode
from controller.errors import BadInput, Location, Problem, ValidationFailed
from controller.redact import strip_userinfo
from controller.registry.mlflow import ModelNotFound, Registry, ResolvedModel
from controller.serving.protocol import (
    MARKER_KEY,
    MODEL_DEPLOYMENT,
    ROUTER_DEPLOYMENT,
    ROUTER_IMPORT_PATH,
    ROUTER_MAX_ONGOING,
    ABTest,
    RecordingConfig,
    RolloutNote,
    RouterConfig,
    Target,
)
from controller.spec.manifest import Manifest
from controller.spec.models import (
    RECORDING_DENY_HEADERS,
    DeploymentSpec,
    ModelDeployment,
    Recording,
)

AppConfig = dict[str, Any]

# The router only forwards; a small fixed reservation keeps it schedulable on small machines.
ROUTER_NUM_CPUS = 0.05
# A restart in place (new resources, say) starts replacements before stopping old replicas;
# Serve's default of 0 would stop a single replica first and drop its traffic meanwhile.
MAX_SURGE_PERCENT = 100
# Set on a deployment only when its spec turns the access log off: unset, configs stay as they
# were. Serve reconfigures a deployment's logging in place (no replica restarts).
ACCESS_LOG_OFF: dict[str, Any] = {"enable_access_log": False}


# Replicas' MLflow credentials by reference, never by value (docs/security.md): variables the
# operator puts on every Ray node, named here as `REPLICA_VAR=NODE_VAR,...`; each is rendered
# as `REPLICA_VAR: ${NODE_VAR}`, which Ray expands on the node. Unset: replicas inherit the
# node's environment as it is (MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN set there just work).
CREDENTIAL_ENV = "SERVEOPS_REPLICA_CREDENTIAL_ENV"


def credential_refs(spec: str | None = None) -> tuple[tuple[str, str], ...]:
    """`MLFLOW_TRACKING_TOKEN=NODE_MLFLOW_TOKEN,...` (default: $SERVEOPS_REPLICA_CREDENTIAL_ENV)
    as (replica variable, node variable) pairs."""
    text = os.environ.get(CREDENTIAL_ENV, "") if spec is None else spec
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, ref = item.partition("=")
        if not (_ENV_NAME.match(name) and _ENV_NAME.match(ref or name)):
            raise BadInput(f"${CREDENTIAL_ENV}: {item!r} is not VAR=NODE_VAR")
        pairs.append((name, ref or name))
    return tuple(pairs)


_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


@dataclass(frozen=True)
class RenderSettings:
    # Given to model replicas as MLFLOW_TRACKING_URI, without its userinfo: credentials never
    # reach Serve's config (see `credentials`).
    tracking_uri: str | None = None
    serving_code: ServingCode = INSTALLED  # where the nodes import controller.serving from
    credentials: tuple[tuple[str, str], ...] = field(default_factory=credential_refs)
    pin_key: str | None = None  # public key of the controller's pin signer, for routers


@dataclass(frozen=True)
class DesiredDeployment:
    name: str
    path: str
    model: ResolvedModel
    apps: list[AppConfig]
    routing: str = "router"  # spec.routing: who owns the route between rollouts (sync/routes.py)


@dataclass
class DesiredState:
    environment: str
    deployments: dict[str, DesiredDeployment] = field(default_factory=dict)

    @property
    def apps(self) -> list[AppConfig]:
        return [app for d in self.deployments.values() for app in d.apps]


def version_app_name(deployment: str, version: str) -> str:
    return f"{deployment}--v{version}"


def marker(environment: str, deployment: str, role: str) -> dict[str, str]:
    return {"environment": environment, "deployment": deployment, "role": role}


def render_version_app(
    dep: ModelDeployment, model: ResolvedModel, settings: RenderSettings
) -> AppConfig:
    spec, meta = dep.spec, dep.metadata
    actor: dict[str, Any] = {"num_cpus": spec.resources.num_cpus}
    if spec.resources.num_gpus:
        actor["num_gpus"] = spec.resources.num_gpus
    if spec.resources.memory_mb:
        actor["memory"] = spec.resources.memory_mb * 1024 * 1024
    deployment: dict[str, Any] = {
        "name": MODEL_DEPLOYMENT,
        "max_ongoing_requests": spec.max_ongoing_requests,
        "max_surge_percent": MAX_SURGE_PERCENT,
        "ray_actor_options": actor,
    }
    if not spec.access_log:
        deployment["logging_config"] = dict(ACCESS_LOG_OFF)
    if spec.autoscaling is not None:
        deployment["autoscaling_config"] = spec.autoscaling.model_dump()
    else:
        deployment["num_replicas"] = spec.replicas or 1
    app: AppConfig = {
        "name": version_app_name(meta.name, model.version),
        "route_prefix": None,  # reached only through the router's handle
        "import_path": spec.server.import_path,
        "args": {
            "model_uri": model.pinned_uri,
            "version": model.version,
            MARKER_KEY: marker(meta.environment, meta.name, "version"),
        },
        "deployments": [deployment],
    }
    if spec.server.warmup is not None:  # unset: the server's default, and configs unchanged
        app["args"]["warmup"] = spec.server.warmup
    runtime_env = settings.serving_code.runtime_env()
    env_vars = {name: f"${{{ref}}}" for name, ref in settings.credentials}
    if settings.tracking_uri:
        env_vars["MLFLOW_TRACKING_URI"] = strip_userinfo(settings.tracking_uri)
    if env_vars:
        runtime_env["env_vars"] = env_vars
    if spec.server.pip:
        runtime_env["pip"] = [*runtime_env.get("pip", []), *spec.server.pip]
    if runtime_env:
        app["runtime_env"] = runtime_env
    return app


def recording_config(recording: Recording | None) -> RecordingConfig | None:
    """The router's recording settings: the spec's, with the built-in deny list first."""
    if recording is None:
        return None
    extra = [h.lower() for h in recording.deny_headers if h.lower() not in RECORDING_DENY_HEADERS]
    return RecordingConfig(
        sample_rate=recording.sample_rate,
        dir=recording.dir,
        max_file_mb=recording.max_file_mb,
        keep_files=recording.keep_files,
        queue_size=recording.queue_size,
        deny_headers=[*RECORDING_DENY_HEADERS, *extra],
        allow_headers=[h.lower() for h in recording.headers],
        redact_query=[q.lower() for q in recording.redact_query],
        redact_fields=list(recording.redact_fields),
        max_total_mb=recording.max_total_mb,
    )


# `max_queued_requests` by default: with a fixed size the router's wait bound governs and this
# only caps its memory; an autoscaled version has no router queue, so the count is its bound.
QUEUED_FIXED = 1000
QUEUED_AUTOSCALED = 64


def max_in_flight(spec: DeploymentSpec) -> int:
    """What one router replica may have in flight to a version of this deployment: the
    version's replicas (the autoscaling maximum) times what each runs and queues, shared by the
    router replicas. Beyond it the router sheds (controller/serving/pressure.py)."""
    replicas = spec.autoscaling.max_replicas if spec.autoscaling else (spec.replicas or 1)
    queued = spec.max_queued_requests
    if queued is None:
        queued = QUEUED_AUTOSCALED if spec.autoscaling else QUEUED_FIXED
    per_replica = spec.max_ongoing_requests + queued
    return max(1, math.ceil(replicas * per_replica / spec.router_replicas))


def max_running(spec: DeploymentSpec) -> int | None:
    """What one router replica hands a version's replicas at once: their slots
    (`max_ongoing_requests` each), shared by the router replicas; the router queues the rest
    itself (controller/serving/slots.py). None for an autoscaled version: Serve's autoscaler
    sizes it by what waits in Serve's handles, which a router-side queue would hide."""
    if spec.autoscaling is not None:
        return None
    return max(
        1, math.ceil((spec.replicas or 1) * spec.max_ongoing_requests / spec.router_replicas)
    )


def bounded(targets: list[Target], bound: int, running: int | None = None) -> list[Target]:
    """`targets` with `max_in_flight` (and `max_running`) set where they are not."""
    out = []
    for t in targets:
        update: dict[str, int] = {}
        if not t.max_in_flight:
            update["max_in_flight"] = bound
        if running is not None and not t.max_running:
            update["max_running"] = min(running, t.max_in_flight or bound)
        out.append(t.model_copy(update=update) if update else t)
    return out


def render_router_app(
    dep: ModelDeployment,
    targets: list[Target],
    revision: str | None = None,
    *,
    shadow: list[Target] | None = None,
    rollout: RolloutNote | None = None,
    ab: ABTest | None = None,
    runtime_env: dict[str, Any] | None = None,
    pin_key: str | None = None,
) -> AppConfig:
    spec, meta = dep.spec, dep.metadata
    bound, running = max_in_flight(spec), max_running(spec)
    config = RouterConfig(
        deployment=meta.name,
        targets=bounded(targets, bound, running),
        timeout_s=spec.request_timeout_s,
        revision=revision,
        shadow=bounded(shadow or [], bound, running),
        rollout=rollout,
        ab=ab,
        recording=recording_config(spec.recording),
        pin_keys=[pin_key] if pin_key else [],
    )
    user_config = config.model_dump()
    # Only rollouts and A/B set these; a steady router's config stays as it always was.
    for key in ("shadow", "rollout", "ab", "recording", "pin_keys"):
        if not user_config[key]:
            del user_config[key]
    app: AppConfig = {
        "name": meta.name,
        "route_prefix": spec.route,
        "import_path": ROUTER_IMPORT_PATH,
        "args": {MARKER_KEY: marker(meta.environment, meta.name, "router")},
        "deployments": [
            {
                "name": ROUTER_DEPLOYMENT,
                "num_replicas": spec.router_replicas,
                "max_ongoing_requests": ROUTER_MAX_ONGOING,
                "max_surge_percent": MAX_SURGE_PERCENT,
                "ray_actor_options": {"num_cpus": ROUTER_NUM_CPUS},
                "user_config": user_config,
                **({} if spec.access_log else {"logging_config": dict(ACCESS_LOG_OFF)}),
            }
        ],
    }
    if runtime_env:
        app["runtime_env"] = runtime_env
    return app


def render_deployment(
    dep: ModelDeployment,
    model: ResolvedModel,
    settings: RenderSettings,
    revision: str | None = None,
) -> list[AppConfig]:
    """The steady state of one deployment: its model version takes all the traffic."""
    version_app = render_version_app(dep, model, settings)
    target = Target(app=version_app["name"], version=model.version, weight=100)
    code = settings.serving_code.runtime_env()
    router = render_router_app(dep, [target], revision, runtime_env=code, pin_key=settings.pin_key)
    return [version_app, router]


def render_ab(
    dep: ModelDeployment,
    variants: list[tuple[str, ResolvedModel, int]],
    settings: RenderSettings,
    revision: str | None = None,
) -> list[AppConfig]:
    """An A/B deployment: one application per variant (name, model, weight), and a router that
    splits users across them by a hash of `sticky_header`."""
    apps = [render_version_app(dep, model, settings) for _, model, _ in variants]
    targets = [
        Target(app=app["name"], version=model.version, weight=weight)
        for app, (_, model, weight) in zip(apps, variants, strict=True)
    ]
    header = dep.spec.rollout.sticky_header
    assert header is not None  # the spec requires it for strategy 'ab'
    ab = ABTest(
        header=header,
        variants={app["name"]: name for app, (name, _, _) in zip(apps, variants, strict=True)},
    )
    code = settings.serving_code.runtime_env()
    router = render_router_app(
        dep, targets, revision, ab=ab, runtime_env=code, pin_key=settings.pin_key
    )
    return [*apps, router]


def _resolve_variants(
    m: Manifest, model: ResolvedModel, registry: Registry, problems: list[Problem]
) -> list[tuple[str, ResolvedModel, int]] | None:
    """Each variant's model resolved (`spec.model` when it names none); None on a problem."""
    resolved: list[tuple[str, ResolvedModel, int]] = []
    served: dict[str, int] = {}
    ok = True
    for i, v in enumerate(m.deployment.spec.rollout.variants):
        field = ("spec", "rollout", "variants", i, "model")
        where = Location(m.path, m.line_of(*field), f"spec.rollout.variants[{i}].model")
        try:
            vmodel = registry.resolve(v.model) if v.model else model
        except ModelNotFound as err:
            problems.append(Problem(where, err.message))
            ok = False
            continue
        if vmodel.version in served:
            problems.append(
                Problem(
                    where,
                    f"{v.model or model.uri} resolves to version {vmodel.version}, which "
                    f"variants[{served[vmodel.version]}] serves already",
                )
            )
            ok = False
        served.setdefault(vmodel.version, i)
        resolved.append((v.name, vmodel, v.weight))
    return resolved if ok else None


def render_environment(
    environment: str,
    manifests: list[Manifest],
    registry: Registry,
    settings: RenderSettings,
) -> DesiredState:
    """Resolve every model reference, then render. All missing models are reported at once."""
    desired = DesiredState(environment)
    problems: list[Problem] = []
    for m in manifests:
        try:
            model = registry.resolve(m.deployment.spec.model)
        except ModelNotFound as err:
            where = Location(m.path, m.line_of("spec", "model"), "spec.model")
            problems.append(Problem(where, err.message))
            continue
        if m.deployment.spec.rollout.strategy == "ab":
            variants = _resolve_variants(m, model, registry, problems)
            if variants is None:
                continue
            apps = render_ab(m.deployment, variants, settings)
        else:
            apps = render_deployment(m.deployment, model, settings)
        desired.deployments[m.name] = DesiredDeployment(
            m.name, m.path, model, apps, m.deployment.spec.routing
        )
    if problems:
        raise ValidationFailed(problems)
    return desired

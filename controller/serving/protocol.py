"""What the controller and the serving code agree on: names, headers, and the router's config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

VERSION_HEADER = "x-serveops-version"  # model version that answered
DEPLOYMENT_HEADER = "x-serveops-deployment"
MARKER_KEY = "serveops"  # key under an application's `args` marking it as ours

ROUTER_IMPORT_PATH = "controller.serving.router:build"
MODEL_IMPORT_PATH = "controller.serving.model:build"
ROUTER_DEPLOYMENT = "Router"
MODEL_DEPLOYMENT = "ModelServer"


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid")

    app: str = Field(description="Serve application of one model version, e.g. `fraud--v7`.")
    version: str = Field(description="Registry version it serves, echoed in the response header.")
    weight: float = Field(ge=0, le=100, description="Share of traffic, in percent.")


class RouterConfig(BaseModel):
    """The router's `user_config`. Changing it calls `reconfigure()`; no replica restarts."""

    model_config = ConfigDict(extra="forbid")

    deployment: str
    targets: list[Target]
    fallback: list[Target] = Field(
        default_factory=list,
        description="Versions that serve while none of `targets` is RUNNING: the previous "
        "versions during a switch, so traffic moves the moment the new version can take it.",
    )
    timeout_s: float = Field(gt=0)
    revision: str | None = Field(
        default=None, description="Git commit that last changed this deployment (not diffed)."
    )

"""Pinned requests: a request may name the model version it wants (rollout smoke hooks do).

Kept apart from the router's weighted choice: a pin is honoured only for a version the router
already routes or mirrors to and that is RUNNING, whatever its weight (a candidate at 0%, or one
only mirrored to in a blue-green preview). Otherwise the request is routed as any other, and the
answer's `x-serveops-version` shows which version spoke.
"""

from __future__ import annotations

from collections.abc import Mapping

from controller.serving.protocol import RouterConfig, Target

PIN_HEADER = "x-serveops-pin-version"


def pinned(config: RouterConfig, running: set[str], headers: Mapping[str, str]) -> Target | None:
    """The target the request pins, if it pins one the router knows and can reach."""
    version = headers.get(PIN_HEADER)
    if not version:
        return None
    for target in [*config.targets, *config.shadow]:
        if target.version == version and target.app in running:
            return target
    return None


def awaits_status(config: RouterConfig, running: set[str], headers: Mapping[str, str]) -> bool:
    """The request pins a version the router routes or mirrors to but has not seen RUNNING yet:
    worth a fresh status read before routing it as any other (the poll may just be behind)."""
    version = headers.get(PIN_HEADER)
    return bool(version) and any(
        t.version == version and t.app not in running for t in [*config.targets, *config.shadow]
    )

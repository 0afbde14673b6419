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


def _named(config: RouterConfig, headers: Mapping[str, str]) -> list[Target]:
    """The targets and shadows of the version the request pins (none without a pin)."""
    version = headers.get(PIN_HEADER)
    if not version:
        return []
    return [t for t in [*config.targets, *config.shadow] if t.version == version]


def pinned(config: RouterConfig, running: set[str], headers: Mapping[str, str]) -> Target | None:
    """The target the request pins, if it pins one the router knows and can reach."""
    return next((t for t in _named(config, headers) if t.app in running), None)


def awaits_status(config: RouterConfig, running: set[str], headers: Mapping[str, str]) -> bool:
    """The request pins a version the router routes or mirrors to but has not seen RUNNING yet:
    worth a fresh status read before routing it as any other (the poll may just be behind)."""
    return any(t.app not in running for t in _named(config, headers))

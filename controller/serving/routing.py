"""Which version a request goes to: weighted and sticky (A/B) picks among RUNNING targets, the
mirrors a request is copied to, and the applications routable at all. Pure functions of the
router's config, so the router (router.py) and the tests share them without Ray."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from controller.serving.protocol import RouterConfig, Target


def pick(config: RouterConfig, running: set[str], rand: float) -> Target | None:
    """Weighted choice among RUNNING targets, else among RUNNING fallbacks; `rand` in [0, 1)."""
    return _weighted(config.targets, running, rand) or _weighted(config.fallback, running, rand)


def choose(
    config: RouterConfig, running: set[str], headers: Mapping[str, str], rand: float
) -> Target | None:
    """The target of one request: for A/B, sticky by the hash of the header's value when the
    request carries it; otherwise (and for every other router) `pick` with `rand`."""
    value = headers.get(config.ab.header) if config.ab is not None else None
    if value:
        return pick_sticky(config, running, sticky_point(value, config.deployment))
    return pick(config, running, rand)


def sticky_point(value: str, deployment: str) -> float:
    """A point in [0, 1) that depends only on the header value (and the deployment, so two
    A/B deployments split users independently): the same in every router replica and process,
    unlike Python's salted `hash()`."""
    digest = hashlib.blake2b(value.encode(), digest_size=8, key=deployment.encode()[:64])
    return int.from_bytes(digest.digest(), "big") / 2**64


def pick_sticky(config: RouterConfig, running: set[str], point: float) -> Target | None:
    """The variant whose share of the cumulative weights holds `point`. When that variant is
    not RUNNING: the version it replaces (a `fallback` during a switch), else the same point over
    the RUNNING variants; only its own users move, and back once it runs. A weight change moves
    only the users whose point changes sides of a boundary."""
    chosen = _weighted(config.targets, {t.app for t in config.targets}, point)
    if chosen is not None and chosen.app in running:
        return chosen
    return _weighted(config.fallback, running, point) or pick(config, running, point)


def routable(previous: set[str], statuses: dict[str, str]) -> set[str]:
    """Applications the router may send to: RUNNING ones, and ones it saw RUNNING that Serve
    now reports DEPLOYING. Serve marks every application of a config PUT DEPLOYING until its
    next control loop, changed or not, and an application updated in place keeps serving from
    its old replicas meanwhile; dropping it would answer 503 for a status poll. A new
    application is routed to only once it is RUNNING."""
    return {
        name
        for name, status in statuses.items()
        if status == "RUNNING" or (status == "DEPLOYING" and name in previous)
    }


def mirrored(config: RouterConfig | None, running: set[str]) -> frozenset[str]:
    """The shadow applications a request may be copied to now: the RUNNING ones."""
    return frozenset(t.app for t in config.shadow if t.app in running) if config else frozenset()


def mirrors(config: RouterConfig, running: set[str], rand: float) -> list[Target]:
    """Shadow targets this request is copied to: each RUNNING one with probability weight%."""
    return [t for t in config.shadow if t.app in running and rand * 100 < t.weight]


def _weighted(targets: list[Target], running: set[str], rand: float) -> Target | None:
    live = [t for t in targets if t.app in running and t.weight > 0]
    total = sum(t.weight for t in live)
    if total <= 0:
        return None
    point = rand * total
    for t in live:
        point -= t.weight
        if point < 0:
            return t
    return live[-1]

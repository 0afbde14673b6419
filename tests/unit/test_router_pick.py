"""The router's weighted choice (pure; the Ray-backed router is covered end to end)."""

from __future__ import annotations

from collections import Counter

from controller.serving.protocol import RouterConfig, Target
from controller.serving.routing import pick

V1 = Target(app="fraud--v1", version="1", weight=90)
V2 = Target(app="fraud--v2", version="2", weight=10)
V3 = Target(app="fraud--v3", version="3", weight=100)


def config(targets: list[Target], fallback: list[Target] | None = None) -> RouterConfig:
    return RouterConfig(deployment="fraud", targets=targets, fallback=fallback or [], timeout_s=1)


def version(c: RouterConfig, running: set[str], rand: float) -> str | None:
    target = pick(c, running, rand)
    return target.version if target else None


def test_weights_split_traffic() -> None:
    both = {V1.app, V2.app}
    counts = Counter(version(config([V1, V2]), both, i / 1000) for i in range(1000))
    assert counts == {"1": 900, "2": 100}


def test_only_running_versions_get_traffic() -> None:
    assert {version(config([V1, V2]), {V2.app}, i / 10) for i in range(10)} == {"2"}


def test_fallback_serves_until_a_target_runs() -> None:
    switching = config([V3], fallback=[V1])
    assert version(switching, {V1.app}, 0.5) == "1"
    assert version(switching, {V1.app, V3.app}, 0.5) == "3"  # switches the moment v3 runs


def test_nothing_running_means_no_target() -> None:
    assert pick(config([V1, V2], [V3]), set(), 0.5) is None
    assert pick(config([V1.model_copy(update={"weight": 0})]), {V1.app}, 0.5) is None

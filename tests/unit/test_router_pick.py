"""The router's weighted choice (pure; the Ray-backed router is covered end to end)."""

from __future__ import annotations

from collections import Counter

from controller.serving.protocol import Target
from controller.serving.router import pick

V1 = Target(app="fraud--v1", version="1", weight=90)
V2 = Target(app="fraud--v2", version="2", weight=10)


def test_weights_split_traffic() -> None:
    counts = Counter(pick([V1, V2], {V1.app, V2.app}, i / 1000).version for i in range(1000))
    assert counts == {"1": 900, "2": 100}


def test_only_running_versions_get_traffic() -> None:
    assert {pick([V1, V2], {V2.app}, i / 10).version for i in range(10)} == {"2"}


def test_nothing_running_means_no_target() -> None:
    assert pick([V1, V2], set(), 0.5) is None
    assert pick([V1.model_copy(update={"weight": 0})], {V1.app}, 0.5) is None

"""The id of a router's weights, echoed in `x-serveops-routing` (pure)."""

from __future__ import annotations

from controller.serving.protocol import Target, routing_id


def targets(*weights: tuple[str, float]) -> list[Target]:
    return [Target(app=app, version=app[-1], weight=w) for app, w in weights]


def test_the_same_weights_in_any_order_have_the_same_id() -> None:
    a = routing_id(targets(("fraud--v1", 90), ("fraud--v2", 10)))
    assert a == routing_id(targets(("fraud--v2", 10), ("fraud--v1", 90)))
    assert len(a) == 12


def test_a_weight_change_changes_the_id() -> None:
    before = routing_id(targets(("fraud--v1", 90), ("fraud--v2", 10)))
    assert before != routing_id(targets(("fraud--v1", 80), ("fraud--v2", 20)))
    assert before != routing_id(targets(("fraud--v1", 90), ("fraud--v3", 10)))

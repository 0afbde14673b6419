"""A/B variants: spec validation, rendering, the plan, and the router's sticky choice.

Pure functions only (no Ray); the Ray-backed router is covered in tests/e2e/test_ab.py.
"""

from __future__ import annotations

import copy
from collections import Counter

import pytest
from ray.serve.schema import ServeDeploySchema

from controller.cluster.live import LiveState
from controller.cluster.render import DesiredState, RenderSettings, render_environment
from controller.errors import ValidationFailed
from controller.registry.mlflow import FixedRegistry
from controller.serving.protocol import ABTest, RouterConfig, Target
from controller.serving.routing import choose, pick_sticky, sticky_point
from controller.spec.manifest import load_manifests
from controller.sync.plan import Plan, Source, make_plan
from tests.support import deployment_yaml

PATH = "deployments/staging/fraud.yaml"
REGISTRY = FixedRegistry({"fraud": {"7": "7", "8": "8", "9": "9", "@champion": "8"}})
SOURCE = Source(repo="/repo", rev="main", commit="c0ffee" * 6 + "abcd")


def ab_yaml(
    variants: str = "[{name: control, weight: 50}, {name: treatment, model: 'models:/fraud/8', weight: 50}]",
    header: str = "x-user-id",
    extra: str = "",
) -> str:
    return deployment_yaml(
        model="models:/fraud/7",
        extra_spec=f"""\
        rollout:
          strategy: ab
          sticky_header: {header}
          variants: {variants}
        """
        + extra,
    )


def problems(text: str) -> list[str]:
    with pytest.raises(ValidationFailed) as info:
        load_manifests({PATH: text})
    return [str(p) for p in info.value.problems]


def render(text: str) -> DesiredState:
    return render_environment("staging", load_manifests({PATH: text}), REGISTRY, RenderSettings())


def router_config(state: DesiredState) -> RouterConfig:
    router = next(a for a in state.apps if a["name"] == "fraud")
    return RouterConfig.model_validate(router["deployments"][0]["user_config"])


# --- spec validation: every problem at its file, line and field ---------------------------------


def test_valid_ab_spec_loads() -> None:
    [m] = load_manifests({PATH: ab_yaml(header="X-User-Id")})
    rollout = m.deployment.spec.rollout
    assert rollout.strategy == "ab"
    assert rollout.sticky_header == "x-user-id"  # header names are case-insensitive
    assert [(v.name, v.model, v.weight) for v in rollout.variants] == [
        ("control", None, 50),
        ("treatment", "models:/fraud/8", 50),
    ]


def test_weights_must_add_up_to_100() -> None:
    text = ab_yaml("[{name: a, weight: 50}, {name: b, model: 'models:/fraud/8', weight: 40}]")
    assert problems(text) == [
        f"{PATH}:16: spec.rollout.variants: variant weights add up to 90, not 100"
    ]


def test_duplicate_variant_names_point_at_the_second_one() -> None:
    text = ab_yaml(
        """
            - name: a
              weight: 50
            - name: a
              model: models:/fraud/8
              weight: 50"""
    )
    assert problems(text) == [
        f"{PATH}:19: spec.rollout.variants[1].name: variant name 'a' is already used by variants[0]"
    ]


def test_two_variants_serving_the_same_model_is_an_error() -> None:
    text = ab_yaml(
        """
            - name: a
              weight: 50
            - name: b
              model: models:/fraud/7
              weight: 50"""
    )
    assert problems(text) == [
        f"{PATH}:20: spec.rollout.variants[1].model: variants[0] already serves "
        "models:/fraud/7; each variant needs its own"
    ]


def test_one_variant_must_serve_spec_model() -> None:
    text = ab_yaml(
        "[{name: a, model: 'models:/fraud/8', weight: 50}, "
        "{name: b, model: 'models:/fraud/9', weight: 50}]"
    )
    assert problems(text) == [
        f"{PATH}:16: spec.rollout.variants: no variant serves spec.model (models:/fraud/7); "
        "leave 'model' out on the variant that serves it"
    ]


@pytest.mark.parametrize("header", ["content-type", "Host", "x-serveops-version"])
def test_sticky_header_must_tell_users_apart(header: str) -> None:
    [p] = problems(ab_yaml(header=header))
    assert p.startswith(f"{PATH}:15: spec.rollout.sticky_header: header {header.lower()!r}")
    assert "cannot tell users apart" in p


def test_sticky_header_must_be_a_header_name() -> None:
    [p] = problems(ab_yaml(header="'x user'"))
    assert p == (
        f"{PATH}:15: spec.rollout.sticky_header: sticky_header must be an HTTP header name "
        "such as x-user-id (got 'x user')"
    )


def test_ab_needs_two_variants_and_a_header() -> None:
    text = deployment_yaml(
        extra_spec="rollout: {strategy: ab, variants: [{name: a, weight: 100}]}\n"
    )
    assert problems(text) == [
        f"{PATH}:13: spec.rollout.variants: strategy 'ab' needs at least two variants",
        f"{PATH}:13: spec.rollout.sticky_header: strategy 'ab' needs 'sticky_header': the "
        "request header that identifies a user",
    ]


def test_all_ab_problems_are_reported_at_once() -> None:
    text = ab_yaml(
        "[{name: a, weight: 50}, {name: a, model: 'models:/fraud/8', weight: 10}]",
        header="content-length",
        extra="  analysis: {min_requests: 10}\n",
    )
    found = problems(text)
    assert [p.split(": ")[1] for p in found] == [
        "spec.rollout.sticky_header",
        "spec.rollout.analysis",
        "spec.rollout.variants[1].name",
        "spec.rollout.variants",
    ]


def test_variants_only_apply_to_ab() -> None:
    text = deployment_yaml(
        extra_spec="rollout: {strategy: immediate, sticky_header: x-user, "
        "variants: [{name: a, weight: 100}]}\n"
    )
    assert problems(text) == [
        f"{PATH}:13: spec.rollout.variants: 'variants' only applies to strategy 'ab', not "
        "'immediate'",
        f"{PATH}:13: spec.rollout.sticky_header: 'sticky_header' only applies to strategy 'ab', "
        "not 'immediate'",
    ]


def test_variant_weight_out_of_range() -> None:
    text = ab_yaml("[{name: a, weight: 150}, {name: b, model: 'models:/fraud/8', weight: -50}]")
    found = problems(text)
    assert [p.split(": ")[:2] for p in found] == [
        [f"{PATH}:16", "spec.rollout.variants[0].weight"],
        [f"{PATH}:16", "spec.rollout.variants[1].weight"],
    ]


# --- render -------------------------------------------------------------------------------------


def test_render_one_app_per_variant_and_a_sticky_router() -> None:
    state = render(ab_yaml())
    assert [a["name"] for a in state.apps] == ["fraud--v7", "fraud--v8", "fraud"]
    ServeDeploySchema.model_validate({"applications": state.apps})  # Ray's own schema
    config = router_config(state)
    assert [(t.app, t.version, t.weight) for t in config.targets] == [
        ("fraud--v7", "7", 50),
        ("fraud--v8", "8", 50),
    ]
    assert config.ab == ABTest(
        header="x-user-id", variants={"fraud--v7": "control", "fraud--v8": "treatment"}
    )
    assert state.deployments["fraud"].model.version == "7"  # spec.model


def test_variant_aliases_resolve_and_must_not_collide() -> None:
    text = ab_yaml(
        "[{name: a, weight: 50}, {name: b, model: 'models:/fraud@champion', weight: 50}]"
    )
    assert [t.version for t in router_config(render(text)).targets] == ["7", "8"]
    text = ab_yaml(
        "[{name: a, weight: 40}, {name: b, model: 'models:/fraud/8', weight: 30}, "
        "{name: c, model: 'models:/fraud@champion', weight: 30}]"
    )
    with pytest.raises(ValidationFailed) as info:
        render(text)
    assert [str(p) for p in info.value.problems] == [
        f"{PATH}:16: spec.rollout.variants[2].model: models:/fraud@champion resolves to version "
        "8, which variants[1] serves already"
    ]


def test_unknown_variant_model_names_its_field() -> None:
    text = ab_yaml("[{name: a, weight: 50}, {name: b, model: 'models:/fraud/99', weight: 50}]")
    with pytest.raises(ValidationFailed) as info:
        render(text)
    [p] = info.value.problems
    assert str(p).startswith(f"{PATH}:16: spec.rollout.variants[1].model: ")


def test_a_steady_router_has_no_ab_key() -> None:
    state = render(deployment_yaml(model="models:/fraud/7"))
    router = next(a for a in state.apps if a["name"] == "fraud")
    assert "ab" not in router["deployments"][0]["user_config"]


# --- plan: a weight change is a reconfigure -----------------------------------------------------


def live_of(apps: list[dict]) -> LiveState:
    return LiveState.from_api(
        {
            "applications": {
                a["name"]: {"status": "RUNNING", "deployed_app_config": copy.deepcopy(a)}
                for a in apps
            }
        }
    )


def plan(state: DesiredState, live: LiveState) -> Plan:
    return make_plan(state, live, source=SOURCE, address="http://ray:8265")


def test_changing_variant_weights_only_reconfigures_the_router() -> None:
    before = plan(render(ab_yaml()), live_of([]))
    live = live_of(before.desired)
    text = ab_yaml(
        "[{name: control, weight: 80}, {name: treatment, model: 'models:/fraud/8', weight: 20}]"
    )
    after = plan(render(text), live)
    assert [(a.op, a.app, a.effect) for a in after.actions] == [("update", "fraud", "reconfigure")]
    [change] = after.actions[0].changes
    assert change.path == "deployments[Router].user_config.targets"
    assert change.effect == "reconfigure"


def test_adding_a_variant_starts_its_version_and_reconfigures_the_router() -> None:
    live = live_of(plan(render(ab_yaml()), live_of([])).desired)
    text = ab_yaml(
        "[{name: control, weight: 50}, {name: treatment, model: 'models:/fraud/8', weight: 30}, "
        "{name: third, model: 'models:/fraud/9', weight: 20}]"
    )
    after = plan(render(text), live)
    assert [(a.op, a.app, a.effect) for a in after.actions] == [
        ("create", "fraud--v9", "start"),
        ("update", "fraud", "reconfigure"),
    ]


# --- the router's choice ------------------------------------------------------------------------

A = Target(app="fraud--v7", version="7", weight=50)
B = Target(app="fraud--v8", version="8", weight=50)
BOTH = {A.app, B.app}


def ab_config(*targets: Target) -> RouterConfig:
    return RouterConfig(
        deployment="fraud",
        targets=list(targets),
        timeout_s=1,
        ab=ABTest(header="x-user-id", variants={A.app: "control", B.app: "treatment"}),
    )


def version(target: Target | None) -> str | None:
    return target.version if target else None


def test_the_same_header_value_always_gets_the_same_variant() -> None:
    config = ab_config(A, B)
    for user in ("alice", "bob", "carol", "user-42"):
        seen = {version(choose(config, BOTH, {"x-user-id": user}, rand / 10)) for rand in range(10)}
        assert len(seen) == 1, user


def test_the_hash_is_stable_across_processes() -> None:
    # blake2b of the value keyed by the deployment: a fixed number, unlike Python's hash().
    assert sticky_point("alice", "fraud") == pytest.approx(0.9827184243387848)
    assert sticky_point("alice", "fraud") != sticky_point("alice", "churn")


def test_users_split_by_the_weights() -> None:
    config = ab_config(A.model_copy(update={"weight": 80}), B.model_copy(update={"weight": 20}))
    counts = Counter(
        version(choose(config, BOTH, {"x-user-id": f"user-{i}"}, 0.0)) for i in range(10_000)
    )
    assert counts.keys() == {"7", "8"}
    assert 0.77 < counts["7"] / 10_000 < 0.83


def test_requests_without_the_header_are_split_at_random_by_weight() -> None:
    config = ab_config(A, B)
    counts = Counter(version(choose(config, BOTH, {}, i / 1000)) for i in range(1000))
    assert counts == {"7": 500, "8": 500}
    assert version(choose(config, BOTH, {"x-user-id": ""}, 0.9)) == "8"  # empty: no key


def test_a_weight_change_moves_only_users_across_the_boundary() -> None:
    users = [f"user-{i}" for i in range(2000)]
    before = {u: version(choose(ab_config(A, B), BOTH, {"x-user-id": u}, 0.0)) for u in users}
    shifted = ab_config(A.model_copy(update={"weight": 60}), B.model_copy(update={"weight": 40}))
    after = {u: version(choose(shifted, BOTH, {"x-user-id": u}, 0.0)) for u in users}
    # Growing A from 50 to 60 takes users from B only; nobody leaves A.
    assert all(after[u] == "7" for u in users if before[u] == "7")
    moved = sum(before[u] != after[u] for u in users)
    assert 0.07 < moved / len(users) < 0.13


def test_only_running_variants_are_routable_and_only_their_users_move() -> None:
    c = Target(app="fraud--v9", version="9", weight=34)
    config = ab_config(A.model_copy(update={"weight": 33}), B.model_copy(update={"weight": 33}), c)
    everyone = {A.app, B.app, c.app}
    users = [f"user-{i}" for i in range(1000)]
    before = {u: version(choose(config, everyone, {"x-user-id": u}, 0.0)) for u in users}
    without_b = {u: version(choose(config, {A.app, c.app}, {"x-user-id": u}, 0.0)) for u in users}
    assert set(without_b.values()) == {"7", "9"}
    assert all(without_b[u] == before[u] for u in users if before[u] != "8")
    assert pick_sticky(config, set(), 0.5) is None


def test_users_of_a_variant_whose_new_version_starts_stay_on_its_previous_version() -> None:
    # treatment moves from v8 to v9: apply's switch keeps v8 as fallback until v9 runs.
    b9 = Target(app="fraud--v9", version="9", weight=50)
    switching = ab_config(A, b9).model_copy(update={"fallback": [B]})
    users = [f"user-{i}" for i in range(200)]
    before = {u: version(choose(ab_config(A, B), BOTH, {"x-user-id": u}, 0.0)) for u in users}
    during = {u: version(choose(switching, BOTH, {"x-user-id": u}, 0.0)) for u in users}
    after = {u: version(choose(switching, {A.app, b9.app}, {"x-user-id": u}, 0.0)) for u in users}
    assert during == before  # nobody changes variant while v9 starts
    assert after == {u: "9" if v == "8" else v for u, v in before.items()}


def test_a_router_without_ab_ignores_the_header() -> None:
    config = RouterConfig(deployment="fraud", targets=[A, B], timeout_s=1)
    assert version(choose(config, BOTH, {"x-user-id": "alice"}, 0.9)) == "8"
    assert version(choose(config, BOTH, {"x-user-id": "alice"}, 0.1)) == "7"

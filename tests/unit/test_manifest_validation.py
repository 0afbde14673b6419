"""Deployment file validation: every problem names file, line and field (no cluster)."""

from __future__ import annotations

import pytest

from controller.errors import ValidationFailed
from controller.spec.manifest import load_manifests
from tests.support import deployment_yaml

PATH = "deployments/staging/fraud.yaml"


def problems(files: dict[str, str]) -> list[str]:
    with pytest.raises(ValidationFailed) as info:
        load_manifests(files)
    return [str(p) for p in info.value.problems]


def test_valid_file_loads_with_defaults() -> None:
    [m] = load_manifests({PATH: deployment_yaml()})
    assert m.name == "fraud"
    assert m.deployment.spec.max_ongoing_requests == 8
    assert m.deployment.spec.rollout.strategy == "immediate"
    assert m.line_of("spec", "model") == 9


def test_malformed_yaml_names_the_line() -> None:
    text = deployment_yaml().replace("  route: /fraud", "  route: [/fraud")
    [p] = problems({PATH: text})
    assert p.startswith(f"{PATH}:")
    assert "invalid YAML" in p
    assert int(p.split(":")[1]) >= 8


def test_unknown_field_names_line_and_path() -> None:
    text = deployment_yaml(extra_spec="replicaz: 3\n")
    assert problems({PATH: text}) == [f"{PATH}:13: spec.replicaz: unknown field"]


def test_wrong_type_names_line_and_value() -> None:
    text = deployment_yaml().replace("replicas: 1", "replicas: two")
    [p] = problems({PATH: text})
    assert p.startswith(f"{PATH}:10: spec.replicas: ")
    assert "'two'" in p


def test_nested_field_path_in_a_list() -> None:
    text = deployment_yaml(
        extra_spec="""\
        rollout:
          strategy: canary
          steps:
            - weight: 10
            - weight: 500
        """
    )
    [p] = problems({PATH: text})
    assert p.startswith(f"{PATH}:17: spec.rollout.steps[1].weight: ")
    assert "less than or equal to 100" in p


@pytest.mark.parametrize("route", ["fraud", "/Fraud", "/fraud/", "/a b", "/"])
def test_bad_route(route: str) -> None:
    [p] = problems({PATH: deployment_yaml(route=route)})
    assert p.startswith(f"{PATH}:8: spec.route: ")


@pytest.mark.parametrize("model", ["fraud", "models:/fraud", "runs:/abc/model", "models:/fraud/v1"])
def test_bad_model_uri(model: str) -> None:
    [p] = problems({PATH: deployment_yaml(model=model)})
    assert p.startswith(f"{PATH}:9: spec.model: ")


def test_missing_field_points_at_parent() -> None:
    text = deployment_yaml().replace("  owner: risk-team\n", "")
    assert problems({PATH: text}) == [f"{PATH}:3: metadata.owner: required field is missing"]


def test_duplicate_key_is_an_error() -> None:
    text = deployment_yaml().replace("  replicas: 1\n", "  replicas: 1\n  replicas: 2\n")
    assert problems({PATH: text}) == [
        f"{PATH}:11: spec.replicas: duplicate key (first set on line 10)"
    ]


def test_replicas_and_autoscaling_are_exclusive() -> None:
    text = deployment_yaml(extra_spec="autoscaling: {min_replicas: 1, max_replicas: 2}\n")
    [p] = problems({PATH: text})
    assert "set either 'replicas' or 'autoscaling'" in p
    assert p.startswith(f"{PATH}:7: spec")


def test_environment_must_match_folder() -> None:
    [p] = problems({"deployments/production/fraud.yaml": deployment_yaml()})
    assert p == (
        "deployments/production/fraud.yaml:5: metadata.environment: environment 'staging' "
        "does not match the folder deployments/production/"
    )


def test_duplicate_names_and_routes_in_one_environment() -> None:
    files = {
        "deployments/staging/a.yaml": deployment_yaml(name="fraud", route="/fraud"),
        "deployments/staging/b.yaml": deployment_yaml(name="fraud", route="/other"),
        "deployments/staging/c.yaml": deployment_yaml(name="churn", route="/fraud"),
    }
    found = problems(files)
    assert (
        "deployments/staging/b.yaml:4: metadata.name: name 'fraud' is already used in "
        "environment 'staging' by deployments/staging/a.yaml:4" in found
    )
    assert (
        "deployments/staging/c.yaml:8: spec.route: route '/fraud' is already used in "
        "environment 'staging' by deployments/staging/a.yaml:8" in found
    )


def test_same_name_in_two_environments_is_fine() -> None:
    files = {
        "deployments/staging/fraud.yaml": deployment_yaml(environment="staging"),
        "deployments/production/fraud.yaml": deployment_yaml(environment="production"),
    }
    assert len(load_manifests(files)) == 2
    assert [m.path for m in load_manifests(files, "production")] == [
        "deployments/production/fraud.yaml"
    ]


def test_unsafe_yaml_never_runs_code(tmp_path: object) -> None:
    text = deployment_yaml(
        extra_spec="labels: !!python/object/apply:os.system ['touch /tmp/serveops-pwned']\n"
    )
    [p] = problems({PATH: text})
    assert "invalid YAML" in p
    assert "python/object" in p
    import os

    assert not os.path.exists("/tmp/serveops-pwned")


def test_all_problems_reported_at_once() -> None:
    files = {
        "deployments/staging/a.yaml": deployment_yaml(name="a", route="bad"),
        "deployments/staging/b.yaml": "key: [unclosed\n",
    }
    assert len(problems(files)) == 2


def test_canary_needs_steps_and_steps_need_canary() -> None:
    [p] = problems({PATH: deployment_yaml(extra_spec="rollout: {strategy: canary}\n")})
    assert "needs at least one step" in p
    text = deployment_yaml(extra_spec="rollout: {steps: [{weight: 10}]}\n")
    [p] = problems({PATH: text})
    assert "only applies to strategy 'canary'" in p


def test_shadow_percent_only_for_shadow_and_blue_green() -> None:
    text = deployment_yaml(
        extra_spec="rollout: {strategy: canary, steps: [{weight: 10}], shadow_percent: 20}\n"
    )
    [p] = problems({PATH: text})
    assert "spec.rollout" in p
    assert "'shadow_percent' only applies" in p
    ok = deployment_yaml(extra_spec="rollout: {strategy: blue_green, shadow_percent: 20}\n")
    [m] = load_manifests({PATH: ok})
    assert m.deployment.spec.rollout.shadow_percent == 20


def test_server_import_path_and_pip_requirements_are_checked() -> None:
    text = deployment_yaml(extra_spec="server: {import_path: 'not a path', pip: ['-e .']}\n")
    found = problems({PATH: text})
    assert any("spec.server.import_path" in p and "should match pattern" in p for p in found)
    assert any("spec.server.pip" in p and "not a pip requirement" in p for p in found)


def test_pause_must_be_a_duration() -> None:
    text = deployment_yaml(
        extra_spec="rollout: {strategy: canary, steps: [{weight: 10, pause: soon}]}\n"
    )
    [p] = problems({PATH: text})
    assert "spec.rollout.steps[0].pause" in p
    assert "duration" in p

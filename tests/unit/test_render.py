"""Rendering specs to Serve applications (pure; validated with Ray's own schema, no cluster)."""

from __future__ import annotations

from ray.serve.schema import ServeDeploySchema

from controller.cluster.render import RenderSettings, render_environment
from controller.registry.mlflow import FixedRegistry
from controller.serving.protocol import RouterConfig
from controller.spec.manifest import load_manifests
from tests.support import deployment_yaml

REGISTRY = FixedRegistry({"fraud": {"7": "7", "@champion": "8"}, "churn": {"3": "3"}})


def render(*texts: str, tracking_uri: str | None = "sqlite:////tmp/mlflow.db") -> list[dict]:
    files = {f"deployments/staging/{i}.yaml": t for i, t in enumerate(texts)}
    desired = render_environment(
        "staging", load_manifests(files), REGISTRY, RenderSettings(tracking_uri)
    )
    return desired.apps


def test_one_version_app_and_one_router_per_deployment() -> None:
    version, router = render(deployment_yaml(model="models:/fraud/7"))
    assert version["name"] == "fraud--v7"
    assert version["route_prefix"] is None
    assert version["args"]["model_uri"] == "models:/fraud/7"
    assert version["args"]["serveops"] == {
        "environment": "staging",
        "deployment": "fraud",
        "role": "version",
    }
    assert version["runtime_env"] == {
        "env_vars": {"MLFLOW_TRACKING_URI": "sqlite:////tmp/mlflow.db"}
    }
    [dep] = version["deployments"]
    assert dep["num_replicas"] == 1
    assert dep["ray_actor_options"] == {"num_cpus": 0.25}

    assert router["name"] == "fraud"
    assert router["route_prefix"] == "/fraud"
    config = RouterConfig.model_validate(router["deployments"][0]["user_config"])
    assert [(t.app, t.version, t.weight) for t in config.targets] == [("fraud--v7", "7", 100)]


def test_alias_renders_the_resolved_version() -> None:
    version, _ = render(deployment_yaml(model="models:/fraud@champion"))
    assert version["name"] == "fraud--v8"
    assert version["args"]["model_uri"] == "models:/fraud/8"


def test_autoscaling_and_resources() -> None:
    text = deployment_yaml(model="models:/fraud/7").replace(
        "  replicas: 1\n", "  autoscaling: {min_replicas: 1, max_replicas: 4}\n"
    )
    text = text.replace("num_cpus: 0.25", "num_cpus: 0.5\n    memory_mb: 256")
    version, _ = render(text)
    [dep] = version["deployments"]
    assert "num_replicas" not in dep
    assert dep["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 2.0,
    }
    assert dep["ray_actor_options"] == {"num_cpus": 0.5, "memory": 256 * 1024 * 1024}


def test_no_tracking_uri_means_no_runtime_env() -> None:
    version, _ = render(deployment_yaml(model="models:/fraud/7"), tracking_uri=None)
    assert "runtime_env" not in version


def test_custom_serving_code_and_its_packages_reach_the_version_app() -> None:
    default, _ = render(deployment_yaml(model="models:/fraud/7"))
    assert default["import_path"] == "controller.serving.model:build"
    text = deployment_yaml(
        model="models:/fraud/7",
        extra_spec="""\
        server:
          import_path: fraud_serving.app:build
          pip: [fraud-serving==1.4.2]
        """,
    )
    version, router = render(text)
    assert version["import_path"] == "fraud_serving.app:build"
    assert version["runtime_env"] == {
        "env_vars": {"MLFLOW_TRACKING_URI": "sqlite:////tmp/mlflow.db"},
        "pip": ["fraud-serving==1.4.2"],
    }
    assert router["import_path"] == "controller.serving.router:build"  # routing stays ours


def test_every_rendered_config_validates_against_rays_schema() -> None:
    apps = render(
        deployment_yaml(model="models:/fraud/7"),
        deployment_yaml(name="churn", model="models:/churn/3").replace(
            "  replicas: 1\n", "  autoscaling: {min_replicas: 0, max_replicas: 3}\n"
        ),
        deployment_yaml(name="fraud-b", route="/fraud/b", model="models:/fraud@champion"),
        deployment_yaml(
            name="fraud-c",
            model="models:/fraud/7",
            extra_spec="server: {import_path: 'fraud_serving.app:build', pip: [a==1]}\n",
        ),
    )
    config = ServeDeploySchema.model_validate(
        {"http_options": {"host": "127.0.0.1", "port": 8000}, "applications": apps}
    )
    assert [a.name for a in config.applications] == [a["name"] for a in apps]


def test_rendering_is_deterministic() -> None:
    text = deployment_yaml(model="models:/fraud/7")
    assert render(text) == render(text)


def bound_of(text: str) -> int | None:
    _, router = render(text)
    [target] = RouterConfig.model_validate(router["deployments"][0]["user_config"]).targets
    return target.max_in_flight


def test_the_router_bounds_what_it_has_in_flight_to_a_version() -> None:
    fixed = deployment_yaml(model="models:/fraud/7")  # 1 replica, 8 ongoing + 1,000 queued
    assert bound_of(fixed) == 1008
    tuned = fixed + "  max_ongoing_requests: 4\n  max_queued_requests: 0\n  router_replicas: 3\n"
    assert bound_of(tuned) == 2  # ceil(1 * 4 / 3): each router replica holds its share
    scaled = fixed.replace("  replicas: 1\n", "  autoscaling: {min_replicas: 1, max_replicas: 4}\n")
    assert bound_of(scaled) == 288  # the autoscaling maximum, 8 + 64 each: no router queue

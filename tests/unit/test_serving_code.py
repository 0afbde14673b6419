"""Where the nodes get serveops' serving code: the setting, the rendered runtime_env, the bundle
(fakes for Serve; the bundle is unpacked with Ray's own code and imported in a real process)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from ray._private.runtime_env.packaging import unzip_package
from ray.serve.schema import ServeDeploySchema
from typer.testing import CliRunner

from controller import __version__
from controller.cli.main import app
from controller.cluster.render import RenderSettings, render_environment
from controller.cluster.serving_code import INSTALLED, ServingCode, build_bundle, parse_serving_code
from controller.errors import BadInput
from controller.spec.manifest import load_manifests
from tests.support import World, deployment_yaml
from tests.unit.test_render import REGISTRY
from tests.unit.test_rollout_controller import CANARY

BUNDLE = f"https://artifacts.example/serveops/serveops-{__version__}.zip"


@pytest.mark.parametrize("scheme", ["https", "s3", "gs", "file"])
def test_a_bundle_uri_of_this_version_is_accepted_from_any_remote_scheme(scheme: str) -> None:
    uri = f"{scheme}://bucket/x/serveops-{__version__}.zip"
    assert parse_serving_code(uri) == ServingCode("bundle", uri)
    assert parse_serving_code(None) == parse_serving_code("installed") == INSTALLED
    assert parse_serving_code("pip") == ServingCode("pip")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("https://x/serveops-0.0.9.zip", "it is the bundle of serveops 0.0.9"),
        ("https://x/code.zip", "its file name is not a serveops bundle's"),
        ("/local/serveops.zip", "is not 'installed', 'pip' or a bundle URI"),
        ("ftp://x/serveops.zip", "is not 'installed', 'pip' or a bundle URI"),
    ],
)
def test_anything_else_is_bad_input_that_says_why(value: str, why: str) -> None:
    with pytest.raises(BadInput) as caught:
        parse_serving_code(value)
    assert caught.value.message.startswith("--serving-code / SERVEOPS_SERVING_CODE: ")
    assert why in caught.value.message


ROOT = Path(__file__).resolve().parents[2]


def render(code: ServingCode, extra_spec: str = "") -> list[dict]:
    text = deployment_yaml(model="models:/fraud/7", extra_spec=extra_spec)
    settings = RenderSettings("sqlite:////tmp/mlflow.db", serving_code=code)
    apps = render_environment(
        "staging", load_manifests({"deployments/staging/fraud.yaml": text}), REGISTRY, settings
    ).apps
    ServeDeploySchema.model_validate({"applications": apps})  # Ray's own schema takes them
    return apps


def test_installed_code_adds_nothing_to_the_rendered_configs() -> None:
    version, router = render(INSTALLED)
    assert version["runtime_env"] == {
        "env_vars": {"MLFLOW_TRACKING_URI": "sqlite:////tmp/mlflow.db"}
    }
    assert "runtime_env" not in router


def test_a_bundle_goes_to_every_application_with_the_model_replicas_environment_kept() -> None:
    version, router = render(ServingCode("bundle", BUNDLE))
    assert version["runtime_env"] == {
        "py_modules": [BUNDLE],
        "env_vars": {"MLFLOW_TRACKING_URI": "sqlite:////tmp/mlflow.db"},
    }
    assert router["runtime_env"] == {"py_modules": [BUNDLE]}


def test_pip_installs_this_serveops_before_the_servers_own_packages() -> None:
    server = "  server:\n    import_path: acme.serving:build\n    pip: [acme-serving==1.4.2]\n"
    version, router = render(ServingCode("pip"), extra_spec=server)
    assert version["runtime_env"]["pip"] == [
        f"serveops[serving]=={__version__}",
        "acme-serving==1.4.2",
    ]
    assert router["runtime_env"] == {"pip": [f"serveops[serving]=={__version__}"]}


def test_a_canary_keeps_the_bundle_on_every_application_it_reshapes(tmp_path: Path) -> None:
    world = World(tmp_path, rollout=CANARY)
    world.ctl = world.controller(serving_code=ServingCode("bundle", BUNDLE))
    try:
        assert world.sync().outcome == "applied"
        world.push("2")
        weights = []
        for _ in range(8):  # start, 25%, analyses and pauses, 60%, completion, clean
            world.pass_()
            weights.append(world.weights())
            shipped = {
                n: a.get("runtime_env", {}).get("py_modules") for n, a in world.serve.apps.items()
            }
            assert shipped == {n: [BUNDLE] for n in world.serve.apps}
            world.traffic(30)
        assert {"1": 75, "2": 25} in weights
        assert weights[-1] == {"2": 100}
    finally:
        world.close()


def test_the_bundle_unpacked_by_ray_imports_the_serving_code_from_itself(tmp_path: Path) -> None:
    bundle = build_bundle(tmp_path / "out")
    assert bundle.name == f"serveops-{__version__}.zip"
    again = build_bundle(tmp_path / "again")
    assert bundle.read_bytes() == again.read_bytes()  # the same code makes the same bytes
    names = zipfile.ZipFile(bundle).namelist()
    assert not any("__pycache__" in n for n in names)
    # Ray strips a remote zip's single top-level directory and puts the rest on PYTHONPATH.
    unpacked = tmp_path / "node"
    unzip_package(str(bundle), str(unpacked), remove_top_level_directory=True, unlink_zip=False)
    probe = (
        "import controller, controller.serving.router, controller.serving.model; "
        "print(controller.__file__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(unpacked / "controller" / "__init__.py")


def test_bad_serving_code_exits_2_before_anything_is_read(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "plan",
            "--env",
            "staging",
            "--repo",
            str(tmp_path / "nowhere"),
            "--serving-code",
            "x.zip",
        ],
    )
    assert result.exit_code == 2
    assert "--serving-code / SERVEOPS_SERVING_CODE: 'x.zip' is not 'installed'" in result.output


def test_a_bundle_that_cannot_be_written_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    result = CliRunner().invoke(app, ["bundle", "--out", str(tmp_path / "file" / "dist")])
    assert result.exit_code == 2
    assert f"--out {tmp_path / 'file' / 'dist'}: cannot write the bundle" in result.output


def test_a_simulation_on_a_given_cluster_ships_the_same_serving_code(tmp_path: Path) -> None:
    from simulator import deploy
    from tests.support import FakeServe

    path = "deployments/staging/fraud.yaml"
    base = deployment_yaml(model="models:/fraud/7")
    changed = [
        deploy.ChangedDeployment(
            "fraud", path, "/fraud", base, base.replace("fraud/7", "fraud@champion")
        )
    ]
    sim_repo, _ = deploy.write_sim_repo(tmp_path, changed, noise_floor=False)
    serve = FakeServe()
    code = ServingCode("bundle", BUNDLE)
    deploy.bring_up(sim_repo, serve, REGISTRY, serving_code=code)  # type: ignore[arg-type]
    assert len(serve.apps) == 4  # base and head, each a version and a router
    assert all(a["runtime_env"]["py_modules"] == [BUNDLE] for a in serve.apps.values())


def test_the_serving_extra_holds_what_replicas_import_and_nothing_of_the_cli() -> None:
    """`--serving-code pip` installs serveops[serving]: what the router and model server import
    (besides Ray, which the nodes have), never Locust, gevent, typer or a Ray pin."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=\[; ]", r, maxsplit=1)[0].lower() for r in project["dependencies"]}
    serving = project["optional-dependencies"]["serving"]
    names |= {re.split(r"[<>=\[; ]", r, maxsplit=1)[0].lower() for r in serving}
    assert names == {"pydantic", "mlflow", "msgspec", "numpy", "pandas", "starlette"}
    probe = (
        "import sys, controller.serving.router, controller.serving.model, "
        "controller.serving.recorder, controller.serving.pinning; "
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    imported = set(json.loads(done.stdout.replace("'", '"')))
    # (Ray and MLflow bring yaml, jsonschema and psutil along; the CLI alone brings these.)
    for cli_only in ("locust", "gevent", "typer", "git", "cel", "scipy", "matplotlib", "rich"):
        assert cli_only not in imported, cli_only

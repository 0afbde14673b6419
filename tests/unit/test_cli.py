"""The serveops command's errors and exit codes (0 ok, 1 failure/refused, 2 bad input); no cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from controller.cli import main as cli
from controller.cli.main import app
from controller.cluster.live import LiveState
from controller.cluster.render import DesiredState
from controller.cluster.serve_api import ServeClient
from controller.errors import Unreachable
from controller.registry.mlflow import FixedRegistry
from controller.sync.plan import Source, make_plan
from tests.support import FakeServe, commit, deployment_yaml, make_repo, unmanaged_app

runner = CliRunner()
DEAD_ADDRESS = "http://127.0.0.1:9"  # discard port: nothing listens


def test_validate_ok(tmp_path: Path) -> None:
    path = tmp_path / "deployments/staging/fraud.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(deployment_yaml())
    result = runner.invoke(app, ["validate", str(tmp_path / "deployments")])
    assert result.exit_code == 0, result.output
    assert "1 deployment file(s) valid" in result.output


def test_validate_bad_file_exits_2_with_location(tmp_path: Path) -> None:
    path = tmp_path / "deployments/staging/fraud.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(deployment_yaml().replace("replicas: 1", "replicas: -1"))
    result = runner.invoke(app, ["validate", str(tmp_path / "deployments")])
    assert result.exit_code == 2
    assert f"{path.as_posix()}:10: spec.replicas: Input should be greater than or equal to 1" in (
        result.output
    )


def test_validate_missing_path_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "no such file or directory" in result.output


def test_plan_bad_revision_exits_2_before_touching_the_cluster(tmp_path: Path) -> None:
    make_repo(tmp_path, {"deployments/staging/fraud.yaml": deployment_yaml()})
    result = runner.invoke(
        app,
        [
            "plan",
            "--repo",
            str(tmp_path),
            "--rev",
            "nope",
            "--env",
            "staging",
            "--address",
            DEAD_ADDRESS,
            "--registry-uri",
            "sqlite:///x.db",
        ],
    )
    assert result.exit_code == 2
    assert "revision 'nope' does not exist" in result.output


def test_plan_invalid_file_at_revision_exits_2(tmp_path: Path) -> None:
    make_repo(tmp_path, {"deployments/staging/fraud.yaml": deployment_yaml(route="nope")})
    result = runner.invoke(
        app,
        [
            "plan",
            "--repo",
            str(tmp_path),
            "--env",
            "staging",
            "--address",
            DEAD_ADDRESS,
            "--registry-uri",
            "sqlite:///x.db",
        ],
    )
    assert result.exit_code == 2
    assert "deployments/staging/fraud.yaml:8: spec.route:" in result.output


def test_status_unreachable_address_fails_with_a_clear_error() -> None:
    result = runner.invoke(app, ["status", "--env", "staging", "--address", DEAD_ADDRESS])
    assert result.exit_code == 1
    assert f"cannot reach the Ray dashboard at {DEAD_ADDRESS}" in result.output


def test_apply_saved_plan_refused_when_branch_moved(tmp_path: Path) -> None:
    first = make_repo(tmp_path, {"deployments/staging/fraud.yaml": deployment_yaml()})
    serve = FakeServe()
    saved = make_plan(
        DesiredState("staging"),
        serve.get(),
        source=Source(repo=str(tmp_path), rev="main", commit=first),
        address=DEAD_ADDRESS,
    )
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(saved.model_dump_json())
    commit(tmp_path, {"deployments/staging/churn.yaml": deployment_yaml(name="churn")}, "more")
    result = runner.invoke(app, ["apply", "--plan", str(plan_file)])
    assert result.exit_code == 1
    assert "revision 'main' has moved since the plan was made" in result.output


class MovingServe(FakeServe):
    """A fake Serve whose unmanaged app someone edits right after serveops' first read."""

    def __init__(self, moves: int) -> None:
        super().__init__()
        self.seed(unmanaged_app())
        self.moves = moves  # how many of serveops' reads are each followed by an edit
        self.reads = 0

    def __enter__(self) -> MovingServe:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def get(self) -> LiveState:
        live = super().get()
        self.reads += 1
        if self.reads <= self.moves:
            self.apps["handmade"]["deployments"][0]["num_replicas"] += 1
        return live


def apply_against(serve: MovingServe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    make_repo(tmp_path, {"deployments/staging/fraud.yaml": deployment_yaml()})
    monkeypatch.setattr(cli, "ServeClient", lambda *a, **k: serve)
    monkeypatch.setattr(cli, "registry_from_uri", lambda uri: FixedRegistry({"fraud": {"1": "1"}}))
    return runner.invoke(app, ["apply", "--repo", str(tmp_path), "--env", "staging"])


def test_apply_without_a_saved_plan_plans_again_when_serve_moves_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve = MovingServe(moves=1)
    result = apply_against(serve, tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "changed since this plan was made" in result.output
    assert "planning again" in result.output
    assert {"fraud", "fraud--v1", "handmade"} <= set(serve.apps)
    assert serve.apps["handmade"]["deployments"][0]["num_replicas"] == 2  # the edit was kept


def test_apply_gives_up_when_serve_keeps_moving_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve = MovingServe(moves=100)
    result = apply_against(serve, tmp_path, monkeypatch)
    assert result.exit_code == 1
    assert result.output.count("planning again") == cli.REPLAN_ATTEMPTS - 1
    assert serve.puts == []


def test_apply_plan_file_errors_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["apply", "--plan", str(tmp_path / "missing.json")])
    assert result.exit_code == 2
    assert "no such plan file" in result.output
    (tmp_path / "junk.json").write_text("{}")
    result = runner.invoke(app, ["apply", "--plan", str(tmp_path / "junk.json")])
    assert result.exit_code == 2
    assert "not a serveops plan" in result.output


def test_apply_needs_env_or_plan() -> None:
    result = runner.invoke(app, ["apply"])
    assert result.exit_code == 2
    assert "--env" in result.output


def test_bad_output_format_exits_2() -> None:
    result = runner.invoke(app, ["status", "--env", "x", "--output", "yaml"])
    assert result.exit_code == 2


def test_unknown_option_is_a_usage_error() -> None:
    assert runner.invoke(app, ["plan", "--bogus"]).exit_code == 2


def test_serve_client_reports_rays_rejection() -> None:
    from controller.cluster.live import LiveState
    from controller.cluster.serve_api import ServeClient
    from controller.errors import ServeopsError

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            return httpx.Response(400, text="Invalid config: route_prefix must start with /")
        return httpx.Response(200, json={"applications": {}})

    client = ServeClient("http://ray:8265", transport=httpx.MockTransport(handler))
    live = client.get()
    with pytest.raises(ServeopsError) as raised:
        client.put([], live)
    assert "HTTP 400" in raised.value.message
    assert "route_prefix must start with /" in raised.value.message
    assert isinstance(live, LiveState)


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_busy_dashboard_is_transient_not_a_rejected_config(status: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            return httpx.Response(status, text="Serve controller is recovering")
        return httpx.Response(200, json={"applications": {}})

    client = ServeClient("http://ray:8265", transport=httpx.MockTransport(handler))
    with pytest.raises(Unreachable, match=f"HTTP {status} \\(retried at the next pass\\)"):
        client.put([], client.get())


def test_error_messages_print_brackets_as_written() -> None:
    from rich.console import Console

    from controller.cli.display import print_error

    console = Console(record=True, width=200)
    print_error(console, "deployments[Router].user_config.targets and [link] stay")
    assert "error: deployments[Router].user_config.targets and [link] stay" in (
        console.export_text()
    )


def test_the_cli_does_not_import_ray_or_mlflow() -> None:
    """Ray (2 s) and MLflow (1.5 s) load only where used: every command starts fast."""
    import subprocess
    import sys

    code = "import sys, controller.cli.main; print(sorted({'ray', 'mlflow'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

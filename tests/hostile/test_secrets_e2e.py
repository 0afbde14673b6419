"""Canary secrets through a full controller run on real parts: `serveops controller` as a
process, a real local Ray Serve, an MLflow tracking server reached with credentials in its URI,
a Git repository served over HTTP with a token in its URL, a signed GitHub webhook, a local
notification sink, and a rollout whose smoke hook is pinned through the real router and whose
command hook prints every secret it can reach. Every output is scanned: the controller's logs,
the state file, the notifications, a saved plan, `serveops history`, and Serve's config read
back from the dashboard.

Run it with the other Ray tests: `flock /tmp/serveops-ray.lock .venv/bin/pytest -m e2e`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.dev.demo import MODEL_NAME, sample_request, train_and_register
from controller.dev.localray import LocalRay, free_port, kill_tree
from controller.gitops.webhook import signature
from controller.redact import MASK
from tests.hostile.canary import (
    HOOK_ENV_NAME,
    HOOK_SECRET,
    TRACKING_PASS,
    TRACKING_USER,
    WEBHOOK_SECRET,
    Sink,
    git_http,
    leaks,
    leaky_hook_command,
    publish,
    state_files,
)
from tests.support import commit, make_repo

pytestmark = pytest.mark.e2e
NAME = "canary-secrets"
SPEC = f"deployments/staging/{NAME}.yaml"
BIN = Path(sys.executable).parent


def spec(version: str, rollout: str = "") -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: serveops.dev/v1alpha1
        kind: ModelDeployment
        metadata:
          name: {NAME}
          environment: staging
          owner: security
        spec:
          route: /{NAME}
          model: models:/{MODEL_NAME}/{version}
          replicas: 1
          resources:
            num_cpus: 0.25
        """
    ) + textwrap.indent(textwrap.dedent(rollout), "  ")


def leaky_rollout() -> str:
    smoke = json.dumps(sample_request(2))
    return f"""\
    rollout:
      strategy: canary
      steps: [{{weight: 50, pause: 5s}}]
      hooks:
        pre_rollout:
          - name: smoke
            smoke: [{{body: {smoke}}}]
          - name: leaky
            command: {json.dumps(leaky_hook_command(sys.executable))}
    """


@pytest.fixture(scope="module")
def ray() -> Iterator[LocalRay]:
    local = LocalRay(num_cpus=2, env={"RAY_SERVE_SLOW_STARTUP_WARNING_S": "2"})
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """An MLflow tracking server on a SQLite store with the demo model's two versions; yields
    its URL (no credentials) and the server process."""
    root = tmp_path_factory.mktemp("mlflow")
    store = f"sqlite:///{root / 'mlflow.db'}"
    train_and_register(store, root / "artifacts")
    port = free_port()
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            store,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _until(lambda: _answers(f"{url}/health"), 120, "the MLflow server did not start")
        yield url, proc
    finally:
        kill_tree(proc.pid)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _until(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(1)


def test_no_canary_secret_reaches_any_output_of_a_controller_run(
    ray: LocalRay, mlflow_server: tuple[str, Any], tmp_path: Path
) -> None:
    mlflow_url, mlflow_proc = mlflow_server
    tracking_uri = mlflow_url.replace("://", f"://{TRACKING_USER}:{TRACKING_PASS}@")
    http_port, webhook_port = free_port(), free_port()
    repo, state = tmp_path / "repo", tmp_path / "state" / "state.db"
    make_repo(repo, {SPEC: spec("1")})
    env = {
        **os.environ,
        "SERVEOPS_WEBHOOK_SECRET": WEBHOOK_SECRET,
        HOOK_ENV_NAME: HOOK_SECRET,
        "SERVEOPS_HOOK_ENV": HOOK_ENV_NAME,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "SERVEOPS_HTTP_PORT": str(http_port),
        "COLUMNS": "200",
    }
    logs = tmp_path / "controller.log"
    no_rules = tmp_path / "platform-policies"  # the operator's policies: none, this is no gate test
    no_rules.mkdir()
    with git_http(repo, tmp_path) as git_url, Sink() as sink, logs.open("w") as log_file:
        controller = subprocess.Popen(
            [
                str(BIN / "serveops"),
                "controller",
                "--repo",
                git_url,
                "--branch",
                "main",
                "--env",
                "staging",
                "--address",
                ray.address,
                "--interval",
                "3s",
                "--state",
                str(state),
                "--webhook-port",
                str(webhook_port),
                "-v",
                "--notify-webhook",
                sink.url,
                "--timeout",
                "240",
                "--policies",
                str(no_rules),
                "--allow-hook-command",
                sys.executable,  # the leaky hook's program: allowed, so it runs and is watched
            ],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        route = f"http://127.0.0.1:{http_port}/{NAME}"
        try:
            _until(lambda: _kinds(sink) & {"deployed", "sync_failed"}, 300, "v1 not deployed")
            assert "sync_failed" not in _kinds(sink), sink.bodies
            answer = _until(lambda: _post(route), 120, "v1 does not answer")
            assert answer.headers["x-serveops-version"] == "1"  # loaded through the MLflow server

            commit(repo, {SPEC: spec("2", leaky_rollout())}, "v2: a canary with a leaky hook")
            publish(repo, tmp_path)
            _webhook(webhook_port, delivery="d-1")
            _until(lambda: "rollout_aborted" in _kinds(sink), 300, "the rollout did not abort")

            plan = tmp_path / "plan.json"
            made = subprocess.run(
                [
                    str(BIN / "serveops"),
                    "plan",
                    "--repo",
                    str(repo),
                    "--env",
                    "staging",
                    "--address",
                    ray.address,
                    "--out",
                    str(plan),
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert made.returncode in (0, 1), made.stderr

            kill_tree(mlflow_proc.pid)  # the registry goes away: its error is reported
            commit(repo, {SPEC: spec("1")}, "back to v1, registry down")
            publish(repo, tmp_path)
            _webhook(webhook_port, delivery="d-2")
            _until(lambda: "sync_failed" in _kinds(sink), 300, "no sync_failed notification")
        finally:
            controller.send_signal(signal.SIGTERM)
            try:
                controller.wait(timeout=60)
            except subprocess.TimeoutExpired:
                kill_tree(controller.pid)
        serve_config = httpx.get(f"{ray.address}/api/serve/applications/", timeout=30).text
        history = subprocess.run(
            [str(BIN / "serveops"), "history", "--state", str(state), "-o", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        httpx.delete(f"{ray.address}/api/serve/applications/", timeout=60)

    outputs: dict[str, str | bytes] = {
        "controller log": logs.read_text(),
        "notifications": "\n".join(sink.bodies),
        "plan": plan.read_text() + made.stdout + made.stderr,
        "history": history.stdout + history.stderr,
        "serve config": serve_config,
        **state_files(state),
    }
    assert leaks(outputs) == {}
    # Each path was taken, so each secret had its chance to leak:
    events = {e["event"]: e["message"] for e in sink.events()}
    # The smoke hook ran first and passed (pinned through the real router with the controller's
    # token), then the command printed every secret it could reach, and failed.
    assert "hooks failed: leaky: " in events["rollout_aborted"]
    assert f"hook sees {MASK} None None" in events["rollout_aborted"]
    assert f"http://{MASK}@127.0.0.1" in events["sync_failed"]  # the registry's error
    assert f"{mlflow_url}" in serve_config  # replicas got the URI, without its userinfo
    assert "push to main" in outputs["controller log"]  # the webhook was used


def _kinds(sink: Sink) -> set[str]:
    return {e["event"] for e in sink.events()}


def _post(url: str) -> httpx.Response | None:
    try:
        response = httpx.post(url, json=sample_request(2), timeout=30)
    except httpx.HTTPError:
        return None
    return response if response.status_code == 200 else None


def _webhook(port: int, delivery: str) -> None:
    body = json.dumps({"ref": "refs/heads/main", "after": delivery, "pusher": {"name": "t"}})
    response = httpx.post(
        f"http://127.0.0.1:{port}/webhook",
        content=body.encode(),
        headers={
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": signature(WEBHOOK_SECRET.encode(), body.encode()),
        },
        timeout=30,
    )
    assert response.status_code == 202, response.text

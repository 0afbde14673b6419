"""The controller's edges: the GitHub push webhook (HMAC), notifications, and the CLI commands."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

import controller.cli.loop as loop_cli
import controller.cli.sync as sync_cli
from controller.cli.history import register as register_history
from controller.cli.options import seconds as parse_option
from controller.errors import BadInput
from controller.gitops.notify import Event, WebhookNotifier
from controller.gitops.webhook import PushEvent, WebhookServer, signature
from controller.registry.mlflow import FixedRegistry, Registry
from tests.support import FakeServe, commit, deployment_yaml, make_repo

SECRET = b"s3cret"
FRAUD = "deployments/staging/fraud.yaml"
runner = CliRunner()
# The commands on an app of their own, so these tests do not depend on controller/cli/main.py.
app = typer.Typer()
loop_cli.register(app)
sync_cli.register(app)
register_history(app)


# --- webhook ------------------------------------------------------------------------------------


def _push(ref: str = "refs/heads/main", after: str = "a" * 40) -> bytes:
    return json.dumps({"ref": ref, "after": after, "pusher": {"name": "ana"}}).encode()


@pytest.fixture
def hook() -> Iterator[tuple[WebhookServer, list[PushEvent]]]:
    pushes: list[PushEvent] = []
    with WebhookServer(SECRET, "main", pushes.append) as server:
        yield server, pushes


def _post(
    server: WebhookServer, body: bytes, sig: str | None, event: str = "push"
) -> httpx.Response:
    headers = {"X-GitHub-Event": event, "Content-Type": "application/json"}
    if sig is not None:
        headers["X-Hub-Signature-256"] = sig
    return httpx.post(server.url, content=body, headers=headers, timeout=10)


def test_signed_push_to_the_watched_branch_reconciles(
    hook: tuple[WebhookServer, list[PushEvent]],
) -> None:
    server, pushes = hook
    body = _push()
    response = _post(server, body, signature(SECRET, body))
    assert response.status_code == 202
    assert response.json()["status"] == "reconciling"
    assert pushes == [PushEvent("refs/heads/main", "a" * 40, "ana")]


@pytest.mark.parametrize(
    "sig",
    [None, "sha256=" + "0" * 64, signature(b"other secret", _push()), "sha1=abc"],
    ids=["missing", "wrong", "other-secret", "sha1"],
)
def test_bad_signature_is_401_and_does_nothing(
    hook: tuple[WebhookServer, list[PushEvent]], sig: str | None
) -> None:
    server, pushes = hook
    response = _post(server, _push(), sig)
    assert response.status_code == 401
    assert pushes == []


def test_tampered_body_is_rejected(hook: tuple[WebhookServer, list[PushEvent]]) -> None:
    server, pushes = hook
    sig = signature(SECRET, _push())
    assert _post(server, _push(after="b" * 40), sig).status_code == 401
    assert pushes == []


def test_push_to_another_branch_and_other_events_are_ignored(
    hook: tuple[WebhookServer, list[PushEvent]],
) -> None:
    server, pushes = hook
    other = _push("refs/heads/feature")
    response = _post(server, other, signature(SECRET, other))
    assert response.status_code == 202
    assert response.json()["status"] == "ignored"
    ping = b'{"zen": "Keep it logically awesome."}'
    assert _post(server, ping, signature(SECRET, ping), event="ping").status_code == 200
    issue = b"{}"
    assert _post(server, issue, signature(SECRET, issue), event="issues").status_code == 202
    garbage = b"not json"
    assert _post(server, garbage, signature(SECRET, garbage)).status_code == 400
    assert pushes == []
    assert httpx.get(server.url.replace("/webhook", "/healthz"), timeout=10).status_code == 200


# --- notifications ------------------------------------------------------------------------------


def _event() -> Event:
    import datetime as dt

    return Event(
        "deployed",
        "staging",
        "c" * 40,
        "applied cccccccccccc to 'staging': fraud",
        dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
        "git@example.com:org/models.git",
    )


def test_json_and_slack_webhooks_get_their_formats() -> None:
    seen: list[tuple[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), json.loads(request.content)))
        return httpx.Response(200)

    notifier = WebhookNotifier(
        ["https://hooks.example/json"],
        ["https://hooks.slack.example/T/B/X"],
        transport=httpx.MockTransport(handler),
    )
    notifier.notify(_event())
    (json_url, body), (slack_url, slack) = seen
    assert json_url == "https://hooks.example/json"
    assert body["event"] == "deployed"
    assert body["environment"] == "staging"
    assert body["commit"] == "c" * 40
    assert body["source"] == "serveops"
    assert slack_url == "https://hooks.slack.example/T/B/X"
    assert set(slack) == {"text"}
    assert "*deployed* in `staging` at `cccccccccccc`" in slack["text"]


def test_failed_notification_is_logged_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "down" in str(request.url):
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(500)

    notifier = WebhookNotifier(
        ["https://down.example/x", "https://broken.example/secret-path"],
        transport=httpx.MockTransport(handler),
    )
    with caplog.at_level(logging.WARNING, logger="serveops.controller"):
        notifier.notify(_event())
    assert "down.example" in caplog.text
    assert "HTTP 500" in caplog.text
    assert "secret-path" not in caplog.text  # webhook paths are secrets


# --- CLI: sync and history ----------------------------------------------------------------------


class Cluster:
    """FakeServe behind the CLI: one cluster shared by every command of a test."""

    def __init__(self) -> None:
        self.serve = FakeServe()

    def client(self, address: str, **_: Any) -> contextlib.AbstractContextManager[FakeServe]:
        return contextlib.nullcontext(self.serve)


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Cluster:
    c = Cluster()
    monkeypatch.setattr(loop_cli, "ServeClient", c.client)
    monkeypatch.setattr(sync_cli, "ServeClient", c.client)

    def registry(_uri: str | None) -> Any:
        def make() -> Registry:
            return FixedRegistry({"fraud": {"1": "1", "2": "2"}})

        return make

    monkeypatch.setattr(loop_cli, "registry_factory", registry)
    monkeypatch.setattr(sync_cli, "registry_factory", registry)
    return c


def _sync(repo: Path, state: Path, *extra: str) -> Any:
    platform = state.parent / "platform-policies"  # the platform team's rules: none here
    platform.mkdir(exist_ok=True)
    return runner.invoke(
        app,
        [
            "sync", "--repo", str(repo), "--env", "staging", "--state", str(state),
            "--policies", str(platform), *extra,
        ],
    )  # fmt: skip


def test_sync_exit_codes_and_history(tmp_path: Path, cluster: Cluster) -> None:
    repo, state = tmp_path / "repo", tmp_path / "state.db"
    first = make_repo(repo, {FRAUD: deployment_yaml()})
    result = _sync(repo, state)
    assert result.exit_code == 0, result.output
    assert f"applied: applied {first[:12]}" in result.output
    assert _sync(repo, state).exit_code == 0  # in sync: nothing to do

    cluster.serve.failing.add("fraud--v2")
    second = commit(repo, {FRAUD: deployment_yaml(model="models:/fraud/2")}, "v2")
    failed = _sync(repo, state)
    assert failed.exit_code == 1
    assert "DEPLOY_FAILED" in failed.output
    skipped = _sync(repo, state)
    assert skipped.exit_code == 1
    assert "--retry" in skipped.output

    cluster.serve.failing.clear()
    cluster.serve.status["fraud--v2"] = "RUNNING"
    assert _sync(repo, state, "--retry").exit_code == 0

    commit(repo, {FRAUD: "spec: [\n"}, "broken")
    assert _sync(repo, state).exit_code == 2

    history = runner.invoke(
        app, ["history", "--env", "staging", "--state", str(state), "-o", "json"]
    )
    assert history.exit_code == 0, history.output
    rows = json.loads(history.output)
    assert [(r["result"], r["trigger"]) for r in rows] == [
        ("failed", "sync"),
        ("applied", "sync"),
        ("failed", "sync"),
        ("applied", "sync"),
    ]
    assert rows[1]["commit"] == second
    assert rows[3]["commit"] == first
    assert rows[3]["plan"]["source"]["commit"] == first

    text = runner.invoke(
        app, ["history", "--env", "staging", "--state", str(state), "--limit", "2"]
    )
    assert text.exit_code == 0, text.output
    assert "failed" in text.output
    assert first[:12] not in text.output


def test_sync_json_output_and_pinned_revision(tmp_path: Path, cluster: Cluster) -> None:
    repo, state = tmp_path / "repo", tmp_path / "state.db"
    first = make_repo(repo, {FRAUD: deployment_yaml()})
    commit(repo, {FRAUD: deployment_yaml(model="models:/fraud/2")}, "v2")
    result = _sync(repo, state, "--rev", first, "-o", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["outcome"] == "applied"
    assert data["commit"] == first
    assert data["exit_code"] == 0


def test_history_without_state_is_bad_input(tmp_path: Path) -> None:
    result = runner.invoke(app, ["history", "--state", str(tmp_path / "none.db")])
    assert result.exit_code == 2
    assert "no controller state" in result.output


def test_controller_webhook_needs_a_secret(
    tmp_path: Path, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SERVEOPS_WEBHOOK_SECRET", raising=False)
    repo = tmp_path / "repo"
    make_repo(repo, {FRAUD: deployment_yaml()})
    result = runner.invoke(
        app,
        ["controller", "--repo", str(repo), "--env", "staging", "--webhook-port", "0"],
    )
    assert result.exit_code == 2
    assert "SERVEOPS_WEBHOOK_SECRET" in result.output


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10), ("500ms", 0.5), ("2m", 120), ("3", 3), ("1m30s", 90), ("0.5s", 0.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_option("--interval", text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "-1s", "0s", "5d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(BadInput, match="--interval"):
        parse_option("--interval", text)

"""`serveops monitor` with retraining targets and --html; the controller's retraining options."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.cli.main import app
from controller.cli.retrain import retrain_settings
from controller.errors import BadInput
from controller.gitops.state import StateStore
from controller.redact import forget_secrets, redact
from tests.monitor_support import sample, write_recording, write_reference
from tests.retrain_support import FakeEndpoint
from tests.support import deployment_yaml, make_repo
from tests.unit.test_monitor_propose import drift_state

PATH = "deployments/staging/fraud.yaml"


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture
def checked(tmp_path: Path) -> tuple[str, ...]:
    """A repository whose monitored deployment asks for `nightly`, drifted recordings, and
    the `monitor --check` arguments that judge it."""
    recordings, refs = tmp_path / "rec", tmp_path / "refs"
    write_reference(refs / "fraud.csv", sample(5000, seed=0))
    repo = tmp_path / "checked"
    extra = (
        f"recording: {{sample_rate: 1, dir: {recordings}}}\n"
        "monitoring:\n  reference: {kind: dataset, path: fraud.csv}\n  window: 1h\n"
        "  actions: {retrain: [nightly]}\n"
    )
    make_repo(repo, {PATH: deployment_yaml(extra_spec=extra)})
    now = time.time()
    write_recording(recordings, "fraud", sample(1000, 1, 0.5, 3), now - 3000, now - 60, name="a")
    return ("monitor", "--check", "--env", "staging", "--repo", str(repo))


def test_check_requests_retraining_of_a_drifted_deployment(
    checked: tuple[str, ...], tmp_path: Path
) -> None:
    refs = str(tmp_path / "refs")
    endpoint = FakeEndpoint(statuses=(204,))
    try:
        target = f"nightly=webhook:{endpoint.base}/hook"
        code, output = invoke(
            *checked, "--monitor-reference-dir", refs, "--retrain-target", target,
            "--html", str(tmp_path / "html"),
        )  # fmt: skip
    finally:
        endpoint.close()
    assert code == 1, output  # drift
    assert "retrain nightly: sent: 127.0.0.1: HTTP 204" in output
    [body] = endpoint.bodies
    assert body["deployment"] == "fraud"
    assert body["drift_report"]["status"] == "drift"
    [page] = (tmp_path / "html").iterdir()
    assert page.name.startswith("staging--fraud--v1--")
    assert "<svg" in page.read_text()


def test_check_fails_on_an_unknown_target_or_a_failed_request(
    checked: tuple[str, ...], tmp_path: Path
) -> None:
    refs = str(tmp_path / "refs")
    code, output = invoke(
        *checked, "--monitor-reference-dir", refs, "--retrain-target", "other=command:/bin/true"
    )
    assert code == 2, output
    assert "staging/fraud names retrain target(s) 'nightly', not configured here" in output
    endpoint = FakeEndpoint(statuses=(503,))
    try:
        target = f"nightly=webhook:{endpoint.base}/hook"
        code, output = invoke(*checked, "--monitor-reference-dir", refs, "--retrain-target", target)
    finally:
        endpoint.close()
    assert code == 2, output
    assert "retrain nightly: failed: 127.0.0.1: HTTP 503" in output
    code, output = invoke(*checked, "--retrain-target", "nightly=webhook:ftp://x")
    assert code == 2
    assert "webhook:URL needs an http(s) URL" in output


def test_stored_reports_show_the_controllers_retraining_requests(tmp_path: Path) -> None:
    state = drift_state(tmp_path)
    with StateStore(state) as store:
        episode = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
        store.add_trigger("staging", "fraud", "nightly", episode, "{}")
        [trigger] = store.triggers("staging", "fraud")
        store.record_trigger_attempt(
            trigger, status="pending", error="HTTP 500", next_attempt=episode
        )
    code, output = invoke("monitor", "--env", "staging", "--state", str(state))
    assert code == 1
    assert "retrain nightly: pending (1 attempt(s)), next 2026-03-01T12:00:00+00:00: HTTP 500" in (
        output
    )
    code, output = invoke(
        "monitor", "--env", "staging", "--state", str(state), "--html", str(tmp_path / "h")
    )
    assert code == 1
    assert len(list((tmp_path / "h").iterdir())) == 1


def test_controller_options_make_settings_and_mask_their_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_RETRAIN_GH", "fake-token-value-123")
    try:
        settings = retrain_settings(
            ["hook=webhook:https://ci.example/retrain/s3cr3t-path", "gh=github-dispatch:a/b"],
            "https://ghe.example/api/v3/",
            "FAKE_RETRAIN_GH",
            Path("/var/lib/serveops/html"),
        )
        assert settings["monitor_html_dir"] == "/var/lib/serveops/html"
        config = settings["retrain"]
        assert config.github_api == "https://ghe.example/api/v3"
        assert [t.name for t in config.targets] == ["hook", "gh"]
        assert "s3cr3t" not in redact("POST https://ci.example/retrain/s3cr3t-path failed")
        assert "fake-token-value-123" not in redact("said fake-token-value-123")
    finally:
        forget_secrets()
    with pytest.raises(BadInput, match="--retrain-github-api"):
        retrain_settings([], "ghe.example")
    _, output = invoke("controller", "--help")
    for flag in ("--retrain-target", "--retrain-token-env", "--monitor-html-dir"):
        assert flag in output

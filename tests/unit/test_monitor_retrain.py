"""Retraining requests: targets as the operator configures them, the payload (redacted,
bounded), and each kind of target against a fake endpoint or a real program."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from controller.command_env import COMMAND_PATH
from controller.errors import BadInput
from controller.monitor.drift import ReferenceProfile, judge_window
from controller.monitor.drift_report import DriftReport
from controller.monitor.retrain import (
    MAX_RESPONSE_BYTES,
    RetrainFailed,
    retrain_payload,
    send_retrain,
)
from controller.monitor.retrain_targets import (
    RetrainConfig,
    RetrainTarget,
    parse_retrain_target,
    retrain_config,
)
from controller.spec.monitoring import DriftTests
from tests.retrain_support import FakeEndpoint

START = dt.datetime(2026, 3, 1, 11, tzinfo=dt.UTC)


def drift_report(features: int = 3, message: str = "3 of 3 features drifted") -> DriftReport:
    """A judged window: `features` normal columns, the window's shifted by one."""
    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(features)]
    ref = {n: rng.standard_normal(2000) for n in names}
    live = {n: rng.standard_normal(500) + 1.0 for n in names}
    profile = ReferenceProfile.build(ref, features=None, bins=10, source="ref.csv")
    status, _, judged = judge_window(profile, live, 500, DriftTests(), 10)
    return DriftReport(
        "staging", "fraud", "7", "c" * 40, START, START + dt.timedelta(hours=1), status,
        message, rows=500, features=judged, reference="ref.csv",
    )  # fmt: skip


@pytest.fixture
def endpoint() -> Iterator[FakeEndpoint]:
    e = FakeEndpoint(statuses=(204,))
    yield e
    e.close()


def test_targets_parse_from_the_operators_options() -> None:
    assert parse_retrain_target("nightly=webhook:https://ci.example/hook") == RetrainTarget(
        "nightly", "webhook", "https://ci.example/hook"
    )
    assert parse_retrain_target("gh=github-dispatch:acme/models") == RetrainTarget(
        "gh", "github-dispatch", "acme/models", "serveops-retrain"
    )
    assert parse_retrain_target("gh=github-dispatch:acme/models:retrain").event == "retrain"
    assert parse_retrain_target("local=command:/opt/train").where == "/opt/train"
    for bad, said in [
        ("nightly", "must be NAME=webhook:URL"),
        ("Nightly=webhook:https://x", "not a target name"),
        ("n=webhook:ftp://x", "http(s) URL"),
        ("n=github-dispatch:acme", "OWNER/REPO"),
        ("n=command:train.sh", "absolute path"),
        ("n=email:me@example.com", "unknown kind 'email'"),
    ]:
        with pytest.raises(BadInput, match=re.escape(said)):
            parse_retrain_target(bad)
    with pytest.raises(BadInput, match="configured twice"):
        retrain_config(["a=command:/x", "a=command:/y"])
    config = retrain_config(["a=command:/x"])
    assert config.unknown(["a", "b"]) == ["b"]


def test_payload_names_what_drifted_and_carries_the_report_redacted() -> None:
    report = drift_report(message="reference at https://bob:hunter2-secret@example.com/x")
    payload = retrain_payload(report)
    assert payload["deployment"] == "fraud"
    assert payload["environment"] == "staging"
    assert payload["model_version"] == "7"
    assert payload["commit"] == "c" * 40
    assert payload["drift_report"]["status"] == "drift"
    assert [f["name"] for f in payload["drift_report"]["features"]] == ["f0", "f1", "f2"]
    assert "hunter2" not in json.dumps(payload)
    json.dumps(payload, allow_nan=False)  # strict JSON


def test_payload_is_bounded_keeping_the_worst_features() -> None:
    report = drift_report(features=200)
    payload = retrain_payload(report, limit=8000)
    size = len(json.dumps(payload, separators=(",", ":")).encode())
    assert size <= 8000
    kept = payload["drift_report"]["features"]
    assert 0 < len(kept) < 200
    assert payload["drift_report"]["features_omitted"] == 200 - len(kept)
    assert [f["name"] for f in kept] == [f.name for f in report.worst(len(kept))]
    assert "bin_edges" not in kept[0]
    tiny = retrain_payload(report, limit=300)
    assert tiny["drift_report"]["cut"] is True
    assert tiny["deployment"] == "fraud"


def test_webhook_gets_the_payload(endpoint: FakeEndpoint) -> None:
    target = RetrainTarget("nightly", "webhook", endpoint.base + "/hooks/retrain")
    said = send_retrain(target, retrain_payload(drift_report()), RetrainConfig((target,)))
    assert said == "127.0.0.1: HTTP 204"
    [(path, _, body)] = endpoint.requests
    assert path == "/hooks/retrain"
    assert body["deployment"] == "fraud"


def test_github_dispatch_posts_to_the_repository_with_the_token(endpoint: FakeEndpoint) -> None:
    target = RetrainTarget("gh", "github-dispatch", "acme/models", "retrain-fraud")
    config = RetrainConfig((target,), github_api=endpoint.base, token_env="FAKE_GH_TOKEN")
    payload = retrain_payload(drift_report())
    send_retrain(target, payload, config, environ={"FAKE_GH_TOKEN": "ghp_faketoken123"})
    [(path, headers, body)] = endpoint.requests
    assert path == "/repos/acme/models/dispatches"
    assert headers["Authorization"] == "Bearer ghp_faketoken123"
    assert headers["Accept"] == "application/vnd.github+json"
    assert body == {"event_type": "retrain-fraud", "client_payload": payload}
    with pytest.raises(RetrainFailed, match=r"\$FAKE_GH_TOKEN is not set"):
        send_retrain(target, payload, config, environ={})


def test_a_failing_endpoint_is_said_briefly_and_its_answer_read_bounded() -> None:
    endpoint = FakeEndpoint(statuses=(500,), body=b"x" * 1_000_000)
    try:
        target = RetrainTarget("nightly", "webhook", endpoint.base + "/secret-path")
        with pytest.raises(RetrainFailed) as failed:
            send_retrain(target, {"a": 1}, RetrainConfig((target,)))
    finally:
        endpoint.close()
    message = str(failed.value)
    assert message.startswith("127.0.0.1: HTTP 500: xxx")
    assert len(message) < MAX_RESPONSE_BYTES
    assert "secret-path" not in message
    nobody = RetrainTarget("gone", "webhook", "http://127.0.0.1:9/x")
    with pytest.raises(RetrainFailed, match="ConnectError"):
        send_retrain(nobody, {"a": 1}, RetrainConfig((nobody,), timeout_s=2))


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "train.sh"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_a_command_runs_with_a_scrubbed_environment_and_the_payload_on_stdin(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    program = script(tmp_path, f"env > {out}.env\ncat > {out}.json")
    target = RetrainTarget("local", "command", program)
    environ = {"HOME": "/home/ctl", "FAKE_API_TOKEN": "abcdef123456", "AWS_PROFILE": "prod"}
    payload = retrain_payload(drift_report())
    said = send_retrain(target, payload, RetrainConfig((target,)), environ=environ)
    assert said.endswith("exit 0")
    env = dict(
        line.split("=", 1)
        for line in (tmp_path / "out.env").read_text().splitlines()
        if "=" in line
    )
    assert env["PATH"] == COMMAND_PATH
    assert env["HOME"] == "/home/ctl"
    assert env["SERVEOPS_DEPLOYMENT"] == "fraud"
    assert env["SERVEOPS_MODEL_VERSION"] == "7"
    assert env["SERVEOPS_RETRAIN_TARGET"] == "local"
    assert "FAKE_API_TOKEN" not in env
    assert "AWS_PROFILE" not in env
    assert json.loads((tmp_path / "out.json").read_text()) == payload


def test_a_failing_or_slow_command_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    failing = RetrainTarget("x", "command", script(tmp_path, "echo 'password=hunter22'; exit 3"))
    with pytest.raises(RetrainFailed, match=r"exited 3: password=\*\*\*"):
        send_retrain(failing, {}, RetrainConfig())
    slow = RetrainTarget("x", "command", script(tmp_path, "sleep 5"))
    with pytest.raises(RetrainFailed, match=r"did not finish within 0\.2s"):
        send_retrain(slow, {}, RetrainConfig(timeout_s=0.2))
    missing = RetrainTarget("x", "command", os.path.join(str(tmp_path), "nope"))
    with pytest.raises(RetrainFailed, match="command not found"):
        send_retrain(missing, {}, RetrainConfig())


def test_the_deployment_file_names_targets_never_urls_or_commands() -> None:
    from pydantic import ValidationError

    from controller.spec.monitoring import Monitoring

    base = {"reference": {"kind": "dataset", "path": "ref.csv"}}
    ok = Monitoring.model_validate({**base, "actions": {"retrain": ["nightly-train"]}})
    assert ok.actions.retrain == ["nightly-train"]
    assert Monitoring.model_validate(base).actions.retrain == []
    for bad in (["https://ci.example/hook"], ["/bin/sh"], ["a", "a"]):
        with pytest.raises(ValidationError, match="retrain target"):
            Monitoring.model_validate({**base, "actions": {"retrain": bad}})

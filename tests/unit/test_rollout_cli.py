"""`serveops promote|abort|pause|resume|rollouts`: commands queued in the state store."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from typer.testing import CliRunner

from controller.cli.main import app
from controller.gitops.state import RolloutUpdate, StateStore
from controller.rollout.state import start

runner = CliRunner()
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def seeded(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"
    state = start(
        "canary",
        "fraud",
        stable=("fraud--v1", "1"),
        candidate=("fraud--v2", "2"),
        key="k",
        commit="c0ffee" * 6,
        now=T0,
    )
    with StateStore(path) as store:
        store.save_rollouts("staging", [RolloutUpdate(state, None, "start", state.message)])
    return path


def test_commands_are_queued_for_the_controller(tmp_path: Path) -> None:
    path = seeded(tmp_path)
    for args in (
        ["promote", "fraud", "--full"],
        ["pause", "fraud", "--reason", "looking"],
        ["resume", "fraud"],
        ["abort", "fraud", "--actor", "alice", "--reason", "bad"],
    ):
        result = runner.invoke(app, [*args, "--env", "staging", "--state", str(path)])
        assert result.exit_code == 0, result.output
        assert "the controller acts at its next pass" in result.output
    with StateStore(path) as store:
        pending = store.pending_rollout_commands("staging")
    assert [c.command for c in pending] == ["promote_full", "pause", "resume", "abort"]
    assert pending[1].note.endswith(": looking")
    assert pending[3].note == "alice: bad"


def test_no_rollout_in_flight_is_refused(tmp_path: Path) -> None:
    path = seeded(tmp_path)
    result = runner.invoke(app, ["promote", "other", "--env", "staging", "--state", str(path)])
    assert result.exit_code == 1
    assert "no rollout of 'other' is in flight" in result.output
    missing = runner.invoke(
        app, ["abort", "fraud", "--env", "staging", "--state", str(tmp_path / "nope.db")]
    )
    assert missing.exit_code == 2


def test_rollouts_lists_state_and_steps(tmp_path: Path) -> None:
    path = seeded(tmp_path)
    result = runner.invoke(
        app, ["rollouts", "--env", "staging", "--state", str(path), "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    [fraud] = data["deployments"]
    assert fraud["name"] == "fraud"
    assert fraud["rollout"]["phase"] == "loading"
    assert [e["action"] for e in data["events"]] == ["start"]
    text = runner.invoke(app, ["rollouts", "--env", "staging", "--state", str(path)])
    assert "fraud: canary loading to v2" in text.output

"""A production batch model change passes the gate only with signed comparison evidence:
`serveops batch plan --base --compare --evidence` scores a sample with both versions and records
the verdict; `serveops check` reads it as the `simulation` input of
`batch-production-comparison-passed` (a real MLflow SQLite store with real scikit-learn
models, a real Git repository, no Ray)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from controller.cli.main import app
from controller.dev.demo import MODEL_NAME
from tests.batch_support import FILE, batch_yaml, breast_cancer_csv
from tests.support import commit, git, make_repo

RULE = "batch-production-comparison-passed"
STARTER = Path(__file__).parents[2] / "policies"  # the starter library, as a platform adopts it
KEY = "k" * 32


@pytest.fixture
def registry(batch_versions: tuple[str, list[str]]) -> tuple[str, list[str]]:
    return batch_versions


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return breast_cancer_csv(tmp_path)


def invoke(*args: str, uri: str, key: str | None = KEY) -> Any:
    env = {"MLFLOW_TRACKING_URI": uri, "SERVEOPS_EVIDENCE_KEY": key or ""}
    return CliRunner().invoke(app, list(args), env=env)


def gate(repo: Path, evidence: Path, uri: str) -> list[str]:
    """`serveops check` of the pull request: the comparison rule's failures (messages)."""
    result = invoke(
        "check", "--repo", str(repo), "--base", "main", "--head", "pr", "--env", "production",
        "--registry-uri", uri, "--evidence", str(evidence), "--now", "2026-11-02T10:00:00Z",
        "-o", "json", uri=uri,
    )  # fmt: skip
    assert result.exit_code in (0, 1), result.output
    findings = json.loads(result.output)["findings"]
    return [f["message"] for f in findings if f["rule"] == RULE]


def pull_request(
    tmp_path: Path, data: Path | str, base: str, head: str, sample_rows: int = 500
) -> Path:
    repo = tmp_path / "repo"
    policies = {f"policies/{p.name}": p.read_text() for p in STARTER.glob("*.yaml")}
    make_repo(repo, {FILE: batch_yaml(base, data, sample_rows), **policies})
    git(repo, "checkout", "-q", "-b", "pr")
    commit(repo, {FILE: batch_yaml(head, data, sample_rows)}, f"score with v{head}")
    git(repo, "checkout", "-q", "main")
    return repo


def plan(repo: Path, evidence: Path, uri: str, key: str | None = KEY) -> Any:
    return invoke(
        "batch", "plan", "--env", "production", "--repo", str(repo), "--rev", "pr",
        "--base", "main", "--registry-uri", uri, "--evidence", str(evidence), uri=uri, key=key,
    )  # fmt: skip


def test_a_change_that_agrees_records_a_pass_and_the_gate_admits_it(
    tmp_path: Path, data: Path, registry: tuple[str, list[str]]
) -> None:
    uri, (v1, _, v3) = registry
    repo = pull_request(tmp_path, data, v1, v3)
    evidence = tmp_path / "evidence"
    assert "no comparison evidence" in " ".join(gate(repo, evidence, uri))  # before: refused

    result = plan(repo, evidence, uri)
    assert result.exit_code == 0, result.output
    assert "nightly: sample check: pass: agreement 100.0%" in result.output
    assert "verdict recorded as evidence" in result.output
    [record] = list(evidence.rglob("*.json"))
    doc = json.loads(record.read_text())
    assert (doc["passed"], doc["model"]) == (True, f"models:/{MODEL_NAME}/{v3}")
    assert doc["commits"]["base"] == git(repo, "rev-parse", "main")
    assert gate(repo, evidence, uri) == []  # the same rule, now satisfied


def test_a_change_that_disagrees_records_a_fail_and_the_gate_refuses_it(
    tmp_path: Path, data: Path, registry: tuple[str, list[str]]
) -> None:
    uri, (v1, v2, _) = registry
    repo = pull_request(tmp_path, data, v1, v2)
    evidence = tmp_path / "evidence"
    result = plan(repo, evidence, uri)
    assert result.exit_code == 1, result.output  # the sample check would reject v2
    assert "nightly: sample check: fail: " in result.output
    [record] = list(evidence.rglob("*.json"))
    assert (json.loads(record.read_text())["verdict"]) == "fail"
    [message] = gate(repo, evidence, uri)
    assert "the sample comparison of this model change did not pass" in message


def test_evidence_the_change_wrote_for_itself_is_not_evidence(
    tmp_path: Path, data: Path, registry: tuple[str, list[str]]
) -> None:
    uri, (v1, _, v3) = registry
    repo = pull_request(tmp_path, data, v1, v3)
    evidence = tmp_path / "evidence"
    assert plan(repo, evidence, uri, key="forged-by-the-pull-request").exit_code == 0
    [message] = gate(repo, evidence, uri)  # checked with the real key
    assert "no comparison evidence" in message
    assert plan(repo, evidence, uri, key=None).exit_code == 2  # no key: nothing recorded


def test_a_sample_too_small_to_tell_is_inconclusive_and_the_gate_refuses_it(
    tmp_path: Path, data: Path, registry: tuple[str, list[str]]
) -> None:
    """v3 is v1's model: 20 of 20 rows agree, but 20 rows cannot show 95% agreement (the
    interval's lower end is about 84%). The run would go ahead; the gate wants a conclusive
    pass."""
    uri, (v1, _, v3) = registry
    repo = pull_request(tmp_path, data, v1, v3, sample_rows=20)
    evidence = tmp_path / "evidence"
    result = plan(repo, evidence, uri)
    assert result.exit_code == 0, result.output  # not a rejection
    assert "nightly: sample check: inconclusive: agreement 100.00% [CI" in result.output
    assert "raise promotion.sample_rows" in result.output
    [record] = list(evidence.rglob("*.json"))
    assert (json.loads(record.read_text())["verdict"]) == "inconclusive"
    messages = " ".join(gate(repo, evidence, uri))
    assert "the sample comparison of this model change did not pass" in messages
    assert "straddles 95.00%: the 20-row sample cannot tell" in messages


def test_an_input_this_machine_cannot_read_is_not_run_and_says_where_to_run_it(
    tmp_path: Path, registry: tuple[str, list[str]]
) -> None:
    uri, (v1, _, v3) = registry
    repo = pull_request(tmp_path, "s3://scores/in/", v1, v3)
    evidence = tmp_path / "evidence"
    result = plan(repo, evidence, uri)
    assert result.exit_code == 0, result.output
    assert "nightly: sample check: not-run: the input s3://scores/in/ is not on this machine" in (
        " ".join(result.output.split())
    )
    [record] = list(evidence.rglob("*.json"))
    doc = json.loads(record.read_text())
    assert (doc["verdict"], doc["passed"]) == ("not-run", False)
    [message] = gate(repo, evidence, uri)
    assert "is not on this machine" in message
